"""VGG-Sound (Chen et al., 2020): audio-visual clips of 309 sound classes, prepared from a local copy.

``mmtool prep vggsound --raw DIR`` reads the published ``vggsound.csv`` (no header; rows
``youtube_id,start_seconds,label,split``) and the clips found anywhere under ``DIR``, and writes a cache that
the loader reads without decoding video (paper 000, App. A.1; workshop paper 001, Sec. 4.1):

* video: ``clip_frames`` (32) frames sampled uniformly over the clip, each resized to ``store_size`` squared
  (256x256) by decord's decoder, stored as ONE vertically stacked JPEG per clip (``frames/<xx>/<key>.jpg``,
  fixed quality): a uint8 array would be ~6 MB per clip, over a terabyte for the dataset;
* audio: decoded by decord at ``sample_rate`` (16 kHz), mono, float32 PCM (``audio/<xx>/<key>.npy``).

Choices, and why:

* **Audio crop at load time.** The paper crops or tiles the track to 10 s "randomly". A crop drawn in prep
  would be one fixed crop forever (no augmentation) and would tie the cache bytes to a seed, so prep stores
  the whole track (up to ``MAX_AUDIO_FACTOR`` x ``audio_seconds``, which guards against full-length videos)
  and the loader takes a random ``audio_seconds`` window in training, the centred one in evaluation; a
  shorter track is tiled (from a random offset in training, from its start in evaluation).
* **Minimum length.** A clip with fewer than ``MIN_FRAMES`` (8) video frames or less than
  ``MIN_AUDIO_SECONDS`` (1 s) of audio is skipped as ``too_short``: 32 frames sampled from fewer than 8
  repeat each frame 4+ times and a 10 s input tiled from under 1 s is mostly repetition.
* **Labels.** Class ``i`` is the ``i``-th label of the sorted list of unique labels in the csv (Python string
  order), missing clips included, so indices do not depend on which clips a copy lacks.
* **Truncated files.** An MP4 (ISO BMFF) is a chain of (size, type) boxes; an interrupted download ends
  inside one, or lacks the ``moov`` index box that encoders write last. That walk tells ``truncated`` from
  ``corrupt`` (opens but does not decode) and from ``not_media`` (no known container signature at all).
* **Determinism.** Outputs depend on the raw files and the cache key's settings only: the video decoder
  runs one thread, JPEGs are written with fixed settings, ``.npy`` files carry no timestamps, and skip
  details are scrubbed of decord's time-of-day stamps and of absolute paths.

The cache key holds only prep-time settings (store size, frames, sample rate, audio length); the crop size
``image_size``, ``val_fraction`` and ``seed`` are read at load time. The validation split is drawn from the
train clips with ``data.seed``; the test split is the csv's test rows and is never used for model selection.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmtool.config import DataConfig
from mmtool.data import DATASETS, Dataset, DatasetSpec, DiskSource, PrepOptions, RootGuard, check_labels
from mmtool.data.pipeline import PrepItem, SkipSample, file_sha256, run_pipeline, save_npy, write_jsonl
from mmtool.data.transforms import IMAGENET_MEAN, IMAGENET_STD, hflip, normalize, random_crop, resize
from mmtool.errors import UserError
from mmtool.runs import atomic_write_bytes

FORMAT = 1  # bump when the cache layout changes: `prep` rebuilds caches of another format
MODALITIES = ("video", "audio")
CSV_NAME = "vggsound.csv"
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv")  # preference order
VARIANTS = ("canonical", "no_pad", "start_end")  # <id>_<start:06d>, <id>_<start>, <id>_<start>_<end>
JPEG_QUALITY = 90
JPEG_SUBSAMPLING = 2  # PIL's code for 4:2:0 chroma, the JPEG default; fixed so the bytes are
MIN_FRAMES = 8
MIN_AUDIO_SECONDS = 1.0
MAX_AUDIO_FACTOR = 2.0  # stored audio is at most this many times audio_seconds
EVAL_BATCH = 24  # the paper's batch size; a (24, 3, 32, 224, 224) float32 batch is 460 MB
SPOT_CHECKS = 8  # cached clips whose files `load` checks (existence and size, no hashing)
_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_BMFF_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp"}


# ------------------------------------------------------------------------------------------------- the csv
@dataclass(frozen=True)
class CsvRow:
    """One row of ``vggsound.csv``."""

    youtube_id: str
    start: int
    label: str
    split: str  # train | test

    @property
    def key(self) -> str:
        """Unique, file-name safe: the canonical clip name without its extension."""
        return f"{self.youtube_id}_{self.start:06d}"


def read_csv(path: Path) -> tuple[list[CsvRow], int]:
    """Parse the published csv: no header, ``youtube_id,start_seconds,label,split``, labels with commas quoted.

    Returns (rows in file order, number of repeated rows dropped; the first of each key is kept). A header
    line, which some copies add, is skipped; any other malformed line is a :class:`UserError` naming it.
    """
    rows: dict[str, CsvRow] = {}
    repeated = 0
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            row = _parse_row(path, reader.line_num, fields, first=not rows and not repeated)
            if row is None:
                continue
            repeated += row.key in rows
            rows.setdefault(row.key, row)
    if not rows:
        raise UserError(f"{path}: no rows (expected youtube_id,start_seconds,label,split lines)")
    return list(rows.values()), repeated


def _parse_row(path: Path, line: int, fields: list[str], first: bool) -> CsvRow | None:
    where = f"{path}:{line}"
    if len(fields) != 4:
        raise UserError(f"{where}: expected 4 fields youtube_id,start_seconds,label,split, got {len(fields)}")
    youtube_id, start_text, label, split = (f.strip() for f in fields)
    start = _seconds(start_text)
    if start is None and first:
        return None  # a header line
    if start is None:
        raise UserError(f"{where}: start_seconds {start_text!r} is not a whole number of seconds")
    if not _YOUTUBE_ID.match(youtube_id):
        raise UserError(f"{where}: youtube id {youtube_id!r} has characters outside [A-Za-z0-9_-]")
    if split.lower() not in ("train", "test"):
        raise UserError(f"{where}: split {split!r} is neither 'train' nor 'test'")
    if not label:
        raise UserError(f"{where}: empty label")
    return CsvRow(youtube_id, start, label, split.lower())


def _seconds(text: str) -> int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() and value >= 0 else None


# ----------------------------------------------------------------------------------------- finding clips
@dataclass(frozen=True)
class ClipFile:
    """A file (or something else that exists) whose name reads as a clip of (youtube id, start)."""

    path: Path
    variant: str  # one of VARIANTS

    def rank(self, raw: Path) -> tuple:
        """Which of several copies of one clip to prepare: by naming variant, extension, then path."""
        suffix = self.path.suffix.lower()
        return (VARIANTS.index(self.variant), VIDEO_EXTENSIONS.index(suffix), str(self.path.relative_to(raw)))


def clip_readings(name: str) -> list[tuple[str, int, str]]:
    """Every (youtube id, start, variant) a file name can stand for.

    ``abc_000030.mp4`` is canonical, ``abc_30.mp4`` unpadded, ``abc_000030_000040.mp4`` carries the end
    second. Ids may themselves contain ``_`` and digits, so ``abc_000030_000040`` is also read as id
    ``abc_000030`` at 40 s: every reading is kept and the csv's ids pick the right one.
    """
    stem, suffix = os.path.splitext(name)
    if suffix.lower() not in VIDEO_EXTENSIONS:
        return []
    parts = stem.split("_")
    readings = []
    if len(parts) >= 2 and parts[-1].isdigit() and parts[-1].isascii():
        variant = "canonical" if len(parts[-1]) == 6 else "no_pad"
        readings.append(("_".join(parts[:-1]), int(parts[-1]), variant))
    if len(parts) >= 3 and all(p.isdigit() and p.isascii() for p in parts[-2:]):
        readings.append(("_".join(parts[:-2]), int(parts[-2]), "start_end"))
    return [r for r in readings if r[0]]


def find_clips(raw: Path) -> tuple[dict[tuple[str, int], list[ClipFile]], list[Path]]:
    """Walk ``raw`` (following links, once per folder) for clip files and ``vggsound.csv`` copies.

    Folders named like clips are collected too: such a path exists, so its row is ``unreadable``, not
    missing. Returns ({(youtube id, start): candidate files}, csv paths found).
    """
    found: dict[tuple[str, int], list[ClipFile]] = {}
    csvs: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(raw, followlinks=True):
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs.sort()
        for name in sorted(files) + dirs:
            if name == CSV_NAME:
                csvs.append(Path(folder, name))
            for youtube_id, start, variant in clip_readings(name):
                found.setdefault((youtube_id, start), []).append(ClipFile(Path(folder, name), variant))
    return found, sorted(csvs)


def _locate_csv(raw: Path, csvs: list[Path]) -> Path:
    if (raw / CSV_NAME).is_file():
        return raw / CSV_NAME
    if len(csvs) == 1:
        return csvs[0]
    if not csvs:
        raise UserError(f"{raw}: no {CSV_NAME} found (put the published csv in the --raw folder)")
    listed = ", ".join(str(p) for p in csvs[:4])
    raise UserError(f"{raw}: several {CSV_NAME} files ({listed}); put the one to use at {raw / CSV_NAME}")


def plan_items(
    rows: Sequence[CsvRow], found: dict[tuple[str, int], list[ClipFile]], classes: Sequence[str], raw: Path
) -> tuple[list[PrepItem], list[dict], dict[str, Any]]:
    """Match csv rows with files: (items to prepare, missing rows, how the layout was matched)."""
    index = {name: i for i, name in enumerate(classes)}
    items, missing = [], []
    variants, extensions, folders = Counter(), Counter(), Counter()
    several = 0
    for row in rows:
        candidates = found.get((row.youtube_id, row.start), [])
        if not candidates:
            missing.append({"key": row.key, "youtube_id": row.youtube_id, "start": row.start,
                            "label": row.label, "split": row.split, "expected": f"{row.key}.mp4"})  # fmt: skip
            continue
        chosen = min(candidates, key=lambda c: c.rank(raw))
        several += len(candidates) > 1
        rel = chosen.path.relative_to(raw)
        variants[chosen.variant] += 1
        extensions[chosen.path.suffix.lower()] += 1
        folders[rel.parent.as_posix()] += 1
        meta = {"path": str(chosen.path), "youtube_id": row.youtube_id, "start": row.start}
        items.append(PrepItem(row.key, row.split, index[row.label], (rel.as_posix(),), meta))
    layout = {
        "matched": {v: variants[v] for v in VARIANTS},
        "extensions": dict(sorted(extensions.items())),
        "folders": dict(sorted(folders.items())),
        "rows_with_several_files": several,
    }
    return sorted(items, key=lambda it: it.key), missing, layout


# ------------------------------------------------------------------------------------------- one clip
@dataclass(frozen=True)
class ClipSettings:
    """What prep makes of one clip (the cache key's settings)."""

    store_size: int
    clip_frames: int
    sample_rate: int
    max_audio_samples: int


def prepare_clip(item: PrepItem, out: Path, settings: ClipSettings) -> dict:
    """Decode one raw clip and write its frames JPEG and audio ``.npy`` under ``out``; return its index row.

    Raises :class:`SkipSample` with the reason a broken clip cannot be used (see the module docstring).
    """
    path = Path(item.meta["path"])
    head, size = _read_head(path)
    _probe(path, head, size)
    frames, decoder = _decode_video(path, settings)  # (T, S, S, 3) uint8
    wave = _decode_audio(path, settings)  # (N,) float32
    files = _write_clip(out, item.key, frames, wave)
    return {"youtube_id": item.meta["youtube_id"], "start": item.meta["start"], "label": item.label,
            "split": item.split, "source": item.sources[0], "audio_samples": len(wave),
            "video_decoder": decoder, **files}  # fmt: skip


def _read_head(path: Path) -> tuple[bytes, int]:
    """The first bytes and the size of a clip file; unreadable and empty files are skipped here."""
    if path.is_dir():
        raise SkipSample("unreadable", "a directory, not a file")
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(4096)
    except OSError as err:
        raise SkipSample("unreadable", f"{type(err).__name__}: {err.strerror}") from None
    if size == 0:
        raise SkipSample("zero_byte", "0 bytes")
    return head, size


def container_family(head: bytes) -> str | None:
    """The container a file's first bytes announce (``isobmff`` for mp4/mov/m4v), or None."""
    if head[4:8] in _BMFF_BOXES:
        return "isobmff"
    signatures = {b"\x1a\x45\xdf\xa3": "matroska", b"FLV": "flv", b"OggS": "ogg", b"\x30\x26\xb2\x75": "asf",
                  b"\x00\x00\x01\xba": "mpeg-ps"}  # fmt: skip
    for magic, family in signatures.items():
        if head.startswith(magic):
            return family
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:1] == b"\x47" and head[188:189] == b"\x47":
        return "mpeg-ts"
    return None


def bmff_truncated(path: Path, size: int) -> bool:
    """True when an ISO BMFF file's top-level boxes run past its end or its ``moov`` index is absent:
    the signs of an interrupted download (encoders write ``moov`` last unless the file was optimised)."""
    pos, has_index = 0, False
    with open(path, "rb") as handle:
        while pos < size:
            handle.seek(pos)
            head = handle.read(16)
            length = int.from_bytes(head[:4], "big") if len(head) >= 8 else -1
            if length == 1:  # a 64-bit size follows the type
                length = int.from_bytes(head[8:16], "big") if len(head) == 16 else -1
            elif length == 0:  # the last box, running to the end of the file
                length = size - pos
            if length < 0:
                return True  # the file ends inside a box header
            if length < 8:
                return False  # not a box chain this walk understands: the decoders will judge
            has_index |= head[4:8] == b"moov"
            pos += length
    return pos > size or not has_index


def _probe(path: Path, head: bytes, size: int) -> None:
    """Skip a clip whose container is not media, cut short, undecodable, or lacks a stream we need."""
    import av

    family = container_family(head)
    truncated = family == "isobmff" and bmff_truncated(path, size)
    try:
        with av.open(str(path)) as box:
            n_video, n_audio = len(box.streams.video), len(box.streams.audio)
    except (av.error.FFmpegError, ValueError, OSError) as err:
        if family is None:
            raise SkipSample("not_media", "no audio/video container signature") from None
        if truncated:
            raise SkipSample("truncated", f"{family}: the file ends inside its boxes or has no 'moov' index") from None
        raise SkipSample("corrupt", f"{family} container does not open: {_av_message(err)}") from None
    if truncated:
        raise SkipSample("truncated", f"{family}: the file ends inside its boxes or has no 'moov' index")
    if n_video == 0 and n_audio == 0:
        raise SkipSample("not_media", f"{family or 'container'} without audio or video streams")
    if n_video == 0:
        raise SkipSample("no_video", f"{n_audio} audio stream(s), no video stream")
    if n_audio == 0:
        raise SkipSample("no_audio", f"{n_video} video stream(s), no audio stream")


def _av_message(err: Exception) -> str:
    return f"{type(err).__name__}: {getattr(err, 'strerror', None) or 'error'}"


def _decoder_message(err: Exception, path: Path) -> str:
    """A decoder error without what varies between runs: decord's time-of-day stamp, build paths, the
    clip's absolute path (skip records must be byte-identical across runs and machines)."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[-1]
    text = re.sub(r"\[\d{2}:\d{2}:\d{2}\]\s*", "", text)
    text = re.sub(r"\S*/src/", "", text.replace(str(path), "<clip>"))
    return f"{type(err).__name__}: {text}"[:300]


def uniform_indices(n: int, count: int) -> np.ndarray:
    """``count`` frame indices spread evenly over ``n`` frames: the centre of each of ``count`` equal
    segments (frames repeat when ``n < count``)."""
    return np.minimum(((np.arange(count) + 0.5) * n / count).astype(np.int64), n - 1)


def _decode_video(path: Path, settings: ClipSettings) -> tuple[np.ndarray, str]:
    """(T, S, S, 3) uint8 frames sampled uniformly, resized by the decoder; and which decoder made them.

    decord 0.6 cannot copy frames out for a few small output widths (8, 12, 16, 24, 48, 72 with current
    FFmpeg: "DECORDArrayCopyFromTo: The size must exactly match"); PyAV decodes those.
    """
    from decord import VideoReader

    size = settings.store_size
    try:
        reader = VideoReader(str(path), width=size, height=size, num_threads=1)
        n = len(reader)
        _check_frames(n)
        return reader.get_batch(uniform_indices(n, settings.clip_frames).tolist()).asnumpy(), "decord"
    except SkipSample:
        raise
    except Exception as err:  # noqa: BLE001  (decord raises DECORDError and RuntimeError alike)
        if "DECORDArrayCopyFromTo" not in str(err):
            raise SkipSample("corrupt", f"video: {_decoder_message(err, path)}") from None
    return _decode_video_pyav(path, settings), "pyav"


def _decode_video_pyav(path: Path, settings: ClipSettings) -> np.ndarray:
    import av

    size = settings.store_size
    try:
        with av.open(str(path)) as box:
            stream = box.streams.video[0]
            stream.thread_count = 1
            images = [f.to_ndarray(width=size, height=size, format="rgb24") for f in box.decode(stream)]
    except (av.error.FFmpegError, ValueError, OSError) as err:
        raise SkipSample("corrupt", f"video: {_av_message(err)}") from None
    _check_frames(len(images))
    return np.stack([images[i] for i in uniform_indices(len(images), settings.clip_frames)])


def _check_frames(n: int) -> None:
    if n < MIN_FRAMES:
        raise SkipSample("too_short", f"{n} video frames (at least {MIN_FRAMES} needed)")


def _decode_audio(path: Path, settings: ClipSettings) -> np.ndarray:
    """(N,) float32 mono audio at ``sample_rate``, at most ``max_audio_samples`` long."""
    from decord import AudioReader

    try:
        reader = AudioReader(str(path), sample_rate=settings.sample_rate, mono=True)
        wave = reader[:].asnumpy().reshape(-1)
    except Exception as err:  # noqa: BLE001  (decord raises DECORDError and RuntimeError alike)
        raise SkipSample("corrupt", f"audio: {_decoder_message(err, path)}") from None
    seconds = len(wave) / settings.sample_rate
    if seconds < MIN_AUDIO_SECONDS:
        raise SkipSample("too_short", f"{seconds:.2f} s of audio (at least {MIN_AUDIO_SECONDS:g} s needed)")
    return np.ascontiguousarray(wave[: settings.max_audio_samples], dtype=np.float32)


def shard(key: str) -> str:
    """Sub-folder of a clip's files: 256 folders keep directory listings short for 200k clips."""
    return hashlib.sha1(key.encode()).hexdigest()[:2]


def _write_clip(out: Path, key: str, frames: np.ndarray, wave: np.ndarray) -> dict:
    """Write the frames as one vertically stacked JPEG and the audio as ``.npy``, each atomically."""
    import io

    from PIL import Image

    t, s = frames.shape[0], frames.shape[1]
    buf = io.BytesIO()
    stacked = Image.fromarray(np.ascontiguousarray(frames.reshape(t * s, s, 3)))  # (T*S, S, 3)
    stacked.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=JPEG_SUBSAMPLING, optimize=False)
    jpeg = buf.getvalue()
    frames_rel = f"frames/{shard(key)}/{key}.jpg"
    audio_rel = f"audio/{shard(key)}/{key}.npy"
    atomic_write_bytes(out / frames_rel, jpeg)
    audio_sha = save_npy(out / audio_rel, wave)
    return {"frames": frames_rel, "frames_sha256": hashlib.sha256(jpeg).hexdigest(), "frames_bytes": len(jpeg),
            "audio": audio_rel, "audio_sha256": audio_sha, "audio_bytes": (out / audio_rel).stat().st_size}  # fmt: skip


# ----------------------------------------------------------------------------------------------- prep
def cache_key(cfg: DataConfig) -> str:
    """Prep-time settings only: frames stored, their size, audio rate and length."""
    return f"s{cfg.store_size}-t{cfg.clip_frames}-sr{cfg.sample_rate}-a{cfg.audio_seconds:g}"


def audio_samples(cfg: DataConfig) -> int:
    """Samples of the waveform the loader delivers: ``audio_seconds`` at ``sample_rate``."""
    return round(cfg.audio_seconds * cfg.sample_rate)


def _check_settings(cfg: DataConfig) -> None:
    if cfg.store_size < 8 or cfg.clip_frames < 1 or cfg.sample_rate < 1000 or cfg.audio_seconds <= 0:
        raise UserError(
            f"data.store_size >= 8, data.clip_frames >= 1, data.sample_rate >= 1000 and data.audio_seconds > 0 "
            f"needed, got {cfg.store_size}, {cfg.clip_frames}, {cfg.sample_rate}, {cfg.audio_seconds}"
        )
    if cfg.store_size * cfg.clip_frames > 65500:  # the JPEG format's limit on the stacked image's height
        raise UserError(
            f"data.clip_frames x data.store_size must be at most 65500, got {cfg.clip_frames} x {cfg.store_size}"
        )


def _raw_root(cfg: DataConfig) -> Path:
    if cfg.raw is None:
        raise UserError("vggsound: give --raw DIR, the folder holding vggsound.csv and the clips")
    raw = Path(cfg.raw).expanduser().resolve()
    if not raw.is_dir():
        raise UserError(f"--raw {cfg.raw}: not a folder (expected the folder holding vggsound.csv and the clips)")
    return raw


def prepare(cfg: DataConfig, out: Path, options: PrepOptions) -> dict:
    """Prepare every clip of the csv found under ``cfg.raw`` into ``out``; returns the manifest."""
    _check_settings(cfg)
    raw = _raw_root(cfg)
    (out / "manifest.json").unlink(missing_ok=True)  # incomplete until the new manifest is written
    found, csvs = find_clips(raw)
    csv_path = _locate_csv(raw, csvs)
    rows, repeated = read_csv(csv_path)
    classes = sorted({row.label for row in rows})
    items, missing, layout = plan_items(rows, found, classes, raw)
    settings = ClipSettings(cfg.store_size, cfg.clip_frames, cfg.sample_rate,
                            round(MAX_AUDIO_FACTOR * cfg.audio_seconds * cfg.sample_rate))  # fmt: skip
    result = run_pipeline(items, partial(prepare_clip, settings=settings), out, workers=options.workers,
                          max_skip_frac=options.max_skip_frac, missing=missing, label="prep vggsound")  # fmt: skip
    write_jsonl(out / "index.jsonl", result.records)
    _sweep(out, result.records)
    source = {"csv": str(csv_path), "csv_rows": len(rows), "repeated_rows_dropped": repeated, **layout}
    checksums = {CSV_NAME: file_sha256(csv_path), "index.jsonl": file_sha256(out / "index.jsonl")}
    manifest = _manifest(cfg, classes, result.records, result.skipped, len(missing), source, checksums)
    manifest["run"] = {"reused": result.reused, "decoded": len(items) - result.reused,
                       "workers": options.workers, "seconds": result.seconds}  # fmt: skip
    return manifest


def _sweep(out: Path, records: list[dict]) -> None:
    """Delete files no index row names: temporaries of a killed run, clips of an earlier csv."""
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


def _manifest(
    cfg: DataConfig, classes: list[str], records: list[dict], skipped: list[dict], missing: int,
    source: dict, checksums: dict,
) -> dict:  # fmt: skip
    per_split = {split: [0] * len(classes) for split in ("train", "test")}
    for r in records:
        per_split[r["split"]][r["label"]] += 1
    s, t = cfg.store_size, cfg.clip_frames
    return {
        "dataset": cfg.name,
        "format": FORMAT,
        "n": len(records),
        "num_classes": len(classes),
        "class_names": classes,
        "label_order": "class i = i-th of the csv's unique labels sorted in Python string order",
        "class_counts": [a + b for a, b in zip(per_split["train"], per_split["test"], strict=True)],
        "split_counts": per_split,
        "split_sizes": {k: sum(v) for k, v in per_split.items()},
        "split_note": "test = the csv's test rows; val = data.val_fraction of train, drawn with data.seed at load",
        "modalities": {
            "video": {
                "file": "frames/<xx>/<key>.jpg",
                "stored_shape": [t * s, s, 3],
                "frames": t,
                "size": s,
                "layout": "frames stacked vertically, uint8 RGB",
                "jpeg_quality": JPEG_QUALITY,
                "min_source_frames": MIN_FRAMES,
            },
            "audio": {
                "file": "audio/<xx>/<key>.npy",
                "dtype": "float32",
                "channels": 1,
                "sample_rate": cfg.sample_rate,
                "max_seconds": MAX_AUDIO_FACTOR * cfg.audio_seconds,
                "min_seconds": MIN_AUDIO_SECONDS,
            },
        },
        # what the model sees before input transforms; the crop size is a load-time setting
        "input_dims": {"video": [3, t, "image_size", "image_size"], "audio": [audio_samples(cfg)]},
        "settings": {
            "store_size": s,
            "clip_frames": t,
            "sample_rate": cfg.sample_rate,
            "audio_seconds": cfg.audio_seconds,
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


class VGGSoundReader:
    """Reads clips of one split of a prepared cache (see :class:`mmtool.data.source.SampleReader`).

    Holds paths and numbers only (it is pickled into loader workers) and opens a clip's two files per read.
    Video: the stored (T, S0, S0) frames -> float32 (3, T, S, S), in training one random S x S crop for all
    frames and a random horizontal flip, otherwise resized to S x S; ImageNet-normalised. Audio: float32
    (L,) with :func:`fit_audio`: a random window per epoch in training, the centred one in evaluation.
    Each modality draws from its own child of the sample's ``rng``, so its augmentation is the same
    whichever modalities are read. Without ``augment`` (the paper's setting: "we do not use any kinds of
    data augmentation", paper 001 Sec. 4.1) video is resized in training too, and each clip keeps one
    random audio window, drawn from ``seed`` and the clip, in every epoch and at test: the paper's
    "randomly cropped or tiled" preprocessing, done once per clip.
    """

    def __init__(
        self, folder: str, frames: Sequence[str], audio: Sequence[str], *, stored_frames: int, store_size: int,
        image_size: int, audio_samples: int, augment: bool = True, seed: int = 0,
    ) -> None:  # fmt: skip
        self.folder, self.frames, self.audio = folder, list(frames), list(audio)
        self.stored_frames, self.store_size = stored_frames, store_size
        self.image_size, self.audio_samples = image_size, audio_samples
        self.augment, self.seed = augment, seed

    def read(self, index: int, modalities: Sequence[str], train: bool, rng: np.random.Generator) -> dict:
        video_rng, audio_rng = (np.random.default_rng(s) for s in rng.integers(0, 2**62, size=2))
        out = {}
        if "video" in modalities:
            out["video"] = self.video(index, train, video_rng)
        if "audio" in modalities:
            if self.augment:
                out["audio"] = self.audio_wave(index, train, audio_rng)
            else:  # the paper's preprocessing: one random window per clip, the same in every epoch and at test
                out["audio"] = self.audio_wave(index, True, self._clip_rng(index))
        return out

    def _clip_rng(self, index: int) -> np.random.Generator:
        """A stream fixed per clip (by its file name, not its position in a split) and ``data.seed``."""
        return np.random.default_rng([self.seed, zlib.crc32(self.audio[index].encode())])

    def video(self, index: int, train: bool, rng: np.random.Generator) -> torch.Tensor:
        """(3, T, S, S) float32, normalised."""
        from PIL import Image

        with Image.open(os.path.join(self.folder, self.frames[index])) as image:
            stacked = np.array(image.convert("RGB"))  # (T*S0, S0, 3), writable for torch
        t, s0, s = self.stored_frames, self.store_size, self.image_size
        clip = torch.from_numpy(stacked.reshape(t, s0, s0, 3)).permute(3, 0, 1, 2)  # (3, T, S0, S0) uint8
        if train and self.augment:
            clip = random_crop(clip, (s, s), rng)
            clip = hflip(clip) if rng.random() < 0.5 else clip
        else:
            clip = resize(clip, (s, s))
        clip = clip.float().div_(255.0)  # (3, T, S, S)
        return normalize(clip, IMAGENET_MEAN, IMAGENET_STD)

    def audio_wave(self, index: int, train: bool, rng: np.random.Generator) -> torch.Tensor:
        """(L,) float32 waveform."""
        wave = np.load(os.path.join(self.folder, self.audio[index]), mmap_mode="r")  # reads only the window
        return torch.from_numpy(fit_audio(wave, self.audio_samples, train, rng))


def _fix(folder: Path) -> str:
    return f"re-run `mmtool prep vggsound --raw DIR --root {folder.parents[1]} --force` with the same data.* settings"


def _read_checked(cfg: DataConfig, folder: Path) -> tuple[dict, list[dict]]:
    """The manifest and index rows, after cheap consistency checks (no hashing of clip files)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("format") != FORMAT:
        raise UserError(f"{folder / 'manifest.json'}: data format {manifest.get('format')}, this mmtool reads "
                        f"format {FORMAT} ({_fix(folder)})")  # fmt: skip
    index = folder / "index.jsonl"
    if not index.is_file() or file_sha256(index) != manifest.get("files", {}).get("index.jsonl"):
        raise UserError(f"{index}: missing or does not match manifest.json ({_fix(folder)})")
    rows = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
    said, names = folder / "manifest.json", manifest.get("class_names")
    labels = np.array([r["label"] for r in rows], dtype=np.int64)
    known = len(names) if isinstance(names, list) else None
    check_labels(said, manifest, labels, _fix(folder), str(index), known, "its field 'class_names'")
    sizes = {k: sum(r["split"] == k for r in rows) for k in ("train", "test")}
    if manifest.get("split_sizes") != sizes:
        raise UserError(f"{said}: field 'split_sizes' is {manifest.get('split_sizes')}, but {index} holds {sizes} "
                        f"({_fix(folder)})")  # fmt: skip
    _check_paths(rows, folder, Path(manifest.get("raw") or "the raw folder"), index)
    for i in np.unique(np.linspace(0, len(rows) - 1, min(SPOT_CHECKS, len(rows))).astype(int)):
        for kind in ("frames", "audio"):
            path = folder / rows[i][kind]
            if not path.is_file() or path.stat().st_size != rows[i][f"{kind}_bytes"]:
                raise UserError(f"{path}: missing or not the size index.jsonl records ({_fix(folder)})")
    return manifest, rows


def _check_paths(rows: list[dict], folder: Path, raw: Path, index: Path) -> None:
    """Every file an index row names stays in its folder of the cache (``frames/``, ``audio/``), links
    included; ``source``, the raw clip's path under ``raw`` (recorded, never opened), has no absolute path
    or ``..`` (links under the raw folder are followed by design, see :func:`find_clips`). One lstat a file."""
    cache, recorded = RootGuard(folder, _fix(folder)), RootGuard(raw, _fix(folder))
    for line, row in enumerate(rows, start=1):
        for key in ("frames", "audio"):
            cache.check(row[key], f"{index}:{line} {key}", within=key)
        recorded.check(row["source"], f"{index}:{line} source", links=False)


def _validation_rows(n_train: int, val_fraction: float, seed: int) -> np.ndarray:
    """Positions among the train rows (sorted by key) that form the validation split."""
    if not 0 <= val_fraction < 1:
        raise UserError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng([seed, 2]).permutation(n_train)
    return np.sort(order[: round(n_train * val_fraction)])


def load(cfg: DataConfig, folder: Path) -> Dataset:
    """The prepared cache as a :class:`Dataset` of :class:`DiskSource` splits (train, val, test)."""
    if cfg.image_size < 1:
        raise UserError(f"data.image_size must be positive, got {cfg.image_size}")
    manifest, rows = _read_checked(cfg, folder)
    settings = manifest["settings"]
    train = [r for r in rows if r["split"] == "train"]
    val_at = set(_validation_rows(len(train), cfg.val_fraction, cfg.seed).tolist())
    parts = {"train": [r for i, r in enumerate(train) if i not in val_at],
             "val": [r for i, r in enumerate(train) if i in val_at],
             "test": [r for r in rows if r["split"] == "test"]}  # fmt: skip
    n_audio = audio_samples(cfg)
    splits = {}
    for name, part in parts.items():
        reader = VGGSoundReader(str(folder), [r["frames"] for r in part], [r["audio"] for r in part],
                                stored_frames=settings["clip_frames"], store_size=settings["store_size"],
                                image_size=cfg.image_size, audio_samples=n_audio, augment=cfg.augment,
                                seed=cfg.seed)  # fmt: skip
        targets = torch.tensor([r["label"] for r in part], dtype=torch.long)
        splits[name] = DiskSource(reader, targets, MODALITIES, eval_batch_size=EVAL_BATCH)
    dims = {"video": [3, settings["clip_frames"], cfg.image_size, cfg.image_size], "audio": [n_audio]}
    return Dataset(cfg.name, MODALITIES, manifest["num_classes"], dims, splits, manifest["class_names"])


DATASETS.register("vggsound")(
    DatasetSpec(
        prepare=prepare,
        load=load,
        cache_key=cache_key,
        description="VGG-Sound: 309 sound classes, video + audio clips from YouTube (prepared from --raw)",
        data_format=FORMAT,
        raw_doc="data_prep/vggsound.md",
    )
)
