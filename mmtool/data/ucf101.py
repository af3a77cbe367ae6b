"""UCF101 (Soomro et al., 2012): RGB frames and TV-L1 optical flow, as used in App. A.1.

Prep (``mmtool prep ucf101 --raw DIR``) reads the official split lists and the frame folders distributed
with the two-stream fusion work (Feichtenhofer et al., 2016): ``jpegs_256/`` (RGB) and ``tvl1_flow/{u,v}/``
(x/y flow, greyscale, 128 = no motion, one frame fewer than RGB). Without the jpeg folders the RGB frames
come from ``UCF-101/*.avi``, decoded with decord and stored in the cache as JPEGs, so one reader serves
both sources. Flow cannot be computed from the videos here: without ``tvl1_flow/`` the dataset has the
``rgb`` modality only. The layout, quirks and choices are described in ``data_prep/ucf101.md``.

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

import functools
import hashlib
import io
import json
import re
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmtool.data import Dataset, DiskSource, PrepOptions, RootGuard, check_labels
from mmtool.data.pipeline import PrepItem, SkipSample, atomic_dir, file_sha256, read_jsonl, run_pipeline, write_jsonl
from mmtool.data.registry import DATASETS, DatasetSpec, dataset_settings
from mmtool.data.settings import UCF101Settings
from mmtool.data.transforms import IMAGENET_MEAN, IMAGENET_STD, hflip, normalize, random_crop, resize
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

FORMAT = 1  # bump when the index or the extracted frames change
NAME = "ucf101"
SPLITS = (1, 2, 3)
LISTS = "ucfTrainTestlist"
RGB_FRAMES = "jpegs_256"
FLOW = "tvl1_flow"
VIDEOS = "UCF-101"
EXTRACTED = "frames"  # cache sub-folder of the RGB frames decoded from .avi files
INDEX = "index.jsonl"
JPEG_QUALITY = 90  # extracted frames: fixed quality, no metadata -> the same bytes on every run
TRAIN_SCALE = 256 / 224  # App. A.1 frames are stored with a 256 short side and cropped to 224
EVAL_BATCH = 64
STEM = re.compile(r"^v_(?P<cls>.+)_g(?P<group>\d+)_c(?P<clip>\d+)$")
RGB_SOURCES = ("frames", "video", "auto")
NO_FLOW_NOTE = f"no {FLOW}/u and {FLOW}/v: flow is not computed from videos, so this cache has the rgb modality only"


# --------------------------------------------------------------------------------------------- split lists
@dataclass(frozen=True)
class ListedClip:
    """One clip of the split lists: ``name`` is the video stem as listed (``v_HandStandPushups_g01_c01``)."""

    name: str
    class_name: str  # classInd.txt spelling
    label: int  # 0-based
    group: int
    clip: int
    list_path: str  # as listed, e.g. "HandstandPushups/v_HandStandPushups_g01_c01.avi"
    splits: tuple[str | None, str | None, str | None]  # "train" / "test" / None (not listed) for splits 1-3


def read_list(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a split file as (1-based line number, text), whatever the line endings.

    Raises:
        UserError: the file does not exist.
    """
    if not path.is_file():
        raise UserError(f"missing split file {path} (expected the official {LISTS}/ folder under data.raw)")
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]


def parse_class_index(path: Path) -> list[str]:
    """Class names of ``classInd.txt`` ("1 ApplyEyeMakeup" ...), position = 0-based label.

    Raises:
        UserError: a line is not "INDEX NAME" or the indices are not 1, 2, 3, ...
    """
    names: list[str] = []
    for lineno, line in read_list(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(names) + 1:
            raise UserError(f"{path}:{lineno}: expected '{len(names) + 1} ClassName', got {line!r}")
        if parts[1] in (".", "..") or "/" in parts[1] or "\\" in parts[1]:  # the class is a folder in the lists
            raise UserError(f"{path}:{lineno}: class {parts[1]!r} is not a plain folder name")
        names.append(parts[1])
    if not names:
        raise UserError(f"{path}: no classes listed")
    return names


def parse_split_lists(lists: Path) -> tuple[list[str], list[ListedClip]]:
    """Class names and every clip of ``trainlist0{1,2,3}.txt``/``testlist0{1,2,3}.txt``, indexed once.

    Class folders are matched to ``classInd.txt`` case-insensitively (the real lists spell some classes
    differently from their file names); a train list's label must agree with the folder's class.

    Raises:
        UserError: a malformed line, an unknown class, a wrong label, or a clip in both lists of a split.
    """
    classes = parse_class_index(lists / "classInd.txt")
    by_lower = {c.lower(): i for i, c in enumerate(classes)}
    seen: dict[str, dict] = {}
    for split in SPLITS:
        for kind in ("train", "test"):
            path = lists / f"{kind}list{split:02d}.txt"
            for lineno, line in read_list(path):
                where = f"{path}:{lineno}"
                name, label, list_path = _parse_list_line(line, kind, by_lower, classes, where)
                entry = seen.setdefault(name, {"label": label, "list_path": list_path, "splits": [None] * 3})
                if entry["label"] != label or entry["splits"][split - 1] not in (None, kind):
                    raise UserError(f"{where}: {name} is listed with another class or in both lists of split {split}")
                entry["splits"][split - 1] = kind
    return classes, [_listed(name, e, classes) for name, e in sorted(seen.items())]


def _parse_list_line(
    line: str, kind: str, by_lower: dict[str, int], classes: list[str], where: str
) -> tuple[str, int, str]:
    """(video stem, 0-based label, listed path) of one "Class/v_Class_gXX_cYY.avi [LABEL]" line."""
    parts = line.split()
    list_path = parts[0].replace("\\", "/")
    if list_path.startswith("/") or ".." in list_path.split("/"):
        raise UserError(f"{where}: {parts[0]!r} leads outside the raw folder (an absolute path or '..')")
    folder, _, file_name = list_path.rpartition("/")
    stem = file_name.rsplit(".", 1)[0]
    if len(parts) != (2 if kind == "train" else 1) or not STEM.match(stem) or folder.lower() not in by_lower:
        example = "Class/v_Class_g08_c01.avi" + (" LABEL" if kind == "train" else "")
        raise UserError(f"{where}: expected '{example}' with a class of classInd.txt, got {line!r}")
    label = by_lower[folder.lower()]
    if kind == "train" and parts[1] != str(label + 1):
        raise UserError(f"{where}: label {parts[1]} but classInd.txt numbers {classes[label]} as {label + 1}")
    return stem, label, list_path


def _listed(name: str, entry: dict, classes: list[str]) -> ListedClip:
    match = STEM.match(name)
    assert match is not None  # checked while parsing
    return ListedClip(
        name,
        classes[entry["label"]],
        entry["label"],
        int(match["group"]),
        int(match["clip"]),
        entry["list_path"],
        tuple(entry["splits"]),
    )


# --------------------------------------------------------------------------------------------- raw layout
class FolderIndex:
    """Names in one folder, looked up case-insensitively (an exact match wins); listed once, lazily."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._names: dict[str, list[str]] | None = None

    def find(self, name: str) -> str | None:
        """The on-disk spelling of ``name`` in this folder, or None."""
        if self._names is None:
            self._names = {}
            for entry in sorted(p.name for p in self.folder.iterdir()) if self.folder.is_dir() else []:
                self._names.setdefault(entry.lower(), []).append(entry)
        found = self._names.get(name.lower(), [])
        return name if name in found else (found[0] if found else None)


@dataclass(frozen=True)
class Layout:
    """Which raw folders prep reads: ``rgb_source`` "frames" (jpegs_256/) or "video" (UCF-101/*.avi)."""

    raw: Path
    rgb_source: str
    flow: bool  # tvl1_flow/u and tvl1_flow/v exist

    @classmethod
    def resolve(cls, cfg: DataConfig) -> Layout:
        """The layout under ``data.raw`` for ``data.rgb_source`` (auto: frames when jpegs_256/ exists).

        Raises:
            UserError: no raw folder, an unknown rgb_source, or the folders it needs are absent.
        """
        if not cfg.raw:
            raise UserError("ucf101 needs its raw folder: `mmtool prep ucf101 --raw DIR` (see data_prep/ucf101.md)")
        raw = Path(cfg.raw).expanduser().resolve()
        if not (raw / LISTS).is_dir():
            raise UserError(f"{raw / LISTS} not found: --raw must hold {LISTS}/ (see data_prep/ucf101.md)")
        wanted = settings(cfg).rgb_source
        if wanted not in RGB_SOURCES:
            raise UserError(f"data.rgb_source must be one of {', '.join(RGB_SOURCES)}, got {wanted!r}")
        source = wanted
        if source == "auto":
            source = "frames" if (raw / RGB_FRAMES).is_dir() else "video"
        needed = raw / (RGB_FRAMES if source == "frames" else VIDEOS)
        if not needed.is_dir():
            raise UserError(f"{needed} not found (data.rgb_source={wanted}; see data_prep/ucf101.md)")
        flow = all((raw / FLOW / axis).is_dir() for axis in ("u", "v"))
        return cls(raw, source, flow)

    def describe(self) -> dict:
        return {
            "raw": str(self.raw),
            "split_lists": LISTS,
            "rgb_source": self.rgb_source,
            "rgb": RGB_FRAMES if self.rgb_source == "frames" else f"{VIDEOS} (decoded to {EXTRACTED}/ in the cache)",
            "rgb_base": "raw" if self.rgb_source == "frames" else "cache",
            "flow": FLOW if self.flow else None,
            "flow_note": None if self.flow else NO_FLOW_NOTE,
        }


class RawFinder:
    """Finds each listed clip's raw files, tolerating case differences between lists and disk."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        raw = layout.raw
        self.rgb = FolderIndex(raw / RGB_FRAMES)
        self.flow = {axis: FolderIndex(raw / FLOW / axis) for axis in ("u", "v")}
        self.classes = FolderIndex(raw / VIDEOS)
        self.videos: dict[str, FolderIndex] = {}
        self.case_mismatches: set[str] = set()

    def locate(self, clip: ListedClip) -> tuple[dict[str, str], list[str]]:
        """({part: path relative to raw} found, [expected relative paths that are absent])."""
        wanted: dict[str, tuple[str, str | None]] = {}
        if self.layout.rgb_source == "frames":
            wanted["rgb_dir"] = (f"{RGB_FRAMES}/{clip.name}", self._found(self.rgb, clip.name, RGB_FRAMES))
        else:
            wanted["video"] = (f"{VIDEOS}/{clip.list_path}", self._video(clip))
        if self.layout.flow:
            for axis in ("u", "v"):
                rel = f"{FLOW}/{axis}"
                wanted[f"flow_{axis}_dir"] = (f"{rel}/{clip.name}", self._found(self.flow[axis], clip.name, rel))
        found = {part: path for part, (_, path) in wanted.items() if path is not None}
        return found, [expected for expected, path in wanted.values() if path is None]

    def _found(self, folder: FolderIndex, name: str, rel: str) -> str | None:
        on_disk = folder.find(name)
        if on_disk is None:
            return None
        if on_disk != name:
            self.case_mismatches.add(f"{rel}: {_class_part(name)} -> {_class_part(on_disk)}")
        return f"{rel}/{on_disk}"

    def _video(self, clip: ListedClip) -> str | None:
        listed_folder, _, file_name = clip.list_path.rpartition("/")
        folder = self._found(self.classes, listed_folder, VIDEOS)
        if folder is None:
            return None
        files = self.videos.setdefault(folder, FolderIndex(self.layout.raw / folder))
        return self._found(files, file_name, folder)


def _class_part(name: str) -> str:
    match = STEM.match(Path(name).stem)
    return match["cls"] if match else name


# --------------------------------------------------------------------------------------------- prep
def settings(cfg: DataConfig) -> UCF101Settings:
    """The UCF101 settings of ``cfg`` (``data.split``, ``data.flow_stack``, ...)."""
    return dataset_settings(cfg, UCF101Settings)


def _cache_key(cfg: DataConfig) -> str:
    # only what prep's output depends on; image_size, split and val_fraction are applied at load time
    s = settings(cfg)
    return f"{s.rgb_source}-stack{s.flow_stack}"


def _prepare(cfg: DataConfig, out: Path, options: PrepOptions) -> dict:
    layout = Layout.resolve(cfg)
    flow_stack = settings(cfg).flow_stack
    if flow_stack < 1:
        raise UserError(f"data.flow_stack must be at least 1, got {flow_stack}")
    classes, clips = parse_split_lists(layout.raw / LISTS)
    items, missing, finder = _plan(layout, clips)
    _remove_stale_temporaries(out)
    process = functools.partial(process_clip, raw=str(layout.raw), flow_stack=flow_stack)
    result = run_pipeline(
        items,
        process,
        out,
        workers=options.workers,
        max_skip_frac=options.max_skip_frac,
        missing=missing,
        max_missing_frac=options.max_missing_frac,
        raw=layout.raw,
        label="prep ucf101",
    )
    write_jsonl(out / INDEX, result.records)
    manifest = _manifest(cfg, layout, classes, result.records, out)
    manifest.update(
        skipped=[{"key": s["key"], "reason": s["reason"]} for s in result.skipped],
        skipped_counts=dict(sorted(Counter(s["reason"] for s in result.skipped).items())),
        missing=len(result.missing),
        case_mismatches=sorted(finder.case_mismatches),
        run=_run_summary(len(items), result.reused, result.seconds),
    )
    return manifest


def _run_summary(items: int, reused: int, seconds: float) -> dict:
    """How this run went (not what it produced): a resumed prep reuses the clips an interrupted one finished."""
    return {"items": items, "reused": reused, "processed": items - reused, "seconds": seconds}


def _plan(layout: Layout, clips: list[ListedClip]) -> tuple[list[PrepItem], list[dict], RawFinder]:
    """Prep items for the clips found on disk; the others are *missing* (reported, never counted)."""
    finder = RawFinder(layout)
    items, missing = [], []
    for clip in clips:
        found, absent = finder.locate(clip)
        membership = ",".join(s or "-" for s in clip.splits)  # split 1,2,3
        if absent:
            missing.append({"key": clip.name, "label": clip.label, "splits": membership, "absent": absent})
            continue
        meta = {"class": clip.class_name, "group": clip.group, "clip": clip.clip, "splits": clip.splits, **found}
        items.append(PrepItem(clip.name, membership, clip.label, tuple(found.values()), meta))
    return items, missing, finder


def _remove_stale_temporaries(out: Path) -> None:
    """Half-written folders/files of a killed run (named ``.<name>.tmp*``) are never part of the cache."""
    for folder in (out, out / EXTRACTED):
        for stale in folder.glob(".*.tmp*") if folder.is_dir() else []:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()


def process_clip(item: PrepItem, out: Path, *, raw: str, flow_stack: int) -> dict:
    """Check one clip's frames (or extract them from its video) and return its index row.

    Raises:
        SkipSample: the clip is broken (see data_prep/ucf101.md for the reasons).
    """
    meta, base = item.meta, Path(raw)
    row: dict[str, Any] = {"class": meta["class"], "label": item.label, "group": meta["group"], "clip": meta["clip"]}
    row.update({f"split{s}": meta["splits"][s - 1] for s in SPLITS})
    if "flow_u_dir" in meta:  # first: a clip skipped for its flow leaves no extracted frames behind
        counts = [check_frames(base / meta[f"flow_{a}_dir"], "flow", flow_stack) for a in ("u", "v")]
        row.update(flow_u_dir=meta["flow_u_dir"], flow_v_dir=meta["flow_v_dir"], flow_frames=min(counts))
    if "video" in meta:
        row["video"] = meta["video"]
        row["rgb_dir"] = f"{EXTRACTED}/{item.key}"
        row["rgb_frames"] = extract_frames(base / meta["video"], Path(out) / EXTRACTED / item.key)
    else:
        row["rgb_dir"] = meta["rgb_dir"]
        row["rgb_frames"] = check_frames(base / meta["rgb_dir"], "rgb", 1)
    return row


def frame_name(index: int) -> str:
    """File name of frame ``index`` (0-based) in jpegs_256/, tvl1_flow/ and the extracted folders."""
    return f"frame{index + 1:06d}.jpg"


def check_frames(folder: Path, kind: str, need: int) -> int:
    """Number of frames in ``folder`` after decoding every one of them (the reader may pick any).

    Reasons: an empty RGB folder is ``no_video`` (it holds no picture at all); fewer than ``need`` frames is
    ``too_short``; frame numbers with gaps or an undecodable JPEG is ``corrupt``; a frame that cannot be
    opened (e.g. a directory in its place) is ``unreadable``.
    """
    try:
        names = sorted(p.name for p in folder.iterdir() if p.name.lower().endswith(".jpg"))
    except OSError as err:  # e.g. a file where the folder should be
        raise SkipSample("unreadable", f"{folder}: {err}") from None
    if not names and kind == "rgb":
        raise SkipSample("no_video", f"{folder} holds no frames")
    if len(names) < need:
        raise SkipSample("too_short", f"{folder} holds {len(names)} frames, a sample needs {need}")
    if names != [frame_name(i) for i in range(len(names))]:
        raise SkipSample("corrupt", f"{folder}: frames are not numbered frame000001.jpg.. without gaps")
    for name in names:
        verify_jpeg(folder / name)
    return len(names)


def verify_jpeg(path: Path) -> None:
    """Decode ``path`` (at 1/8 scale: the whole entropy-coded stream is still read, the IDCT is cheap).

    Raises:
        SkipSample: ``unreadable`` when the file cannot be read, ``corrupt`` when it does not decode.
    """
    from PIL import Image

    try:
        data = path.read_bytes()
    except OSError as err:
        raise SkipSample("unreadable", f"{path}: {err}") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except Exception as err:  # noqa: BLE001  (PIL raises many types for bad bytes)
        raise SkipSample("corrupt", f"{path}: {type(err).__name__}: {err}") from None


def probe_video(path: Path) -> None:
    """Cheap checks before decoding: the failures that have a name of their own.

    Raises:
        SkipSample: ``unreadable`` (not a regular file / no permission), ``zero_byte``, ``truncated`` (an
            AVI shorter than its RIFF header says: decoders silently return the first frames of those),
            ``not_media`` (no container recognised) or ``no_video`` (a container without a video stream).
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError as err:
        raise SkipSample("unreadable", f"{path}: {err}") from None
    size = path.stat().st_size
    if size == 0:
        raise SkipSample("zero_byte", str(path))
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        declared = int.from_bytes(head[4:8], "little") + 8
        if size < declared:
            raise SkipSample("truncated", f"{path}: {size} bytes, its RIFF header declares {declared}")
    _probe_streams(path)


def _probe_streams(path: Path) -> None:
    import av

    try:
        with av.open(str(path)) as container:
            has_video = any(s.type == "video" for s in container.streams)
    except (av.error.InvalidDataError, av.error.EOFError) as err:
        raise SkipSample("not_media", f"{path}: {err}") from None
    except av.error.FFmpegError as err:
        raise SkipSample("corrupt", f"{path}: {err}") from None
    if not has_video:
        raise SkipSample("no_video", str(path))


def extract_frames(video: Path, dest: Path, chunk: int = 64) -> int:
    """Decode ``video`` with decord and write every frame to ``dest/frame%06d.jpg`` (atomically, at the
    video's own size, quality ``JPEG_QUALITY``, no metadata); returns the number of frames.

    Raises:
        SkipSample: see :func:`probe_video`; ``corrupt`` if decoding fails, ``too_short`` with no frame.
    """
    import decord
    from PIL import Image

    probe_video(video)
    try:
        reader = decord.VideoReader(str(video), ctx=decord.cpu(0), num_threads=1)
        total = len(reader)
        if total == 0:
            raise SkipSample("too_short", f"{video} has no frames")
        with atomic_dir(dest) as tmp:
            for start in range(0, total, chunk):  # bounded memory for long clips
                frames = reader.get_batch(list(range(start, min(total, start + chunk)))).asnumpy()  # (t, H, W, 3)
                for offset, frame in enumerate(frames):
                    Image.fromarray(frame).save(tmp / frame_name(start + offset), format="JPEG", quality=JPEG_QUALITY)
    except SkipSample:
        raise
    except Exception as err:  # noqa: BLE001  (decord raises its own error types for bad streams)
        raise SkipSample("corrupt", f"{video}: {type(err).__name__}: {str(err)[:200]}") from None
    return total


def _manifest(cfg: DataConfig, layout: Layout, classes: list[str], rows: list[dict], out: Path) -> dict:
    lists = layout.raw / LISTS
    split_files = ["classInd.txt"] + [f"{k}list{s:02d}.txt" for s in SPLITS for k in ("train", "test")]
    modalities = {"rgb": [3, "image_size", "image_size"]}
    if layout.flow:
        modalities["flow"] = [2 * settings(cfg).flow_stack, "image_size", "image_size"]
    return {
        "dataset": NAME,
        "format": FORMAT,
        "n": len(rows),
        "num_classes": len(classes),
        "class_names": classes,
        "modalities": modalities,  # image_size is a load-time setting (data.image_size)
        "flow_stack": settings(cfg).flow_stack,
        "flow_channels": "interleaved: channel 2k is u (x) of frame t+k, channel 2k+1 is v (y)",
        "class_counts": _class_counts(rows, len(classes)),
        "split_sizes": {str(s): {k: len(part) for k, part in _official(rows, s).items()} for s in SPLITS},
        "split_counts": {
            str(s): {k: _class_counts(part, len(classes)) for k, part in _official(rows, s).items()} for s in SPLITS
        },
        "split_note": "val is carved at load time from the train groups of data.split (data.val_fraction, data.seed)",
        "layout": layout.describe(),
        "jpeg_quality": JPEG_QUALITY if layout.rgb_source == "video" else None,
        "files": {INDEX: file_sha256(out / INDEX), **{f"{LISTS}/{f}": file_sha256(lists / f) for f in split_files}},
    }


def _official(rows: Sequence[dict], split: int) -> dict[str, list[dict]]:
    """The rows of official split ``split``'s train and test lists."""
    return {k: [r for r in rows if r[f"split{split}"] == k] for k in ("train", "test")}


def _class_counts(rows: Sequence[dict], num_classes: int) -> list[int]:
    return np.bincount([r["label"] for r in rows], minlength=num_classes).astype(int).tolist()


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
    manifest = _read_manifest(folder)
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


def _read_manifest(folder: Path) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("format") != FORMAT:
        raise UserError(
            f"{folder / 'manifest.json'} is in data format {manifest.get('format')}, this mmtool reads format "
            f"{FORMAT} (run `mmtool prep ucf101 --raw DIR --force`)"
        )
    return manifest


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
        prepare=_prepare,
        load=_load,
        cache_key=_cache_key,
        description="UCF101 (App. A.1): one RGB frame + a 10-frame TV-L1 flow stack; official splits 1-3",
        settings=UCF101Settings,
        data_format=FORMAT,
        raw_doc="data_prep/ucf101.md",
    )
)
