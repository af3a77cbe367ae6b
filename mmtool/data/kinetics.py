"""Kinetics-400 and Kinetics-Sounds: RGB clips and audio, prepared from a local copy (paper 000, App. A.1).

``mmtool prep kinetics400 --raw DIR`` reads the layout that the cvdfoundation scripts
(github.com/cvdfoundation/kinetics-dataset: ``k400_downloader.sh`` then ``k400_extractor.sh``) leave in
``k400/``, the copy the paper downloads (App. A.1, footnote 8)::

    DIR/annotations/train.csv, val.csv, test.csv   # header: label,youtube_id,time_start,time_end,split[,is_cc]
    DIR/train/<youtube_id>_<time_start:06d>_<time_end:06d>.mp4     # ~240k clips (~10 s, already cut)
    DIR/val/...                                                    # ~20k
    DIR/replacement/replacement_for_corrupted_k400/<same names>.mp4  # fixed copies of ~1300 corrupted train clips

and writes the cache that :mod:`mmtool.data.clips` defines (one stacked JPEG of ``clip_frames`` frames and
a 16 kHz mono ``.npy`` per clip), which the loader reads without decoding video. ``kinetics-sounds`` is the
same preparation restricted to the Kinetics-Sounds classes (``data.classes``).

Choices, and why:

* **Splits.** train = ``annotations/train.csv``; **test = ``annotations/val.csv``**, the official validation
  set: the paper's Kinetics-400 has "240k videos for training and 19k for validation" (Sec. 4.1, App. A.1)
  and reports its test accuracy there, as PySlowFast and AVSlowFast do. ``test.csv`` is not read (its labels
  were first held back for the ActivityNet challenges; the cvdf copy has carried them only since 2021,
  cvdfoundation/kinetics-dataset#12).
  val = ``data.val_fraction`` of the train clips, drawn with ``data.seed`` at load time, for model selection.
* **Labels.** Class ``i`` is the ``i``-th of the unique labels of ``train.csv`` and ``val.csv`` sorted
  alphabetically (App. A.7.2: "we sort the classes alphabetically ... according to the class name"),
  missing clips included, so indices do not depend on which clips a copy lacks. Labels are read with a csv
  parser: the DeepMind files quote names with spaces (``"air drumming"``) and names hold parentheses and
  apostrophes (``passing American football (in game)``, ``massaging person's head``).
* **Files.** A row's clip is ``<youtube_id>_<time_start:06d>_<time_end:06d>`` with any of the video
  extensions, found anywhere under ``DIR`` (links followed, each folder once; so the per-class symlink tree
  of the repository's ``arrange_by_classes.py`` works too). When several files carry the name, the copy under
  ``replacement/`` wins (the cvdf fix of a corrupted download), then the one in the row's own split folder
  (``train/``, ``val/``), then by extension and path.
* **Frames (PySlowFast: short side 256, 224 crops).** ``clip_frames`` (32) frames sampled uniformly over
  the clip, resized by the decoder so that the short side is ``store_size`` (256) with the aspect ratio
  kept. Training takes one random ``image_size`` (224) square crop for all frames and a random horizontal
  flip; evaluation the centred crop.
* **Audio.** The whole track at ``sample_rate`` (16 kHz), mono, float32 (mmaction2's audio features are
  computed from 16 kHz audio); the loader crops or tiles it to ``audio_seconds`` (10 s, a whole Kinetics
  clip: the frames span the whole clip, so the aligned audio does too). The spectrogram is the audio
  encoder's ``stft`` input transform, computed on the training device (see ``data_prep/kinetics.md``).
* **Clip bounds.** The cvdf files are already cut to [time_start, time_end). A file that runs more than
  ``UNTRIMMED_SLACK`` (2 s) longer than its bounds and reaches ``time_end`` is the whole YouTube video (an
  untrimmed download): only [time_start, time_end) of it is read, and the index row records ``cut``.
* **Broken and missing clips** are those of :mod:`mmtool.data.clips`: a row without a file is *missing*
  (deleted from YouTube; ``missing.jsonl``, never counted against the failure budget), a present but
  unusable file is skipped with its reason (``skipped.jsonl``); clips without an audio track are skipped as
  ``no_audio``, since both modalities are needed.

Deviations from the paper, stated plainly:

* **Encoders.** The paper encodes Kinetics-400 with 50- or 101-layer ResNets (SlowFast-50/101 for RGB, App.
  A.2, Table 6); the recipes use mmtool's 18-layer ``r3d18`` (video) and ``resnet18`` (2D, on the
  spectrogram), the encoders of its VGG-Sound setting. Numbers are therefore not comparable with Tables 5-7.
* **Temporal sampling.** PySlowFast (SLOWFAST_8x8_R50) trains on 64 consecutive frames at 30 fps (32 taken
  at stride 2) at a random position, with scale jitter [256, 320] before the crop, and tests with 10
  uniformly spaced clips x 3 crops; mmtool stores ``clip_frames`` frames spread over the whole clip, reads
  one view per clip, and crops without scale jitter.
* **Spectrogram.** mmaction2 feeds an 80-bin log-mel spectrogram (32 ms window, 16 ms hop); the recipes use
  the ``logmel`` input transform with its settings (:mod:`mmtool.models.transforms`).

Kinetics-Sounds (Arandjelovic & Zisserman, "Look, Listen and Learn", ICCV 2017) was defined there as 34
classes "potentially manifested visually and aurally", named in a pre-release Kinetics taxonomy, some of
which are not Kinetics-400 names ("blowing out", "dribbling ball", "mowing the lawn by pushing
lawnmower", ...). Later work uses 31 or 32 Kinetics-400 classes without always listing them; the default
here is the 31-class list published by the AdaMML authors (IBM/AdaMML issue #3), the list the 31-class
setting of the modality-imbalance literature (OGM-GE and its successors) refers to. The 32-class variant
(pritamqu/CrissCross issue #4) adds ``strumming guitar``. The list is the recipe key ``data.classes``
(:class:`~mmtool.data.settings.KineticsSoundsSettings`); a list other than the default gets a cache of its
own (its key ends in a hash of the sorted names) and the manifest records it.
"""

from __future__ import annotations

import csv
import hashlib
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
from mmtool.data.clips_cache import cache_key, clip_manifest, clip_settings, load_clips, sweep
from mmtool.data.pipeline import run_pipeline
from mmtool.data.pipeline_io import PrepItem, file_sha256, write_jsonl
from mmtool.data.registry import DATASETS, DatasetSpec, dataset_settings
from mmtool.data.settings import KINETICS_SOUNDS, AudioVisualSettings, KineticsSoundsSettings
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

FORMAT = 1  # bump when the cache layout changes: `prep` rebuilds caches of another format
ANNOTATIONS = ("train", "val")  # annotations/<name>.csv read, in this order
STORED_SPLIT = {"train": "train", "val": "test"}  # the official validation set is the test split
SPLIT_VALUES = {"train": ("train",), "val": ("val", "validate", "valid")}  # what the csv's split column may say
COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
REPLACEMENT = "replacement"  # cvdf: replacement/replacement_for_corrupted_k400/
_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_CLIP_NAME = re.compile(r"^(?P<id>[A-Za-z0-9_-]+)_(?P<start>\d{6,})_(?P<end>\d{6,})$")

KINETICS_SOUNDS_SOURCE = "https://github.com/IBM/AdaMML/issues/3 (31 classes)"  # of the default data.classes


# ------------------------------------------------------------------------------------------ annotations
@dataclass(frozen=True)
class Row:
    """One row of ``annotations/train.csv`` or ``val.csv``."""

    label: str
    youtube_id: str
    start: int  # time_start, seconds
    end: int  # time_end, seconds
    split: str  # the annotation file: train | val

    @property
    def key(self) -> str:
        """Unique, file-name safe: the cvdf clip name without its extension."""
        return clip_key(self.youtube_id, self.start, self.end)


def clip_key(youtube_id: str, start: int, end: int) -> str:
    """``<youtube_id>_<start:06d>_<end:06d>``, the name of a clip file without its extension."""
    return f"{youtube_id}_{start:06d}_{end:06d}"


def read_annotations(path: Path, split: str) -> tuple[list[Row], int]:
    """Parse a Kinetics annotation csv: a header naming at least ``label,youtube_id,time_start,time_end,split``
    (in any order; other columns such as ``is_cc`` are ignored), then one row per clip.

    Returns (rows in file order, number of repeated rows dropped; the first of each clip is kept). A
    malformed line is a :class:`UserError` naming the file and line.
    """
    rows: dict[str, Row] = {}
    repeated = 0
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        columns = None
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            if columns is None:
                columns = _header(path, reader.line_num, fields)
                continue
            row = _parse_row(f"{path}:{reader.line_num}", fields, columns, split)
            repeated += row.key in rows
            rows.setdefault(row.key, row)
    if not rows:
        raise UserError(f"{path}: no rows (expected a header and label,youtube_id,time_start,time_end,split lines)")
    return list(rows.values()), repeated


def _header(path: Path, line: int, fields: list[str]) -> dict[str, int]:
    names = [f.strip().lower() for f in fields]
    lacking = [c for c in COLUMNS if c not in names]
    if lacking:
        raise UserError(f"{path}:{line}: a header naming the columns {','.join(COLUMNS)} expected, got "
                        f"{','.join(fields)!r} (no {', '.join(lacking)})")  # fmt: skip
    return {"width": len(names), **{c: names.index(c) for c in COLUMNS}}


def _parse_row(where: str, fields: list[str], columns: dict[str, int], split: str) -> Row:
    if len(fields) != columns["width"]:
        raise UserError(f"{where}: expected {columns['width']} fields as the header names, got {len(fields)}")
    label, youtube_id, start_text, end_text, said = (fields[columns[c]].strip() for c in COLUMNS)
    start, end = _seconds(start_text), _seconds(end_text)
    if start is None or end is None:
        raise UserError(f"{where}: time_start {start_text!r} and time_end {end_text!r} must be whole seconds")
    if end <= start:
        raise UserError(f"{where}: time_end {end} is not after time_start {start}")
    if not _YOUTUBE_ID.match(youtube_id):
        raise UserError(f"{where}: youtube id {youtube_id!r} has characters outside [A-Za-z0-9_-]")
    if said.lower() not in SPLIT_VALUES[split]:
        raise UserError(f"{where}: split {said!r} in the {split} annotations (expected {SPLIT_VALUES[split][0]!r})")
    if not label:
        raise UserError(f"{where}: empty label")
    return Row(label, youtube_id, start, end, split)


def _seconds(text: str) -> int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() and value >= 0 else None


def read_all_annotations(raw: Path) -> tuple[list[Row], dict[str, Path], dict[str, Any]]:
    """The train and val rows of ``raw/annotations/`` (a clip listed twice is kept where it comes first),
    the csv paths, and what the manifest records about them."""
    paths = {name: raw / "annotations" / f"{name}.csv" for name in ANNOTATIONS}
    for path in paths.values():
        if not path.is_file():
            raise UserError(f"{path}: not found (--raw DIR holds the cvdfoundation layout: DIR/annotations/"
                            "train.csv and val.csv, DIR/train/ and DIR/val/ with the clips)")  # fmt: skip
    rows: dict[str, Row] = {}
    counts, repeated = {}, 0
    for name, path in paths.items():
        part, again = read_annotations(path, name)
        counts[name] = len(part) + again
        repeated += again + sum(row.key in rows for row in part)
        for row in part:
            rows.setdefault(row.key, row)
    source = {"annotations": {k: str(p) for k, p in paths.items()}, "csv_rows": counts,
              "repeated_rows_dropped": repeated,
              "not_read": "annotations/test.csv (the test split is val.csv)"}  # fmt: skip
    return list(rows.values()), paths, source


# ----------------------------------------------------------------------------------------- finding clips
def find_clip_files(raw: Path) -> dict[str, list[Path]]:
    """Walk ``raw`` (following links, once per folder) for files named ``<id>_<start>_<end>.<video ext>``.

    Folders named like clips are collected too: such a path exists, so its row is ``unreadable``, not
    missing. Returns {clip key: candidate paths}.
    """
    found: dict[str, list[Path]] = {}
    for folder, name in walk_names(raw):
        stem, suffix = os.path.splitext(name)
        match = _CLIP_NAME.match(stem)
        if match and suffix.lower() in VIDEO_EXTENSIONS:
            key = clip_key(match["id"], int(match["start"]), int(match["end"]))
            found.setdefault(key, []).append(Path(folder, name))
    return found


def _rank(path: Path, raw: Path, split: str) -> tuple:
    """Which of several files of one clip to prepare (see the module docstring)."""
    rel = path.relative_to(raw)
    place = 0 if any(p.startswith(REPLACEMENT) for p in rel.parts[:-1]) else 1 if rel.parts[0] == split else 2
    return place, VIDEO_EXTENSIONS.index(path.suffix.lower()), rel.as_posix()


def plan_items(
    rows: Sequence[Row], found: dict[str, list[Path]], classes: Sequence[str], raw: Path
) -> tuple[list[PrepItem], list[dict], dict[str, Any]]:
    """Match annotation rows with files: (items to prepare, missing rows, how the layout was matched)."""
    index = {name: i for i, name in enumerate(classes)}
    items, missing = [], []
    folders, extensions = Counter(), Counter()
    several = replaced = 0
    for row in rows:
        candidates = found.get(row.key, [])
        if not candidates:
            missing.append({"key": row.key, "youtube_id": row.youtube_id, "time_start": row.start,
                            "time_end": row.end, "label": row.label, "split": STORED_SPLIT[row.split],
                            "expected": f"{row.split}/{row.key}.mp4"})  # fmt: skip
            continue
        chosen = min(candidates, key=lambda p: _rank(p, raw, row.split))
        rel = chosen.relative_to(raw)
        several += len(candidates) > 1
        replaced += _rank(chosen, raw, row.split)[0] == 0
        folders[rel.parent.as_posix()] += 1
        extensions[chosen.suffix.lower()] += 1
        meta = {"path": str(chosen), "youtube_id": row.youtube_id, "start": row.start, "end": row.end}
        items.append(PrepItem(row.key, STORED_SPLIT[row.split], index[row.label], (rel.as_posix(),), meta))
    layout = {"folders": dict(sorted(folders.items())), "extensions": dict(sorted(extensions.items())),
              "rows_with_several_files": several, "from_replacement": replaced}  # fmt: skip
    return sorted(items, key=lambda it: it.key), missing, layout


# ------------------------------------------------------------------------------------------- one clip
def prepare_clip(item: PrepItem, out: Path, settings: ClipSettings) -> dict:
    """Decode one raw clip and write its frames JPEG and audio ``.npy`` under ``out``; return its index row.

    Raises :class:`SkipSample` with the reason a broken clip cannot be used (see :mod:`mmtool.data.clips`).
    """
    meta = item.meta
    files = decode_clip(Path(meta["path"]), out, item.key, settings, bounds=(meta["start"], meta["end"]))
    return {"youtube_id": meta["youtube_id"], "time_start": meta["start"], "time_end": meta["end"],
            "label": item.label, "split": item.split, "source": item.sources[0], **files}  # fmt: skip


# ----------------------------------------------------------------------------------------------- prep
def _raw_root(cfg: DataConfig) -> Path:
    where = "the cvdfoundation k400/ folder: annotations/, train/, val/"
    if cfg.raw is None:
        raise UserError(f"{cfg.name}: give --raw DIR, {where}")
    raw = Path(cfg.raw).expanduser().resolve()
    if not raw.is_dir():
        raise UserError(f"--raw {cfg.raw}: not a folder (expected {where})")
    return raw


def _classes(rows: list[Row], subset: Sequence[str] | None, raw: Path) -> list[str]:
    """The class list: every label of the annotations, or ``subset``, each of which they must list."""
    labels = {row.label for row in rows}
    if subset is None:
        return sorted(labels)
    absent = sorted(set(subset) - labels)
    if absent:
        raise UserError(f"{raw / 'annotations'}: the Kinetics-Sounds classes {absent} are not in train.csv or "
                        "val.csv (is this a Kinetics-400 copy?)")  # fmt: skip
    return sorted(subset)


def prepare(cfg: DataConfig, out: Path, options: PrepOptions, subset: Sequence[str] | None = None) -> dict:
    """Prepare every annotated clip found under ``cfg.raw`` (of the ``subset`` classes, where given) into
    ``out``; returns the manifest."""
    settings = clip_settings(cfg, keep_aspect=True)
    raw = _raw_root(cfg)
    (out / "manifest.json").unlink(missing_ok=True)  # incomplete until the new manifest is written
    rows, paths, source = read_all_annotations(raw)
    classes = _classes(rows, subset, raw)
    wanted = set(classes)
    kept = [row for row in rows if row.label in wanted]
    items, missing, layout = plan_items(kept, find_clip_files(raw), classes, raw)
    result = run_pipeline(items, partial(prepare_clip, settings=settings), out, workers=options.workers,
                          max_skip_frac=options.max_skip_frac, missing=missing, label=f"prep {cfg.name}",
                          max_missing_frac=options.max_missing_frac, raw=raw)  # fmt: skip
    write_jsonl(out / "index.jsonl", result.records)
    sweep(out, result.records)
    if subset is not None:
        listed = KINETICS_SOUNDS_SOURCE if sorted(subset) == sorted(KINETICS_SOUNDS) else "data.classes"
        source["subset"] = {"classes": len(classes), "list": listed, "rows": len(kept)}
    checksums = {f"annotations/{k}.csv": file_sha256(p) for k, p in paths.items()}
    checksums["index.jsonl"] = file_sha256(out / "index.jsonl")
    manifest = clip_manifest(
        cfg, data_format=FORMAT, classes=classes, records=result.records, skipped=result.skipped,
        missing=len(missing), source={**source, **layout}, checksums=checksums, keep_aspect=True,
        label_order="class i = i-th of the class names sorted alphabetically (App. A.7.2), missing clips included",
        split_note="test = annotations/val.csv, the official validation set (the paper's test numbers); "
        "val = data.val_fraction of train, drawn with data.seed at load",
    )  # fmt: skip
    manifest["run"] = {"reused": result.reused, "decoded": len(items) - result.reused,
                       "workers": options.workers, "seconds": result.seconds}  # fmt: skip
    return manifest


# ------------------------------------------------------------------------------------------- loading
def load(cfg: DataConfig, folder: Path, subset: Sequence[str] | None = None) -> Dataset:
    """The prepared cache as a :class:`Dataset` of :class:`DiskSource` splits (train, val, test); evaluation
    reads the centred crop of the frames stored with their aspect ratio."""
    dataset = load_clips(cfg, folder, FORMAT, eval_crop=True)
    if subset is not None and dataset.class_names != sorted(subset):
        redo = f"re-run `mmtool prep {cfg.name} --raw DIR --force`"
        raise UserError(f"{folder / 'manifest.json'}: field 'class_names' is not the Kinetics-Sounds list of "
                        f"data.classes ({len(subset)} classes; {redo})")  # fmt: skip
    return dataset


def sounds_classes(cfg: DataConfig) -> tuple[str, ...]:
    """Kinetics-Sounds' ``data.classes``: at least two, each once."""
    classes = dataset_settings(cfg, KineticsSoundsSettings).classes
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if len(classes) < 2 or repeated:
        raise UserError(f"data.classes: expected two or more Kinetics-400 class names, each once "
                        f"(got {len(classes)}{', repeated: ' + ', '.join(repeated) if repeated else ''})")  # fmt: skip
    return classes


def sounds_cache_key(cfg: DataConfig) -> str:
    """The clip cache key; a class list other than the default adds a hash of its sorted names."""
    classes = sounds_classes(cfg)
    if sorted(classes) == sorted(KINETICS_SOUNDS):
        return cache_key(cfg)
    digest = hashlib.sha256("\n".join(sorted(classes)).encode()).hexdigest()[:8]
    return f"{cache_key(cfg)}-c{len(classes)}-{digest}"


def _prepare_sounds(cfg: DataConfig, out: Path, options: PrepOptions) -> dict:
    return prepare(cfg, out, options, subset=sounds_classes(cfg))


def _load_sounds(cfg: DataConfig, folder: Path) -> Dataset:
    return load(cfg, folder, subset=sounds_classes(cfg))


DATASETS.register("kinetics400")(
    DatasetSpec(
        prepare=prepare,
        load=load,
        cache_key=cache_key,
        description="Kinetics-400: 400 human actions, RGB + audio of ~10 s YouTube clips (prepared from --raw)",
        settings=AudioVisualSettings,
        data_format=FORMAT,
        raw_doc="data_prep/kinetics.md",
    )
)
DATASETS.register("kinetics-sounds")(
    DatasetSpec(
        prepare=_prepare_sounds,
        load=_load_sounds,
        cache_key=sounds_cache_key,
        description="Kinetics-Sounds: Kinetics-400 classes heard as well as seen, 31 by default (data.classes)",
        settings=KineticsSoundsSettings,
        data_format=FORMAT,
        raw_doc="data_prep/kinetics.md",
    )
)
