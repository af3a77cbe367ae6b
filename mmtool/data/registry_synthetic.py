"""Registers the synthetic datasets alpha, beta, gamma (see :mod:`mmtool.data.synthetic`) and the
three-modality ``synth-tri`` (see :mod:`mmtool.data.tri`)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from mmtool.data import (
    Dataset,
    dataset_from_arrays,
    input_shape,
    read_verified_arrays,
    tri,
    write_array_cache,
)
from mmtool.data.registry import DATASETS, DatasetSpec, dataset_settings
from mmtool.data.settings import GammaSettings, NoSettings
from mmtool.data.synthetic import GENERATORS
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

MODALITIES = ("m1", "m2")
FORMAT = 1  # bump when the generator's output changes


def _size(cfg: DataConfig) -> int:
    n = cfg.n if cfg.n is not None else GENERATORS[cfg.name][1]
    if n < 30:
        raise UserError(f"data.n must be at least 30 for {cfg.name}, got {n}")
    return n


def _balanced(cfg: DataConfig) -> bool:
    """γ's balanced reading (``data.balanced``); the other sets have one reading."""
    return isinstance(cfg.settings, GammaSettings) and dataset_settings(cfg, GammaSettings).balanced


def _key(cfg: DataConfig) -> str:
    return f"seed{cfg.seed}-n{_size(cfg)}" + ("-balanced" if _balanced(cfg) else "")


def _prepare(cfg: DataConfig, out: Path, options: object = None) -> dict:
    generate, _ = GENERATORS[cfg.name]
    if _balanced(cfg):
        generate = functools.partial(generate, balanced=True)
    arrays, manifest = write_array_cache(cfg, out, generate, _size(cfg), FORMAT)
    y = arrays["y"]
    return {
        **manifest,
        "modalities": {m: input_shape(arrays[m]) for m in MODALITIES},
        "num_classes": int(y.max()) + 1,
        "class_counts": np.bincount(y).tolist(),
    }


def _load(cfg: DataConfig, folder: Path) -> Dataset:
    # num_classes is not passed: prep wrote the label array's maximum + 1, which loading checks again
    manifest, arrays = read_verified_arrays(cfg, folder, FORMAT, MODALITIES)
    return dataset_from_arrays(cfg, manifest, arrays, MODALITIES)


_DESCRIPTIONS = {
    "synth-alpha": "App. A.10 dataset alpha: uni-modal features only (2 classes, N=5000)",
    "synth-beta": "App. A.10 dataset beta: paired features only (2 classes, N=5000)",
    "synth-gamma": "App. A.10 dataset gamma: uni-modal + paired features (3 classes, N=7500)",
}

for _name in GENERATORS:
    DATASETS.register(_name)(
        DatasetSpec(prepare=_prepare, load=_load, cache_key=_key, description=_DESCRIPTIONS[_name],
                    settings=GammaSettings if _name == "synth-gamma" else NoSettings, data_format=FORMAT)
    )


TRI_FORMAT = 1  # bump when mmtool.data.tri's output changes


def _tri_prepare(cfg: DataConfig, out: Path, options: object = None) -> dict:
    arrays, manifest = write_array_cache(cfg, out, tri.generate_tri, _tri_size(cfg), TRI_FORMAT)
    return {
        **manifest,
        "modalities": {m: input_shape(arrays[m]) for m in tri.MODALITIES},
        "num_classes": tri.NUM_CLASSES,
        "class_counts": np.bincount(arrays["y"], minlength=tri.NUM_CLASSES).tolist(),
        "construction": {m: {"bit_a": a, "bit_b": b} for m, (a, b) in tri.STRENGTH.items()},
    }


def _tri_size(cfg: DataConfig) -> int:
    n = cfg.n if cfg.n is not None else tri.DEFAULT_N
    if n < 30:
        raise UserError(f"data.n must be at least 30 for {cfg.name}, got {n}")
    return n


def _tri_load(cfg: DataConfig, folder: Path) -> Dataset:
    manifest, arrays = read_verified_arrays(cfg, folder, TRI_FORMAT, tri.MODALITIES, tri.NUM_CLASSES)
    return dataset_from_arrays(cfg, manifest, arrays, tri.MODALITIES)


DATASETS.register("synth-tri")(
    DatasetSpec(prepare=_tri_prepare, load=_tri_load, cache_key=lambda cfg: f"seed{cfg.seed}-n{_tri_size(cfg)}",
                description="three modalities, each holding part of the label at its own strength (4 classes, "
                "N=3000)", settings=NoSettings, data_format=TRI_FORMAT)  # fmt: skip
)
