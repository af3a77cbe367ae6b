"""Colored-and-gray MNIST (paper 002, Sec. 6.1 and App. A; Kim et al. 2019's colouring): prepared from a local
copy of MNIST's IDX files with ``mmtool prep colored-mnist --raw DIR``.

Paper 002: "In the training set of 60,000 examples, each example has two images, a gray-scale image and a
monochromatic image, with color strongly correlated with its digit label. In the validation set of 10,000
examples, each example also has a gray-scale image and a corresponding monochromatic image, although with a low
correlation between the color and its label. We consider the monochromatic image as the first modality m0 and the
gray-scale one as the second modality m1." App. A: no extra pre-processing.

Modalities (in this order, m0 then m1):

* ``color`` (3, 28, 28): the digit painted in one colour, ``rgb[c] * gray[p]``, on a black background. The
  colour is one of ten mean colours (:data:`mmtool.data.colored_mnist_prep.COLOURS`) plus per-channel jitter
  N(0, ``data.color_var``), Kim et al.'s construction (their ``mnist_10color_jitter_var_<var>`` sets).
* ``gray`` (1, 28, 28): the MNIST digit, intensities / 255.

Correlation: a training image wears its label's colour with probability ``data.train_correlation`` (1.0, Kim et
al.'s training sets: the mean colour is the label's), a test image with ``data.test_correlation`` (0.1: the colour
drawn uniformly, as Kim et al.'s test sets), otherwise one of the nine other colours.

Splits: test is MNIST's t10k set (the 10,000 images paper 002 calls its validation set). Validation is carved
from the 60,000 training images at load time: a permutation from ``data.seed``, the first
``round(val_fraction * 60000)`` held out. Prep draws both colour regimes for every image, so
``data.val_colors: test`` (default) gives the validation images the weak correlation paper 002's validation set
has -- model selection then sees the test distribution without touching test images -- and ``train`` the
strong one they would have as training images. The cache key holds what prep draws (colour settings and
``color_seed``); val fraction, seed and val_colors are applied at load time.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from mmtool.data.cache import Dataset, Split
from mmtool.data.cache_checks import check_labels, read_manifest
from mmtool.data.colored_mnist_prep import FORMAT, NAME, NUM_CLASSES, prepare
from mmtool.data.registry import DATASETS, DatasetSpec, dataset_settings
from mmtool.data.settings import ColoredMNISTSettings
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

MODALITIES = ("color", "gray")
FIX = f"re-run `mmtool prep {NAME} --raw DIR --force`"


def _cache_key(cfg: DataConfig) -> str:
    s = dataset_settings(cfg, ColoredMNISTSettings)
    return f"var{s.color_var:g}-r{s.train_correlation:g}-{s.test_correlation:g}-c{s.color_seed}"


def val_positions(n_train: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) positions among the training images: a permutation from ``seed``, the first
    ``round(val_fraction * n_train)`` held out (sorted)."""
    if not 0 <= val_fraction < 1:
        raise UserError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng([seed, 1]).permutation(n_train)
    k = round(val_fraction * n_train)
    return np.sort(order[k:]), np.sort(order[:k])


def paint(gray: np.ndarray, rgb: np.ndarray) -> torch.Tensor:
    """Colored digits (N, 3, 28, 28) float32 from uint8 gray digits (N, 28, 28) and colours (N, 3)."""
    g = torch.from_numpy(gray).float().div_(255.0).unsqueeze(1)  # (N, 1, 28, 28)
    return g * torch.from_numpy(rgb)[:, :, None, None]


def _read(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    manifest = read_manifest(folder, FIX)
    if manifest.get("format") != FORMAT:
        raise UserError(f"{folder} was prepared in data format {manifest.get('format')}, this mmtool reads "
                        f"format {FORMAT} ({FIX})")  # fmt: skip
    path = folder / "data.npz"
    blob = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(blob).hexdigest() != (manifest.get("files") or {}).get("data.npz"):
        raise UserError(f"{path} is missing or does not match its manifest ({FIX})")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    check_labels(folder / "manifest.json", manifest, arrays["y"], FIX, str(path), NUM_CLASSES, NAME)
    return manifest, arrays


def _load(cfg: DataConfig, folder: Path) -> Dataset:
    s = dataset_settings(cfg, ColoredMNISTSettings)
    manifest, a = _read(folder)
    train_rows = np.flatnonzero(a["split"] == 0)
    keep, held = val_positions(len(train_rows), cfg.val_fraction, cfg.seed)
    rows = {"train": train_rows[keep], "val": train_rows[held], "test": np.flatnonzero(a["split"] == 1)}
    regime = {"train": "rgb", "val": "rgb_eval" if s.val_colors == "test" else "rgb", "test": "rgb_eval"}
    splits = {}
    for name, ix in rows.items():
        inputs = {"color": paint(a["gray"][ix], a[regime[name]][ix]),
                  "gray": torch.from_numpy(a["gray"][ix]).float().div_(255.0).unsqueeze(1)}  # fmt: skip
        splits[name] = Split(inputs, torch.from_numpy(a["y"][ix]), torch.from_numpy(ix))
    dims = {m: list(manifest["modalities"][m]) for m in MODALITIES}
    return Dataset(NAME, MODALITIES, NUM_CLASSES, dims, splits, list(manifest["class_names"]))


DATASETS.register(NAME)(
    DatasetSpec(
        prepare=prepare,
        load=_load,
        cache_key=_cache_key,
        description="Colored-and-gray MNIST (paper 002; Kim et al. 2019): colored (m0) and gray (m1) digits, "
        "colour = label in train only, 10 classes",
        settings=ColoredMNISTSettings,
        data_format=FORMAT,
        raw_doc="data_prep/colored-mnist.md",
    )
)
