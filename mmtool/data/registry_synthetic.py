"""Registers the synthetic datasets alpha, beta, gamma (see :mod:`mmtool.data.synthetic`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmtool.config import DataConfig
from mmtool.data import DATASETS, Dataset, DatasetSpec, Split, read_verified_arrays, split_indices, write_array_cache
from mmtool.data.synthetic import GENERATORS
from mmtool.errors import UserError

MODALITIES = ("m1", "m2")
FORMAT = 1  # bump when the generator's output changes


def _size(cfg: DataConfig) -> int:
    n = cfg.n if cfg.n is not None else GENERATORS[cfg.name][1]
    if n < 30:
        raise UserError(f"data.n must be at least 30 for {cfg.name}, got {n}")
    return n


def _key(cfg: DataConfig) -> str:
    return f"seed{cfg.seed}-n{_size(cfg)}"


def _prepare(cfg: DataConfig, out: Path) -> dict:
    generate, _ = GENERATORS[cfg.name]
    arrays, manifest = write_array_cache(cfg, out, generate, _size(cfg), FORMAT)
    y = arrays["y"]
    return {
        **manifest,
        "modalities": {m: int(arrays[m].shape[1]) for m in MODALITIES},
        "num_classes": int(y.max()) + 1,
        "class_counts": np.bincount(y).tolist(),
    }


def _load(cfg: DataConfig, folder: Path) -> Dataset:
    manifest, raw = read_verified_arrays(cfg, folder, FORMAT)
    arrays = {k: torch.from_numpy(v) for k, v in raw.items()}
    idx = split_indices(manifest["n"], cfg.seed, cfg.test_fraction, cfg.val_fraction)
    splits = {
        name: Split({m: arrays[m][ix] for m in MODALITIES}, arrays["y"][ix])
        for name, ix in ((k, torch.from_numpy(v)) for k, v in idx.items())
    }
    return Dataset(
        name=cfg.name,
        modalities=MODALITIES,
        num_classes=manifest["num_classes"],
        input_dims=dict(manifest["modalities"]),
        splits=splits,
    )


_DESCRIPTIONS = {
    "synth-alpha": "App. A.10 dataset alpha: uni-modal features only (2 classes, N=5000)",
    "synth-beta": "App. A.10 dataset beta: paired features only (2 classes, N=5000)",
    "synth-gamma": "App. A.10 dataset gamma: uni-modal + paired features (3 classes, N=7500)",
}

for _name in GENERATORS:
    DATASETS.register(_name)(
        DatasetSpec(prepare=_prepare, load=_load, cache_key=_key, description=_DESCRIPTIONS[_name])
    )
