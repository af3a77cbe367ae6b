"""UCF101 (Soomro et al., 2012): RGB frames and TV-L1 optical flow, as used in App. A.1.

Prep (``mmtool prep ucf101 --raw DIR``) reads the official split lists and the frame folders distributed
with the two-stream fusion work (Feichtenhofer et al., 2016): ``jpegs_256/`` (RGB) and ``tvl1_flow/{u,v}/``
(x/y flow, greyscale, 128 = no motion, one frame fewer than RGB). Without the jpeg folders the RGB frames
come from ``UCF-101/*.avi``, decoded with decord and stored in the cache as JPEGs, so one reader serves
both sources. Flow cannot be computed from the videos here: without ``tvl1_flow/`` the dataset has the
``rgb`` modality only. The layout, quirks and choices are described in ``data_prep/ucf101.md``.

The split lists, the raw folders and the cache's names are in :mod:`mmtool.data.ucf101_layout`, prep (each
clip's frames checked or extracted, the index and the manifest) in :mod:`mmtool.data.ucf101_prep`; this
module reads and loads a prepared cache and registers the dataset.

Design notes
  * One prep serves all three official splits: every clip is indexed once with its membership in
    splits 1-3; ``data.split`` picks one at load time. Validation is carved at load time from the train
    clips of that split by WHOLE groups (gXX): clips of one group share actors and scene, so a group
    split across train and val would leak them, which is why the official train/test rule splits by group.
    The test split is the official test list and is never used for model selection.
  * Everything that depends on ``data.image_size`` (crops, resizes, input_dims) happens at load time; the
    cache key depends only on what prep produces (``rgb_source``, ``flow_stack``).
  * Frames read from ``jpegs_256/``/``tvl1_flow/`` stay where they are (the cache holds the index, not a
    copy of ~10 GB of JPEGs); the manifest records the raw folder and loading checks a few sampled paths.
  * Nothing the lists or the index name may lead outside its folder: class names are plain folder names,
    list lines have no absolute path or ``..``, and every index entry stays in its layout folder
    (``jpegs_256/``, ``tvl1_flow/u|v/``, ``UCF-101/`` under the raw folder, ``frames/`` in the cache), links
    included. A layout folder may itself be a link (a layout assembled from several disks). The manifest's
    ``n``, ``num_classes`` and ``class_counts`` are checked against the index at load.
  * Inputs (App. A.1): ``rgb`` is ONE frame, (3, S, S); ``flow`` is ``flow_stack`` consecutive u/v pairs,
    (2 * flow_stack, S, S), interleaved ``[u_t, v_t, u_t+1, v_t+1, ...]`` as in the public two-stream
    loaders of these flow folders. Training: random frame / stack start, rescale so the short side is
    S * 8/7 (256 for S = 224, the size the frames are stored at), random S x S crop, random horizontal flip,
    which negates the x (u) flow. Evaluation: the middle frame / middle stack, resized to S x S.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmtool.data import Dataset, DiskSource, RootGuard, check_labels, read_manifest
from mmtool.data.pipeline_io import read_jsonl
from mmtool.data.registry import DATASETS, DatasetSpec
from mmtool.data.settings import UCF101Settings
from mmtool.data.transforms import IMAGENET_MEAN, IMAGENET_STD, hflip, normalize, random_crop, resize
from mmtool.data.ucf101_layout import (
    EXTRACTED,
    FLOW,
    FORMAT,
    INDEX,
    NAME,
    RGB_FRAMES,
    SPLITS,
    VIDEOS,
    frame_name,
    settings,
)
from mmtool.data.ucf101_prep import prepare
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

TRAIN_SCALE = 256 / 224  # App. A.1 frames are stored with a 256 short side and cropped to 224
EVAL_BATCH = 64


def _cache_key(cfg: DataConfig) -> str:
    # only what prep's output depends on; image_size, split and val_fraction are applied at load time
    s = settings(cfg)
    return f"{s.rgb_source}-stack{s.flow_stack}"


# --------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class ClipFiles:
    """Where one clip's frames are (absolute folders) and how many there are."""

    rgb_dir: str
    rgb_frames: int
    flow_u_dir: str | None = None
    flow_v_dir: str | None = None
    flow_frames: int = 0


class ClipReader:
    """Reads App. A.1 inputs of a list of clips: ``rgb`` (3, S, S) and ``flow`` (2 * stack, S, S).

    Picklable and stateless: every frame is opened when it is read, inside the process that reads it.

    Args:
        clips: the split's clips, in sample order.
        image_size: S, the side of the square inputs.
        flow_stack: flow frames per sample (each gives a u and a v channel).
    """

    def __init__(self, clips: Sequence[ClipFiles], image_size: int, flow_stack: int, augment: bool = True) -> None:
        self.clips = list(clips)
        self.size = (image_size, image_size)
        self.flow_stack = flow_stack
        self.augment = augment  # False: training frames are resized like test frames (random frame kept)

    def __len__(self) -> int:
        return len(self.clips)

    def read(self, index: int, modalities: Sequence[str], train: bool, rng: np.random.Generator) -> dict[str, Any]:
        """``{modality: float32 tensor}`` of clip ``index``; ``rng`` drives training augmentation."""
        clip = self.clips[index]
        # one child stream per modality, drawn whatever is selected: rgb is augmented the same with or without flow
        seeds = dict(zip(("rgb", "flow"), rng.integers(0, 2**63, size=2), strict=True))
        readers = {"rgb": self._rgb, "flow": self._flow}
        return {m: readers[m](clip, train, np.random.default_rng(seeds[m])) for m in modalities}

    def _rgb(self, clip: ClipFiles, train: bool, rng: np.random.Generator) -> torch.Tensor:
        index = int(rng.integers(clip.rgb_frames)) if train else clip.rgb_frames // 2  # eval: the middle frame
        image = _load_image(Path(clip.rgb_dir) / frame_name(index), "RGB")  # (3, H, W) uint8
        x, _ = self._view(image.float() / 255.0, train, rng)
        return normalize(x, IMAGENET_MEAN, IMAGENET_STD).contiguous()  # (3, S, S)

    def _flow(self, clip: ClipFiles, train: bool, rng: np.random.Generator) -> torch.Tensor:
        last_start = clip.flow_frames - self.flow_stack
        start = int(rng.integers(last_start + 1)) if train else last_start // 2  # eval: the middle stack
        planes = []
        for t in range(start, start + self.flow_stack):
            for folder in (clip.flow_u_dir, clip.flow_v_dir):  # interleaved u_t, v_t
                planes.append(_load_image(Path(folder) / frame_name(t), "L")[0])
        x = (torch.stack(planes).float() - 128.0) / 128.0  # (2L, H, W), 0 = no motion
        x, flipped = self._view(x, train, rng)
        if flipped:
            x[0::2] = -x[0::2]  # mirrored motion: x displacements change sign, y ones do not
        return x.contiguous()  # (2L, S, S)

    def _view(self, x: torch.Tensor, train: bool, rng: np.random.Generator) -> tuple[torch.Tensor, bool]:
        """Train: rescale (short side S * 256/224), random S x S crop, random flip; eval (and training
        without ``augment``): resize to S x S."""
        if not (train and self.augment):
            return resize(x, self.size), False
        h, w = x.shape[-2:]
        scale = round(self.size[0] * TRAIN_SCALE) / min(h, w)
        x = resize(x, (max(self.size[0], round(h * scale)), max(self.size[1], round(w * scale))))
        x = random_crop(x, self.size, rng)
        flipped = bool(rng.random() < 0.5)
        return (hflip(x) if flipped else x), flipped


def _load_image(path: Path, mode: str) -> torch.Tensor:
    """(C, H, W) uint8 of one JPEG frame."""
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert(mode))
    return torch.from_numpy(array.copy()).reshape(array.shape[0], array.shape[1], -1).permute(2, 0, 1)


# --------------------------------------------------------------------------------------------- loading
def carve_splits(rows: Sequence[dict], split: int, val_fraction: float, seed: int) -> dict[str, list[int]]:
    """Row positions of train/val/test for official split ``split``.

    Test is the official test list. Val takes ``val_fraction`` of the train GROUP numbers (at least one
    when the fraction is positive), in every class, so no group straddles train and val.
    """
    if split not in SPLITS:
        raise UserError(f"data.split must be 1, 2 or 3 (the official UCF101 splits), got {split}")
    if not 0 <= val_fraction < 1:
        raise UserError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    key = f"split{split}"
    train_groups = sorted({r["group"] for r in rows if r[key] == "train"})
    held = _val_groups(train_groups, val_fraction, np.random.default_rng([seed, split, 0x7661]))
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, row in enumerate(rows):
        if row[key] == "test":
            parts["test"].append(i)
        elif row[key] == "train":
            parts["val" if row["group"] in held else "train"].append(i)
    return parts


def _val_groups(groups: list[int], fraction: float, rng: np.random.Generator) -> set[int]:
    if fraction <= 0 or len(groups) < 2:
        return set()
    k = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    return {int(g) for g in rng.choice(groups, size=k, replace=False)}


def _load(cfg: DataConfig, folder: Path) -> Dataset:
    manifest = read_manifest(folder, "run `mmtool prep ucf101 --raw DIR --force`", FORMAT)
    rows = _read_index(folder, manifest)
    bases = _bases(cfg, manifest, folder)
    _check_rows(rows, manifest, bases, folder)
    files = [_clip_files(row, bases) for row in rows]
    _check_sampled_paths(files, folder)
    modalities = tuple(manifest["modalities"])
    s = settings(cfg)
    size = s.image_size
    parts = carve_splits(rows, s.split, cfg.val_fraction, cfg.seed)
    splits = {}
    for name, positions in parts.items():
        reader = ClipReader([files[i] for i in positions], size, manifest["flow_stack"], s.augment)
        targets = torch.tensor([rows[i]["label"] for i in positions], dtype=torch.long)
        splits[name] = DiskSource(reader, targets, modalities, EVAL_BATCH)
    dims = {m: [int(shape[0]), size, size] for m, shape in manifest["modalities"].items()}
    return Dataset(NAME, modalities, manifest["num_classes"], dims, splits, list(manifest["class_names"]))



def _read_index(folder: Path, manifest: dict) -> list[dict]:
    """The index rows, after checking its checksum against the manifest (no frame is hashed)."""
    path = folder / INDEX
    data = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(data).hexdigest() != manifest.get("files", {}).get(INDEX):
        raise UserError(
            f"{path} is missing or does not match {folder / 'manifest.json'} "
            "(re-run `mmtool prep ucf101 --raw DIR --force`)"
        )
    return read_jsonl(path)


# index entry -> (base, layout folder it must stay in); rgb_dir of a row with "video" is in the cache
ROW_PATHS = {"rgb_dir": ("raw", RGB_FRAMES), "flow_u_dir": ("raw", f"{FLOW}/u"), "flow_v_dir": ("raw", f"{FLOW}/v"),
             "video": ("raw", VIDEOS)}  # fmt: skip


def _check_rows(rows: list[dict], manifest: dict, bases: dict[str, Path], folder: Path) -> None:
    """The manifest's n, num_classes and class_counts against the index, and every path of the index
    inside its layout folder (one lstat per entry; see the module docstring)."""
    fix = "re-run `mmtool prep ucf101 --raw DIR --force`"
    path, index = folder / "manifest.json", folder / INDEX
    labels = np.array([r["label"] for r in rows], dtype=np.int64)
    names = manifest.get("class_names")
    known = len(names) if isinstance(names, list) else None
    check_labels(path, manifest, labels, fix, str(index), known, "its field 'class_names'")
    guards = {base: RootGuard(root, fix) for base, root in bases.items()}
    for line, row in enumerate(rows, start=1):
        for key, (base, within) in ROW_PATHS.items():
            if key == "rgb_dir" and "video" in row:
                base, within = "cache", EXTRACTED
            if key in row:
                guards[base].check(row[key], f"{index}:{line} {key}", within)


def _bases(cfg: DataConfig, manifest: dict, folder: Path) -> dict[str, Path]:
    """Folders the index's relative paths start from: the raw folder (data.raw, else the one prep read) and
    the cache (frames extracted from videos)."""
    raw = Path(cfg.raw).expanduser().resolve() if cfg.raw else Path(manifest["layout"]["raw"])
    return {"raw": raw, "cache": folder}


def _clip_files(row: dict, bases: dict[str, Path]) -> ClipFiles:
    rgb_base = bases["cache"] if "video" in row else bases["raw"]
    flow = {k: str(bases["raw"] / row[k]) for k in ("flow_u_dir", "flow_v_dir") if k in row}
    return ClipFiles(str(rgb_base / row["rgb_dir"]), row["rgb_frames"], flow_frames=row.get("flow_frames", 0), **flow)


def _check_sampled_paths(files: list[ClipFiles], cache: Path, samples: int = 3) -> None:
    """The first frame of a few evenly spaced clips exists: catches a moved or wrong raw folder cheaply."""
    picks = sorted({round(j * (len(files) - 1) / max(1, samples - 1)) for j in range(samples)}) if files else []
    for clip in (files[i] for i in picks):
        for frames in (clip.rgb_dir, clip.flow_u_dir, clip.flow_v_dir):
            path = Path(frames) / frame_name(0) if frames else None
            if path is not None and not path.is_file():
                raise UserError(
                    f"{path} (listed in {cache / INDEX}) does not exist: pass data.raw=DIR of the prepared copy, "
                    "or re-run `mmtool prep ucf101 --raw DIR --force`"
                )


DATASETS.register(NAME)(
    DatasetSpec(
        prepare=prepare,
        load=_load,
        cache_key=_cache_key,
        description="UCF101 (App. A.1): one RGB frame + a 10-frame TV-L1 flow stack; official splits 1-3",
        settings=UCF101Settings,
        data_format=FORMAT,
        raw_doc="data_prep/ucf101.md",
    )
)
