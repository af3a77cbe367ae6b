"""Two data sets built from scikit-learn's bundled 8x8 digits (1797 images, no download).

``sklearn.datasets.load_digits()`` ships the UCI optical-recognition digits inside scikit-learn: 8x8
images with integer intensities 0..16 and labels 0..9 (about 180 per class). Intensities are scaled to
[0, 1]; every modality is stored as an image batch (N, C, H, W), which the CNN encoders read as is and
the MLP encoders flatten.

``digits-colored`` — Colored-and-gray digits, the construction of Wu et al. 2022 (Colored-and-gray MNIST,
after Kim et al. 2019) on the small digits:

* m1 (3, 8, 8): the digit painted in one color, ``color[c] * gray[p]`` for channel c and pixel p. The
  color is one of ten palette colors (hues 0, 36, ..., 324 degrees at full saturation) plus per-channel
  jitter N(0, 0.05^2), clipped to [0, 1]; the background stays black.
* m2 (1, 8, 8): the gray digit itself.
* Color and label: in the *training* regime the color is the label's palette color with probability 0.95
  (otherwise a palette color drawn uniformly), so color predicts the digit almost perfectly; in the
  *evaluation* regime the probability is 0.1, so color agrees with the label on about 19% of samples
  (10% is chance). Paper 002 uses the weak correlation for its validation set; here validation and test
  both get it. A model can reach low training error from the color alone and then has little reason to
  learn shapes in either modality.

``digits-twoview`` — the ModelNet40 front/rear analogue: m1 is the left half of the image (columns 0-3),
m2 the right half (columns 4-7), each (1, 8, 4). Each half names the
digit well on its own (roughly 85-90% with a linear classifier), and they concatenate back to the image.

Why both regimes are generated for every sample: splits are drawn when a cache is *loaded* (from
``data.seed``, ``data.test_fraction``, ``data.val_fraction``), so the builder cannot know which samples
will be evaluated. It draws one training-regime and one evaluation-regime color per sample, deterministic
in the seed, and stores both versions of m1 (``m1``, ``m1_eval``); the loader gives the training split the
first and validation/test the second (:mod:`mmtool.data.registry_laziness`). Changing the split fractions
therefore needs no new cache, and each sample's colors do not depend on which split it lands in.
"""

from __future__ import annotations

import colorsys
from functools import lru_cache

import numpy as np

SIDE = 8  # images are SIDE x SIDE
TOTAL = 1797  # images in the bundled set
NUM_CLASSES = 10
PALETTE = np.array([colorsys.hsv_to_rgb(k / NUM_CLASSES, 1.0, 1.0) for k in range(NUM_CLASSES)])  # (10, 3)
COLOR_AGREE_TRAIN = 0.95  # P(color = label's color) in the training regime, before the uniform draw
COLOR_AGREE_EVAL = 0.1  # the same in the evaluation regime (validation and test)
COLOR_JITTER = 0.05  # std of the per-channel color noise


@lru_cache(maxsize=1)
def bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 bundled digits: images (N, 8, 8) float32 in [0, 1] and labels (N,) int64."""
    from sklearn.datasets import load_digits  # heavy import, only when a digits set is built

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    images.setflags(write=False)
    labels = bunch.target.astype(np.int64)
    labels.setflags(write=False)
    return images, labels


def subsample(total: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` samples out of ``total`` drawn without replacement (all when ``n`` is None)."""
    if n is None or n == total:
        return np.arange(total)
    return np.sort(np.random.default_rng([seed, 2]).choice(total, n, replace=False))


def draw_colors(rng: np.random.Generator, y: np.ndarray, agree: float) -> tuple[np.ndarray, np.ndarray]:
    """Palette index (N,) and jittered RGB color (N, 3): the label's color with probability ``agree``,
    otherwise a uniformly drawn palette color."""
    n = len(y)
    index = np.where(rng.random(n) < agree, y, rng.integers(0, NUM_CLASSES, n))
    rgb = np.clip(PALETTE[index] + rng.normal(0.0, COLOR_JITTER, (n, 3)), 0.0, 1.0)
    return index, rgb


def paint(gray: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Colored digits (N, 3, H, W) from gray digits (N, 1, H, W) and colors (N, 3)."""
    return (rgb[:, :, None, None] * gray).astype(np.float32)


def build_colored(seed: int, n: int | None = None) -> dict[str, np.ndarray]:
    """``{"m1", "m1_eval": (n, 3, 8, 8), "m2": (n, 1, 8, 8), "y": (n,), "color", "color_eval": (n,) palette
    indices}`` (see module doc)."""
    images, labels = bundled_digits()
    idx = subsample(len(labels), n, seed)
    gray = images[idx][:, None]  # (n, 1, 8, 8)
    y = labels[idx]  # a copy: fancy indexing
    rng = np.random.default_rng(seed)
    color, rgb = draw_colors(rng, y, COLOR_AGREE_TRAIN)
    color_eval, rgb_eval = draw_colors(rng, y, COLOR_AGREE_EVAL)
    return {
        "m1": paint(gray, rgb),
        "m1_eval": paint(gray, rgb_eval),
        "m2": gray,
        "y": y,
        "color": color,
        "color_eval": color_eval,
    }


def build_twoview(seed: int, n: int | None = None) -> dict[str, np.ndarray]:
    """``{"m1": (n, 1, 8, 4) left halves, "m2": (n, 1, 8, 4) right halves, "y": (n,)}`` (see module doc)."""
    images, labels = bundled_digits()
    idx = subsample(len(labels), n, seed)
    half = SIDE // 2
    return {
        "m1": images[idx, None, :, :half].copy(),
        "m2": images[idx, None, :, half:].copy(),
        "y": labels[idx].copy(),
    }
