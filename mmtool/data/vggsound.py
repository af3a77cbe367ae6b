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

Probing, decoding, the cache files, the loader checks and the reader are shared with Kinetics and live in
:mod:`mmtool.data.clips` (one clip) and :mod:`mmtool.data.clips_cache` (the cache); this module holds what is
VGG-Sound's own: the csv, the file names, the splits.

The cache key holds only prep-time settings (store size, frames, sample rate, audio length); the crop size
``image_size``, ``val_fraction`` and ``seed`` are read at load time. The validation split is drawn from the
train clips with ``data.seed``; the test split is the csv's test rows and is never used for model selection.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from mmtool.data import Dataset, PrepOptions
from mmtool.data.clips import VIDEO_EXTENSIONS, ClipSettings, decode_clip, walk_names
from mmtool.data.clips_cache import StackedClipReader, cache_key, clip_manifest, clip_settings, load_clips, sweep
from mmtool.data.pipeline import run_pipeline
from mmtool.data.pipeline_io import PrepItem, file_sha256, write_jsonl
from mmtool.data.registry import DATASETS, DatasetSpec
from mmtool.data.settings import AudioVisualSettings
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

__all__ = ["VGGSoundReader", "clip_readings", "find_clips", "load", "prepare", "prepare_clip", "read_csv"]

FORMAT = 1  # bump when the cache layout changes: `prep` rebuilds caches of another format
CSV_NAME = "vggsound.csv"
VARIANTS = ("canonical", "no_pad", "start_end")  # <id>_<start:06d>, <id>_<start>, <id>_<start>_<end>
_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]+$")

VGGSoundReader = StackedClipReader  # the reader of a VGG-Sound cache (square frames, resized for evaluation)


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
    for folder, name in walk_names(raw):
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
def prepare_clip(item: PrepItem, out: Path, settings: ClipSettings) -> dict:
    """Decode one raw clip and write its frames JPEG and audio ``.npy`` under ``out``; return its index row.

    Raises :class:`SkipSample` with the reason a broken clip cannot be used (see :mod:`mmtool.data.clips`).
    """
    files = decode_clip(Path(item.meta["path"]), out, item.key, settings)
    return {"youtube_id": item.meta["youtube_id"], "start": item.meta["start"], "label": item.label,
            "split": item.split, "source": item.sources[0], **files}  # fmt: skip


# ----------------------------------------------------------------------------------------------- prep
def _raw_root(cfg: DataConfig) -> Path:
    if cfg.raw is None:
        raise UserError("vggsound: give --raw DIR, the folder holding vggsound.csv and the clips")
    raw = Path(cfg.raw).expanduser().resolve()
    if not raw.is_dir():
        raise UserError(f"--raw {cfg.raw}: not a folder (expected the folder holding vggsound.csv and the clips)")
    return raw


def prepare(cfg: DataConfig, out: Path, options: PrepOptions) -> dict:
    """Prepare every clip of the csv found under ``cfg.raw`` into ``out``; returns the manifest."""
    settings = clip_settings(cfg)
    raw = _raw_root(cfg)
    (out / "manifest.json").unlink(missing_ok=True)  # incomplete until the new manifest is written
    found, csvs = find_clips(raw)
    csv_path = _locate_csv(raw, csvs)
    rows, repeated = read_csv(csv_path)
    classes = sorted({row.label for row in rows})
    items, missing, layout = plan_items(rows, found, classes, raw)
    result = run_pipeline(items, partial(prepare_clip, settings=settings), out, workers=options.workers,
                          max_skip_frac=options.max_skip_frac, missing=missing, label="prep vggsound",
                          max_missing_frac=options.max_missing_frac, raw=raw)  # fmt: skip
    write_jsonl(out / "index.jsonl", result.records)
    sweep(out, result.records)
    source = {"csv": str(csv_path), "csv_rows": len(rows), "repeated_rows_dropped": repeated, **layout}
    checksums = {CSV_NAME: file_sha256(csv_path), "index.jsonl": file_sha256(out / "index.jsonl")}
    manifest = clip_manifest(
        cfg,
        data_format=FORMAT,
        classes=classes,
        records=result.records,
        skipped=result.skipped,
        missing=len(missing),
        source=source,
        checksums=checksums,
        label_order="class i = i-th of the csv's unique labels sorted in Python string order",
        split_note="test = the csv's test rows; val = data.val_fraction of train, drawn with data.seed at load",
    )
    manifest["run"] = {"reused": result.reused, "decoded": len(items) - result.reused,
                       "workers": options.workers, "seconds": result.seconds}  # fmt: skip
    return manifest


def load(cfg: DataConfig, folder: Path) -> Dataset:
    """The prepared cache as a :class:`Dataset` of :class:`DiskSource` splits (train, val, test)."""
    return load_clips(cfg, folder, FORMAT)


DATASETS.register("vggsound")(
    DatasetSpec(
        prepare=prepare,
        load=load,
        cache_key=cache_key,
        description="VGG-Sound: 309 sound classes, video + audio clips from YouTube (prepared from --raw)",
        settings=AudioVisualSettings,
        data_format=FORMAT,
        raw_doc="data_prep/vggsound.md",
    )
)
