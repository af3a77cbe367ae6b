"""`mmtool prep`: build a dataset's loader-ready cache and manifest."""

from __future__ import annotations

from mmtool.config import Recipe
from mmtool.data import DATASETS, prepare


def run(recipe: Recipe, force: bool = False) -> dict:
    folder, manifest = prepare(recipe.data, force=force)
    spec = DATASETS.get(recipe.data.name)
    sizes = manifest.get("split_sizes", {})
    return {
        "stage": "prep",
        "dataset": recipe.data.name,
        "description": spec.description,
        "cache": str(folder),
        "manifest": manifest,
        "summary": [
            f"{recipe.data.name}: {manifest['n']} samples, classes {manifest['class_counts']}, "
            f"splits {sizes} -> {folder}",
            f"skipped: {len(manifest.get('skipped', []))}",
        ],
    }
