"""Frozen-encoder features, extracted in one streamed pass and cached beside the checkpoint they come from.

Where the cache lives: in the run (or the pretrain run's modality folder) whose encoder produced the
features, ``features/<key>/`` of its :class:`~mmtool.runs.Layout`, not in a store under the runs root. The
features are a function of that run's best.pt and of the data, so they belong to that run: they are
removed with it (no orphaned store to collect), copied with it, and every existing run's cache stays valid.
Writing into another command's run folder is done under that run's lock (:func:`mmtool.runs.held_briefly`):
a run that is still running (a resume rewriting best.pt) or another command writing the same cache makes
this command compute its features without caching them, with a warning, as a read-only run folder does.
Reading needs no lock: each file is written atomically and the metadata, written last, marks a split
complete and names the checkpoint (size and mtime) it was extracted from.

This module is the run layout's delegate for the files *inside* a cache folder (``<split>-<m>.npy``,
``<split>.json``); the folder itself, and the checkpoint it fingerprints, come from the Layout.
"""

from __future__ import annotations

import hashlib
import json
import sys

import torch

from mmtool.config import Recipe
from mmtool.data import ArraySource, Dataset
from mmtool.engine.inference import encode_only, run_inference
from mmtool.engine.runtime import Runtime
from mmtool.errors import UserError
from mmtool.files import write_json
from mmtool.models import MultiModalNet
from mmtool.runs import Layout, held_briefly

FEATURES_FORMAT = 1


def frozen_features(
    recipe: Recipe,
    models: dict[str, MultiModalNet],
    data: Dataset,
    runtime: Runtime,
    cache: dict[str, Layout] | None = None,
) -> dict[str, ArraySource]:
    """Features of frozen encoders on every split, ``{split: ArraySource({m: (N, D)}, targets)}``.

    ``models`` maps a modality to the model whose encoder to read (a one-modality model of a pretrain run,
    or a fusion model for several modalities; each model is run once per split, on its modalities only).
    ``cache`` maps a modality to the layout its model was trained in: features are extracted once per
    (checkpoint, data) and reused by later probes and decisions; a cache that does not match the
    checkpoint or the data is rebuilt.
    """
    key = data_key(recipe, data)
    per_model: dict[int, tuple[MultiModalNet, list[str]]] = {}
    for m, model in models.items():
        per_model.setdefault(id(model), (model, []))[1].append(m)
    out: dict[str, dict[str, torch.Tensor]] = {name: {} for name in data.splits}
    for model, mods in per_model.values():
        layout = (cache or {}).get(mods[0])
        for name, split in data.splits.items():
            feats = _cached(layout, key, name, mods) if layout else None
            if feats is None:
                runtime.prepare_model(model)
                feats = run_inference(model, split.select(mods), runtime, want=("features",),
                                      forward=encode_only)["features"]  # fmt: skip
                if layout:
                    _store(layout, key, name, feats)
            out[name].update(feats)
    return {name: _with_masks(ArraySource(feats, data.splits[name].targets()), data.splits[name])
            for name, feats in out.items()}  # fmt: skip


def _with_masks(features: ArraySource, split) -> ArraySource:
    """The features keep their split's presence masks (missing modalities: a missing modality's features are
    zeros that nothing reads as data; mmtool.data.missing)."""
    if split.present is not None:
        features.present = {m: split.present[m] for m in features.inputs}
    return features


def data_key(recipe: Recipe, data: Dataset) -> str:
    """A short fingerprint of what the splits' samples are (the data settings and the split sizes)."""
    facts = {"data": recipe.data.flat(), "sizes": {k: len(s) for k, s in data.splits.items()}}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fingerprint(layout: Layout) -> dict:
    """Which checkpoint the features come from: its size and modification time (no hashing)."""
    ckpt = layout.checkpoints().best
    st = ckpt.stat()
    return {"checkpoint": str(ckpt), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "format": FEATURES_FORMAT}


def _cached(layout: Layout, key: str, split: str, mods: list[str]) -> dict[str, torch.Tensor] | None:
    import numpy as np

    base = layout.features(key)
    meta = base / f"{split}.json"
    if not meta.is_file() or json.loads(meta.read_text()) != {**_fingerprint(layout), "modalities": mods}:
        return None
    try:
        return {m: torch.from_numpy(np.load(base / f"{split}-{m}.npy")) for m in mods}
    except (OSError, ValueError):
        return None


def _store(layout: Layout, key: str, split: str, feats: dict[str, torch.Tensor]) -> None:
    """Write the features (then their metadata, which marks them complete) under the run's lock; a run
    that is busy or a folder that refuses the write only means no cache."""
    from mmtool.data.pipeline_io import save_npy

    base = layout.features(key)
    try:
        with held_briefly(layout.path):
            for m, f in feats.items():
                save_npy(base / f"{split}-{m}.npy", f.numpy())
            write_json(base / f"{split}.json", {**_fingerprint(layout), "modalities": list(feats)})
    except (OSError, UserError) as err:  # atomic writes report a refused write as a UserError
        print(f"warning: features not cached ({str(err).split(';')[0]})", file=sys.stderr)
