"""The clip cache that :mod:`mmtool.data.clips` writes: its key and settings, its manifest, the sweep of
files no index row names, and reading it back.

Loading: :func:`load_clips` checks a cache cheaply (format, the index's checksum, label counts, that index
paths stay inside the cache, and the files of a few clips) and returns train/val/test
:class:`~mmtool.data.source.DiskSource` splits read by :class:`StackedClipReader`; the validation split is
drawn from the train clips with ``data.seed`` at load time.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mmtool.data import Dataset, DiskSource, RootGuard, check_labels
from mmtool.data.clips import JPEG_QUALITY, MIN_AUDIO_SECONDS, MIN_FRAMES, MODALITIES, ClipSettings
from mmtool.data.pipeline_io import file_sha256
from mmtool.data.registry import dataset_settings
from mmtool.data.settings import AudioVisualSettings
from mmtool.data.transforms import IMAGENET_MEAN, IMAGENET_STD, center_crop, hflip, normalize, random_crop, resize
from mmtool.data.views import TestViews, uniform_crop, window_start
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

MAX_AUDIO_FACTOR = 2.0  # stored audio is at most this many times audio_seconds
EVAL_BATCH = 24  # the paper's batch size; a (24, 3, 32, 224, 224) float32 batch is 460 MB
SPOT_CHECKS = 8  # cached clips whose files `load` checks (existence and size, no hashing)
SPLITS = ("train", "test")  # stored in a clip cache; val is drawn from train at load time


# ---------------------------------------------------------------------------------------- cache settings
def av_settings(cfg: DataConfig) -> AudioVisualSettings:
    """The clip settings of ``cfg`` (VGG-Sound, Kinetics, CREMA-D: :class:`AudioVisualSettings`)."""
    return dataset_settings(cfg, AudioVisualSettings)


def cache_key(cfg: DataConfig) -> str:
    """Prep-time settings only: frames stored, their size, audio rate and length."""
    s = av_settings(cfg)
    return f"s{s.store_size}-t{s.clip_frames}-sr{s.sample_rate}-a{s.audio_seconds:g}"


def audio_samples(cfg: DataConfig) -> int:
    """Samples of the waveform the loader delivers: ``audio_window_seconds`` (else ``audio_seconds``) at
    ``sample_rate``."""
    s = av_settings(cfg)
    return round((s.audio_window_seconds or s.audio_seconds) * s.sample_rate)


def clip_settings(cfg: DataConfig, keep_aspect: bool = False) -> ClipSettings:
    """The checked prep settings of ``cfg``."""
    s = check_settings(cfg)
    return ClipSettings(s.store_size, s.clip_frames, s.sample_rate,
                        round(MAX_AUDIO_FACTOR * s.audio_seconds * s.sample_rate), keep_aspect)  # fmt: skip


def check_settings(cfg: DataConfig) -> AudioVisualSettings:
    """The clip settings of ``cfg``, refused in one line where prep cannot use them (beyond their ranges)."""
    s = av_settings(cfg)
    if s.store_size < 8 or s.clip_frames < 1 or s.sample_rate < 1000 or s.audio_seconds <= 0:
        raise UserError(
            f"data.store_size >= 8, data.clip_frames >= 1, data.sample_rate >= 1000 and data.audio_seconds > 0 "
            f"needed, got {s.store_size}, {s.clip_frames}, {s.sample_rate}, {s.audio_seconds}"
        )
    if s.store_size * s.clip_frames > 65500:  # the JPEG format's limit on the stacked image's height
        raise UserError(
            f"data.clip_frames x data.store_size must be at most 65500, got {s.clip_frames} x {s.store_size}"
        )
    return s


def sweep(out: Path, records: list[dict]) -> None:
    """Delete files no index row names: temporaries of a killed run, clips of an earlier annotation list."""
    keep = {r["frames"] for r in records} | {r["audio"] for r in records}
    for top in ("frames", "audio"):
        if not (out / top).is_dir():
            continue
        for folder in (out / top).iterdir():
            for entry in os.scandir(folder):
                if f"{top}/{folder.name}/{entry.name}" not in keep:
                    os.unlink(entry.path)
            if not any(folder.iterdir()):
                folder.rmdir()
    for entry in os.scandir(out):
        if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file():
            os.unlink(entry.path)


def _stored_modalities(av: AudioVisualSettings, keep_aspect: bool) -> dict:
    """How a clip cache stores each modality (the manifest's ``modalities``)."""
    s, t = av.store_size, av.clip_frames
    if keep_aspect:
        layout = "frames stacked vertically, uint8 RGB; aspect ratio kept, min(H, W) = short_side"
        video = {"file": "frames/<xx>/<key>.jpg", "stored_shape": [t, "H", "W", 3], "frames": t, "short_side": s,
                 "layout": layout}  # fmt: skip
    else:
        video = {"file": "frames/<xx>/<key>.jpg", "stored_shape": [t * s, s, 3], "frames": t, "size": s,
                 "layout": "frames stacked vertically, uint8 RGB"}  # fmt: skip
    audio = {"file": "audio/<xx>/<key>.npy", "dtype": "float32", "channels": 1, "sample_rate": av.sample_rate,
             "max_seconds": MAX_AUDIO_FACTOR * av.audio_seconds, "min_seconds": MIN_AUDIO_SECONDS}  # fmt: skip
    return {"video": {**video, "jpeg_quality": JPEG_QUALITY, "min_source_frames": MIN_FRAMES}, "audio": audio}


def clip_manifest(
    cfg: DataConfig, *, data_format: int, classes: list[str], records: list[dict], skipped: list[dict], missing: int,
    source: dict, checksums: dict, label_order: str, split_note: str, keep_aspect: bool = False,
) -> dict:  # fmt: skip
    """The manifest of a clip cache: sizes and label counts per split, how each modality is stored, the
    settings, what was skipped (key and reason) and the checksums."""
    per_split = {split: [0] * len(classes) for split in SPLITS}
    for r in records:
        per_split[r["split"]][r["label"]] += 1
    av = av_settings(cfg)
    s, t = av.store_size, av.clip_frames
    return {
        "dataset": cfg.name,
        "format": data_format,
        "n": len(records),
        "num_classes": len(classes),
        "class_names": classes,
        "label_order": label_order,
        "class_counts": [a + b for a, b in zip(per_split["train"], per_split["test"], strict=True)],
        "split_counts": per_split,
        "split_sizes": {k: sum(v) for k, v in per_split.items()},
        "split_note": split_note,
        "modalities": _stored_modalities(av, keep_aspect),
        # what the model sees before input transforms; the crop size is a load-time setting
        "input_dims": {"video": [3, t, "image_size", "image_size"],
                       "audio": [round(av.audio_seconds * av.sample_rate)]},
        "settings": {
            "store_size": s,
            "clip_frames": t,
            "sample_rate": av.sample_rate,
            "audio_seconds": av.audio_seconds,
        },
        "skipped": [{"key": e["key"], "reason": e["reason"]} for e in skipped],
        "skipped_counts": dict(sorted(Counter(e["reason"] for e in skipped).items())),
        "missing": missing,
        "source": source,
        "files": checksums,  # sha256
    }


# ------------------------------------------------------------------------------------------- loading
def fit_audio(wave: np.ndarray, length: int, train: bool, rng: np.random.Generator) -> np.ndarray:
    """``length`` samples of ``wave``: a random window in training, the centred one otherwise; a shorter
    track is tiled (from a random offset in training, from its start otherwise)."""
    n = len(wave)
    if n >= length:
        start = int(rng.integers(0, n - length + 1)) if train else (n - length) // 2
        return np.array(wave[start : start + length], dtype=np.float32)  # a copy: off the memory map
    offset = int(rng.integers(0, n)) if train else 0
    tiled = np.tile(np.asarray(wave, dtype=np.float32), math.ceil((length + offset) / n))
    return tiled[offset : offset + length]


class StackedClipReader:
    """Reads clips of one split of a prepared cache (see :class:`mmtool.data.source.SampleReader`).

    Holds paths and numbers only (it is pickled into loader workers) and opens a clip's two files per read.
    Video: the stored (T, H0, W0) frames -> float32 (3, T, S, S), in training one random S x S crop for all
    frames and a random horizontal flip; in evaluation resized to S x S (VGG-Sound's square frames) or, with
    ``eval_crop``, the centred S x S crop (frames stored with their aspect ratio: the scale training crops
    see). ImageNet-normalised. Audio: float32 (L,) with :func:`fit_audio`: a random window per epoch in
    training, the centred one in evaluation. Each modality draws from its own child of the sample's ``rng``,
    so its augmentation is the same whichever modalities are read. Without ``augment`` (VGG-Sound's setting:
    "we do not use any kinds of data augmentation", paper 001 Sec. 4.1) training reads the evaluation view
    of the video, and each clip keeps one random audio window, drawn from ``seed`` and the clip, in every
    epoch and at test: the paper's "randomly cropped or tiled" preprocessing, done once per clip.

    ``window``: a sample is that many consecutive stored frames (a random start in augmented training, the
    centred window otherwise, window ``k`` of ``views.clips`` in :meth:`read_view`), and the audio is the
    ``L`` samples centred on the window's middle (aligned in time; tiled if the track is shorter).
    ``views``/``eval_size``: what :meth:`read_view` reads (:mod:`mmtool.data.views`); ``eval_size`` is the
    side of evaluation crops (default ``image_size``).
    """

    def __init__(
        self, folder: str, frames: Sequence[str], audio: Sequence[str], *, stored_frames: int, store_size: int,
        image_size: int, audio_samples: int, augment: bool = True, seed: int = 0, eval_crop: bool = False,
        window: int | None = None, views: TestViews | None = None, eval_size: int | None = None,
    ) -> None:  # fmt: skip
        self.folder, self.frames, self.audio = folder, list(frames), list(audio)
        self.stored_frames, self.store_size = stored_frames, store_size
        self.image_size, self.audio_samples = image_size, audio_samples
        self.augment, self.seed, self.eval_crop = augment, seed, eval_crop
        self.window = window if window is not None and window < stored_frames else None
        self.views, self.eval_size = views or TestViews(), eval_size or image_size

    def read(self, index: int, modalities: Sequence[str], train: bool, rng: np.random.Generator) -> dict:
        return self._read(index, modalities, train, rng, None)

    def read_view(self, index: int, view: int, modalities: Sequence[str]) -> dict:
        """View ``view`` of clip ``index`` (window ``view // crops``, crop ``view % crops``); deterministic."""
        return self._read(index, modalities, False, np.random.default_rng(0), view)

    def _read(self, index: int, modalities: Sequence[str], train: bool, rng: np.random.Generator,
              view: int | None) -> dict:  # fmt: skip
        video_rng, audio_rng = (np.random.default_rng(s) for s in rng.integers(0, 2**62, size=2))
        start = self._window_start(train and self.augment, video_rng, view)
        out = {}
        if "video" in modalities:
            out["video"] = self.video(index, train, video_rng, start, view)
        if "audio" in modalities:
            if start is not None:  # aligned with the frames' window
                out["audio"] = self.aligned_audio(index, (start + self.window / 2) / self.stored_frames)
            elif self.augment:
                out["audio"] = self.audio_wave(index, train, audio_rng)
            else:  # the paper's preprocessing: one random window per clip, the same in every epoch and at test
                out["audio"] = self.audio_wave(index, True, self._clip_rng(index))
        return out

    def _window_start(self, random: bool, rng: np.random.Generator, view: int | None) -> int | None:
        if self.window is None:
            return None
        if random:
            return int(rng.integers(0, self.stored_frames - self.window + 1))
        k, count = (self.views.of(view)[0], self.views.clips) if view is not None else (0, 1)
        return window_start(self.stored_frames, self.window, k, count)

    def _clip_rng(self, index: int) -> np.random.Generator:
        """A stream fixed per clip (by its file name, not its position in a split) and ``data.seed``."""
        return np.random.default_rng([self.seed, zlib.crc32(self.audio[index].encode())])

    def video(self, index: int, train: bool, rng: np.random.Generator, start: int | None = None,
              view: int | None = None) -> torch.Tensor:  # fmt: skip
        """(3, T, S, S) float32, normalised (T: the window's frames where there is one)."""
        from PIL import Image

        with Image.open(os.path.join(self.folder, self.frames[index])) as image:
            stacked = np.array(image.convert("RGB"))  # (T*H0, W0, 3), writable for torch
        t, s = self.stored_frames, self.image_size
        h0, w0 = stacked.shape[0] // t, stacked.shape[1]
        clip = torch.from_numpy(stacked.reshape(t, h0, w0, 3)).permute(3, 0, 1, 2)  # (3, T, H0, W0) uint8
        if start is not None:
            clip = clip[:, start : start + self.window]
        if train and self.augment:
            clip = random_crop(clip, (s, s), rng)
            clip = hflip(clip) if rng.random() < 0.5 else clip
        elif view is not None and self.views.crops > 1:
            clip = uniform_crop(clip, self.eval_size, self.views.of(view)[1], self.views.crops)
        elif self.eval_crop:
            clip = centre_crop(clip, self.eval_size)
        else:
            clip = resize(clip, (self.eval_size, self.eval_size))
        clip = clip.float().div_(255.0)  # (3, T, S, S)
        return normalize(clip, IMAGENET_MEAN, IMAGENET_STD)

    def audio_wave(self, index: int, train: bool, rng: np.random.Generator) -> torch.Tensor:
        """(L,) float32 waveform."""
        wave = np.load(os.path.join(self.folder, self.audio[index]), mmap_mode="r")  # reads only the window
        return torch.from_numpy(fit_audio(wave, self.audio_samples, train, rng))

    def aligned_audio(self, index: int, centre: float) -> torch.Tensor:
        """(L,) float32: the ``L`` samples centred at fraction ``centre`` of the track (clamped to it)."""
        wave = np.load(os.path.join(self.folder, self.audio[index]), mmap_mode="r")
        n, length = len(wave), self.audio_samples
        if n < length:
            return torch.from_numpy(fit_audio(wave, length, False, np.random.default_rng(0)))
        first = min(max(round(centre * n - length / 2), 0), n - length)
        return torch.from_numpy(np.array(wave[first : first + length], dtype=np.float32))


def check_window(cfg: DataConfig, av: AudioVisualSettings, stored: int) -> int:
    """Frames per sample: ``window_frames`` (at most the ``stored`` frames of the cache) or all of them."""
    if av.window_frames is not None and av.window_frames > stored:
        raise UserError(f"data.window_frames: {av.window_frames} frames per sample, but the {cfg.name} cache stores "
                        f"{stored} per clip (data.clip_frames; prep again with more)")  # fmt: skip
    if av.window_frames is None and av.test_clips > 1:
        raise UserError(f"data.test_clips: {av.test_clips} windows need data.window_frames (frames per window), "
                        "else every window is the whole clip")  # fmt: skip
    return av.window_frames or stored


def centre_crop(clip: torch.Tensor, s: int) -> torch.Tensor:
    """The centred s x s crop of (..., H, W); frames with a side under s are first resized up, aspect kept."""
    h, w = clip.shape[-2:]
    if h < s or w < s:
        scale = max(s / h, s / w)
        clip = resize(clip, (max(s, round(h * scale)), max(s, round(w * scale))))
    return center_crop(clip, (s, s))


def fix_hint(name: str, folder: Path) -> str:
    """How to rebuild the cache in ``folder`` (``<root>/<name>/<key>``), for error messages."""
    return f"re-run `mmtool prep {name} --raw DIR --root {folder.parents[1]} --force` with the same data.* settings"


def read_checked(cfg: DataConfig, folder: Path, data_format: int) -> tuple[dict, list[dict]]:
    """The manifest and index rows of a clip cache, after cheap consistency checks (no hashing of clip files)."""
    fix = fix_hint(cfg.name, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("format") != data_format:
        raise UserError(f"{folder / 'manifest.json'}: data format {manifest.get('format')}, this mmtool reads "
                        f"format {data_format} ({fix})")  # fmt: skip
    index = folder / "index.jsonl"
    if not index.is_file() or file_sha256(index) != manifest.get("files", {}).get("index.jsonl"):
        raise UserError(f"{index}: missing or does not match manifest.json ({fix})")
    rows = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
    said, names = folder / "manifest.json", manifest.get("class_names")
    labels = np.array([r["label"] for r in rows], dtype=np.int64)
    known = len(names) if isinstance(names, list) else None
    check_labels(said, manifest, labels, fix, str(index), known, "its field 'class_names'")
    sizes = {k: sum(r["split"] == k for r in rows) for k in SPLITS}
    if manifest.get("split_sizes") != sizes:
        raise UserError(f"{said}: field 'split_sizes' is {manifest.get('split_sizes')}, but {index} holds {sizes} "
                        f"({fix})")  # fmt: skip
    check_paths(rows, folder, Path(manifest.get("raw") or "the raw folder"), index, fix)
    for i in np.unique(np.linspace(0, len(rows) - 1, min(SPOT_CHECKS, len(rows))).astype(int)):
        for kind in ("frames", "audio"):
            path = folder / rows[i][kind]
            if not path.is_file() or path.stat().st_size != rows[i][f"{kind}_bytes"]:
                raise UserError(f"{path}: missing or not the size index.jsonl records ({fix})")
    return manifest, rows


def check_paths(rows: list[dict], folder: Path, raw: Path, index: Path, fix: str) -> None:
    """Every file an index row names stays in its folder of the cache (``frames/``, ``audio/``), links
    included; ``source``, the raw clip's path under ``raw`` (recorded, never opened), has no absolute path
    or ``..`` (links under the raw folder are followed by design). One lstat a file."""
    cache, recorded = RootGuard(folder, fix), RootGuard(raw, fix)
    for line, row in enumerate(rows, start=1):
        for key in ("frames", "audio"):
            cache.check(row[key], f"{index}:{line} {key}", within=key)
        recorded.check(row["source"], f"{index}:{line} source", links=False)


def validation_rows(n_train: int, val_fraction: float, seed: int) -> np.ndarray:
    """Positions among the train rows (sorted by key) that form the validation split."""
    if not 0 <= val_fraction < 1:
        raise UserError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng([seed, 2]).permutation(n_train)
    return np.sort(order[: round(n_train * val_fraction)])


def load_clips(cfg: DataConfig, folder: Path, data_format: int, eval_crop: bool = False) -> Dataset:
    """The prepared clip cache as a :class:`Dataset` of :class:`DiskSource` splits (train, val, test)."""
    av = av_settings(cfg)
    if av.image_size < 1:
        raise UserError(f"data.image_size must be positive, got {av.image_size}")
    manifest, rows = read_checked(cfg, folder, data_format)
    settings = manifest["settings"]
    train = [r for r in rows if r["split"] == "train"]
    val_at = set(validation_rows(len(train), cfg.val_fraction, cfg.seed).tolist())
    parts = {"train": [r for i, r in enumerate(train) if i not in val_at],
             "val": [r for i, r in enumerate(train) if i in val_at],
             "test": [r for r in rows if r["split"] == "test"]}  # fmt: skip
    n_audio = audio_samples(cfg)
    frames = check_window(cfg, av, settings["clip_frames"])
    views = TestViews(av.test_clips, av.test_crops)
    splits = {}
    for name, part in parts.items():
        reader = StackedClipReader(str(folder), [r["frames"] for r in part], [r["audio"] for r in part],
                                   stored_frames=settings["clip_frames"], store_size=settings["store_size"],
                                   image_size=av.image_size, audio_samples=n_audio, augment=av.augment,
                                   seed=cfg.seed, eval_crop=eval_crop, window=av.window_frames, views=views,
                                   eval_size=av.test_crop_size)  # fmt: skip
        targets = torch.tensor([r["label"] for r in part], dtype=torch.long)
        splits[name] = DiskSource(reader, targets, MODALITIES, eval_batch_size=EVAL_BATCH,
                                  views=1 if name == "train" else views.count)  # fmt: skip
    dims = {"video": [3, frames, av.image_size, av.image_size], "audio": [n_audio]}
    return Dataset(cfg.name, MODALITIES, manifest["num_classes"], dims, splits, manifest["class_names"])
