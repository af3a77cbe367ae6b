"""Colored-and-gray MNIST prep: MNIST's four IDX files read and checked, each digit given a colour, one
``data.npz``. What the dataset is and every choice made are in :mod:`mmtool.data.colored_mnist` and
``data_prep/colored-mnist.md``.

IDX (LeCun et al.'s format): a big-endian header -- two zero bytes, a type byte (0x08: unsigned byte) and the
number of dimensions -- then one big-endian int32 size per dimension, then the data. Images are
``idx3`` (N, 28, 28), labels ``idx1`` (N,). A file may be gzipped (``.gz``, as the published copies are).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from mmtool.data.cache_arrays import save_arrays
from mmtool.data.registry import dataset_settings
from mmtool.data.settings import ColoredMNISTSettings
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

NAME = "colored-mnist"
FORMAT = 1  # bump when the cache changes
NUM_CLASSES = 10
SIDE = 28
FILES = {  # split -> (images, labels), the published names
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
UBYTE = 0x08
# The ten mean colours (RGB, 0-255), one per digit: Kim et al. 2019 released their colored set only as arrays
# (github feidfoe/learning-not-to-learn, dataset/colored_mnist/README.md), without the table that made it; this is
# the ten-colour table of the closest released generator, COLOUR_MAP of github clovaai/rebias
# datasets/colour_mnist.py @f9e5639 (Bahng et al. 2020): red, green, blue, yellow, magenta, cyan, orange, rose,
# violet, grey. Our choice; see data_prep/colored-mnist.md.
COLOURS = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [225, 225, 0], [225, 0, 225], [0, 255, 255], [255, 128, 0],
     [255, 0, 128], [128, 0, 255], [128, 128, 128]], dtype=np.float32,
) / 255.0  # fmt: skip


# --------------------------------------------------------------------------------------------- IDX files
def find_file(raw: Path, name: str) -> Path:
    """``raw/name`` or ``raw/name.gz`` (also the dotted ``t10k-images.idx3-ubyte`` some mirrors use).

    Raises:
        UserError: neither exists.
    """
    for candidate in (name, name + ".gz", name.replace("-idx", ".idx"), name.replace("-idx", ".idx") + ".gz"):
        if (raw / candidate).is_file():
            return raw / candidate
    raise UserError(f"{raw}: no {name} (or {name}.gz); --raw must hold MNIST's four IDX files "
                    "(see data_prep/colored-mnist.md)")  # fmt: skip


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file with ``ndim`` dimensions.

    Raises:
        UserError: unreadable or not gzip when named .gz, a wrong magic number (not IDX, not unsigned bytes,
            or another number of dimensions), or a size that does not match the header (truncated or padded).
    """
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise UserError(f"{path}: cannot be read ({type(err).__name__}: {err})") from None
    header = 4 + 4 * ndim
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic != (UBYTE << 8) | ndim:
        found = "nothing" if magic is None else f"0x{magic:08x}"
        raise UserError(f"{path}: magic number {found}, expected 0x{(UBYTE << 8) | ndim:08x} (an IDX file of "
                        f"unsigned bytes with {ndim} dimension{'s' if ndim > 1 else ''})")  # fmt: skip
    if len(data) < header:
        raise UserError(f"{path}: {len(data)} bytes, shorter than its {header}-byte header (truncated)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing bytes"
        raise UserError(f"{path}: {len(data)} bytes, its header {list(dims)} needs {expected} ({what})")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_split(raw: Path, split: str) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Images (N, 28, 28) uint8, labels (N,) int64 and the files read, of ``split``.

    Raises:
        UserError: see :func:`read_idx`; images not 28 x 28, labels outside 0..9, or counts that differ.
    """
    image_file, label_file = (find_file(raw, name) for name in FILES[split])
    images, labels = read_idx(image_file, 3), read_idx(label_file, 1)
    if images.shape[1:] != (SIDE, SIDE):
        raise UserError(f"{image_file}: images of {images.shape[1]}x{images.shape[2]}, MNIST's are {SIDE}x{SIDE}")
    if len(images) != len(labels):
        raise UserError(f"{image_file} holds {len(images)} images but {label_file} {len(labels)} labels")
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise UserError(f"{label_file}: label {labels.max()} (MNIST's are 0..9)")
    return images, labels.astype(np.int64), {"images": image_file.name, "labels": label_file.name}


def resolve_raw(raw: str | None) -> Path:
    """The folder with the IDX files: ``raw`` itself, or torchvision's ``raw/MNIST/raw``.

    Raises:
        UserError: no raw folder given, or it does not exist.
    """
    if not raw:
        raise UserError(
            f"{NAME} needs MNIST's IDX files: `mmtool prep {NAME} --raw DIR` (see data_prep/colored-mnist.md)"
        )
    path = Path(raw).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"{path} is not a folder (--raw must hold MNIST's four IDX files)")
    nested = path / "MNIST" / "raw"  # torchvision.datasets.MNIST(root) keeps them here
    return nested if nested.is_dir() and not any(path.glob("train-images*")) else path


# --------------------------------------------------------------------------------------------- colours
def draw_colors(rng: np.random.Generator, y: np.ndarray, correlation: float, var: float) -> tuple[np.ndarray, ...]:
    """Colour index (N,) and jittered RGB (N, 3) in [0, 1]: the label's colour with probability
    ``correlation``, otherwise one of the nine others uniformly (so ``correlation`` is P(colour = label's) and
    0.1 is a uniform draw); per-channel jitter N(0, ``var``) as Kim et al.'s, clipped to [0, 1]."""
    n = len(y)
    other = (y + rng.integers(1, NUM_CLASSES, n)) % NUM_CLASSES  # uniform over the 9 other colours
    index = np.where(rng.random(n) < correlation, y, other)
    rgb = np.clip(COLOURS[index] + rng.normal(0.0, np.sqrt(var), (n, 3)), 0.0, 1.0).astype(np.float32)
    return index.astype(np.int64), rgb


def prepare(cfg: DataConfig, out: Path, options: object = None) -> dict:
    """Read the IDX files of ``data.raw``, draw both colour regimes for every image and write ``data.npz``;
    returns the manifest (the spec's ``prepare``)."""
    s = dataset_settings(cfg, ColoredMNISTSettings)
    raw = resolve_raw(cfg.raw)
    parts = {split: read_split(raw, split) for split in FILES}
    gray = np.concatenate([parts[k][0] for k in FILES])  # (N, 28, 28) uint8: train images, then test images
    y = np.concatenate([parts[k][1] for k in FILES])
    split = np.concatenate([np.full(len(parts[k][1]), i, dtype=np.int8) for i, k in enumerate(FILES)])
    rng = np.random.default_rng([s.color_seed, 2019])
    color, rgb = draw_colors(rng, y, s.train_correlation, s.color_var)  # what training images wear
    color_eval, rgb_eval = draw_colors(rng, y, s.test_correlation, s.color_var)  # what test images wear
    arrays = {"gray": gray, "y": y, "split": split, "color": color, "rgb": rgb, "color_eval": color_eval,
              "rgb_eval": rgb_eval}  # fmt: skip
    sha = save_arrays(out / "data.npz", arrays)
    test = split == 1
    agree = {"train": float((color[~test] == y[~test]).mean()), "test": float((color_eval[test] == y[test]).mean())}
    return {
        "dataset": NAME,
        "format": FORMAT,
        "n": len(y),
        "num_classes": NUM_CLASSES,
        "class_names": [str(d) for d in range(NUM_CLASSES)],
        "modalities": {"color": [3, SIDE, SIDE], "gray": [1, SIDE, SIDE]},
        "class_counts": np.bincount(y, minlength=NUM_CLASSES).tolist(),
        "split_sizes": {k: len(parts[k][1]) for k in FILES},
        "split_note": "test is MNIST's t10k set; val is carved at load time from the training images "
        "(data.val_fraction, data.seed) and wears the colours data.val_colors names",
        "source": {k: parts[k][2] for k in FILES},
        "construction": {
            "color": "the gray digit painted in one colour, rgb[c] * gray[p] / 255, black background (Kim et al. 2019)",
            "gray": "the MNIST digit, intensities / 255",
            "palette_rgb": np.round(COLOURS, 4).tolist(),
            "correlation": {"train": s.train_correlation, "test": s.test_correlation},
            "color_var": s.color_var,
            "color_seed": s.color_seed,
        },
        "color_label_agreement": {k: round(v, 4) for k, v in agree.items()},
        "files": {"data.npz": sha},
        "skipped": [],
    }
