"""`mmtool prep`: build a dataset's loader-ready cache and manifest."""

from __future__ import annotations

from mmtool.config import Recipe
from mmtool.data import DATASETS, PrepOptions, prepare


def run(recipe: Recipe, force: bool = False, options: PrepOptions | None = None) -> dict:
    folder, manifest = prepare(recipe.data, force=force, options=options)
    spec = DATASETS.get(recipe.data.name)
    sizes = manifest.get("split_sizes", {})
    counts = manifest.get("class_counts", [])
    shown = counts if len(counts) <= 12 else f"{len(counts)} classes, {min(counts)}-{max(counts)} samples each"
    skipped = manifest.get("skipped", [])
    n_skipped = len(skipped) if isinstance(skipped, list) else int(skipped)
    run = manifest.get("run", {})
    return {
        "stage": "prep",
        "dataset": recipe.data.name,
        "description": spec.description,
        "cache": str(folder),
        "manifest": manifest,
        "summary": [
            f"{recipe.data.name}: {manifest['n']} samples, classes {shown}, splits {sizes} -> {folder}",
            f"skipped (broken): {n_skipped}, missing on disk: {manifest.get('missing', 0)}, "
            + ("the cache was already complete" if run.get("cached") else
               f"reused from an interrupted prep: {run.get('reused', 0)}"),
        ],
    }
