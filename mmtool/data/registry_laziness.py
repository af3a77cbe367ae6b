"""Registers ``synth-lazy``, ``digits-colored`` and ``digits-twoview``: small sets that show modality
laziness on a CPU (see :mod:`mmtool.data.lazy` and :mod:`mmtool.data.digits`).

The cache is one ``data.npz`` of float32 (N, D) modalities and int64 labels, checked against the sha256
in its manifest and refused when written by another data ``FORMAT``, as for the App. A.10 sets.

Evaluation regime: a modality may also be stored as ``<m>_eval``, the version of each sample that
validation and test see (``synth-lazy``: m1 with the easy feature dropped on some samples;
``digits-colored``: m1 with weakly label-correlated colors). The training split reads ``<m>``, the
other splits ``<m>_eval``. Both versions exist for every sample because splits are drawn at load time
(:func:`mmtool.data.split_indices`), which keeps a cache valid for any ``data.test_fraction`` and
``data.val_fraction`` and keeps validation on the test distribution, as in paper 002.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmtool.data import (
    EVAL_SUFFIX,
    Dataset,
    dataset_from_arrays,
    input_shape,
    lazy,
    read_verified_arrays,
    split_indices,
    write_array_cache,
)
from mmtool.data import digits as digits_mod
from mmtool.data.registry import DATASETS, DatasetSpec
from mmtool.data.settings import NoSettings
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

MODALITIES = ("m1", "m2")
FORMAT = 2  # bump when a builder's output changes (2: digits stored as images, (N, C, H, W))
MIN_N = 30


@dataclass(frozen=True)
class _Family:
    build: Callable[[int, int], dict[str, np.ndarray]]  # (seed, n) -> arrays
    default_n: int  # size when data.n is None
    max_n: int | None  # the most data.n may ask for (None: any size)
    num_classes: int
    describe: Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], dict]  # (arrays, split idx) -> manifest
    description: str


def _describe_lazy(arrays: dict[str, np.ndarray], idx: dict[str, np.ndarray]) -> dict:
    dropped = np.any(arrays["m1"] != arrays["m1_eval"], axis=1)  # (N,) easy feature missing in m1_eval
    return {
        "construction": {
            "latent_dim": lazy.D,
            "label": f"y = [|x2.z2| > {lazy.HARD_THRESHOLD}] (hard feature, in m2)",
            "easy_feature": f"m1 = P1 (x1 + {lazy.EASY_AMPLITUDE} (2y-1) z1), |x1.z1| < {lazy.EASY_NOISE}",
            "eval_drop_fraction": lazy.EVAL_DROP,
            "regimes": "train reads m1; val and test read m1_eval (easy feature dropped on some samples)",
        },
        "easy_feature_dropped": {k: int(dropped[ix].sum()) for k, ix in idx.items() if k != "train"},
    }


def _describe_colored(arrays: dict[str, np.ndarray], idx: dict[str, np.ndarray]) -> dict:
    y = arrays["y"]
    colors = {k: arrays["color"] if k == "train" else arrays["color_eval"] for k in idx}  # per split: (N,)
    return {
        "source": _source(),
        "construction": {
            "m1": "colored digit (3, 8, 8): palette color x gray intensity",
            "m2": "gray digit (1, 8, 8), intensities / 16",
            "palette_rgb": np.round(digits_mod.PALETTE, 4).tolist(),
            "color_is_label_color": {"train": digits_mod.COLOR_AGREE_TRAIN, "eval": digits_mod.COLOR_AGREE_EVAL},
            "color_jitter_std": digits_mod.COLOR_JITTER,
            "regimes": "train reads m1; val and test read m1_eval (weak color-label correlation)",
        },
        "color_label_agreement": {
            k: round(float((colors[k][ix] == y[ix]).mean()), 4) if len(ix) else None for k, ix in idx.items()
        },
    }


def _describe_twoview(arrays: dict[str, np.ndarray], idx: dict[str, np.ndarray]) -> dict:
    return {
        "source": _source(),
        "construction": {
            "m1": "left half of the image: columns 0-3, (1, 8, 4), intensities / 16",
            "m2": "right half of the image: columns 4-7, (1, 8, 4), intensities / 16",
        },
    }


def _source() -> str:
    import sklearn

    return f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__}, bundled, 1797 8x8 images)"


FAMILIES = {
    "synth-lazy": _Family(
        build=lazy.generate_lazy,
        default_n=lazy.DEFAULT_N,
        max_n=None,
        num_classes=2,
        describe=_describe_lazy,
        description="laziness demo: easy m1 (missing on 35% of val/test), hard m2 (2 classes, N=5000)",
    ),
    "digits-colored": _Family(
        build=digits_mod.build_colored,
        default_n=digits_mod.TOTAL,
        max_n=digits_mod.TOTAL,
        num_classes=digits_mod.NUM_CLASSES,
        describe=_describe_colored,
        description="colored (m1) and gray (m2) 8x8 digits; color tracks the label in train only (10 classes, N=1797)",
    ),
    "digits-twoview": _Family(
        build=digits_mod.build_twoview,
        default_n=digits_mod.TOTAL,
        max_n=digits_mod.TOTAL,
        num_classes=digits_mod.NUM_CLASSES,
        describe=_describe_twoview,
        description="left (m1) and right (m2) halves of 8x8 digits; both strong alone (10 classes, N=1797)",
    ),
}


def _size(cfg: DataConfig) -> int:
    family = FAMILIES[cfg.name]
    n = cfg.n if cfg.n is not None else family.default_n
    if n < MIN_N:
        raise UserError(f"data.n must be at least {MIN_N} for {cfg.name}, got {n}")
    if family.max_n is not None and n > family.max_n:
        raise UserError(f"data.n must be at most {family.max_n} for {cfg.name} (a subsample), got {n}")
    return n


def _key(cfg: DataConfig) -> str:
    return f"seed{cfg.seed}-n{_size(cfg)}"


def _prepare(cfg: DataConfig, out: Path, options: object = None) -> dict:
    family = FAMILIES[cfg.name]
    arrays, manifest = write_array_cache(cfg, out, family.build, _size(cfg), FORMAT)
    y = arrays["y"]
    idx = split_indices(manifest["n"], cfg.seed, cfg.test_fraction, cfg.val_fraction)
    return {
        **manifest,
        "modalities": {m: input_shape(arrays[m]) for m in MODALITIES},
        "eval_versions": sorted(m for m in MODALITIES if m + EVAL_SUFFIX in arrays),
        "num_classes": family.num_classes,
        "class_counts": np.bincount(y, minlength=family.num_classes).tolist(),
        **family.describe(arrays, idx),
    }


def _load(cfg: DataConfig, folder: Path) -> Dataset:
    manifest, arrays = read_verified_arrays(cfg, folder, FORMAT, MODALITIES, FAMILIES[cfg.name].num_classes)
    return dataset_from_arrays(cfg, manifest, arrays, MODALITIES)


for _name, _family in FAMILIES.items():
    spec = DatasetSpec(
        prepare=_prepare, load=_load, cache_key=_key, description=_family.description, settings=NoSettings,
        data_format=FORMAT,
    )
    DATASETS.register(_name)(spec)
