"""UCF101 prep: the listed clips found under the raw folder, each clip's frames checked (or extracted from its
video), then the index and the manifest. The dataset is described in :mod:`mmtool.data.ucf101`.
"""

from __future__ import annotations

import functools
import io
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmtool.data import PrepOptions
from mmtool.data.pipeline import run_pipeline
from mmtool.data.pipeline_io import PrepItem, SkipSample, atomic_dir, file_sha256, write_jsonl
from mmtool.data.ucf101_layout import (
    EXTRACTED,
    FORMAT,
    INDEX,
    LISTS,
    NAME,
    SPLITS,
    Layout,
    ListedClip,
    RawFinder,
    frame_name,
    parse_split_lists,
    settings,
)
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

JPEG_QUALITY = 90  # extracted frames: fixed quality, no metadata -> the same bytes on every run


def prepare(cfg: DataConfig, out: Path, options: PrepOptions) -> dict:
    """Prepare the UCF101 cache in ``out`` from ``data.raw``; returns its manifest (the spec's ``prepare``)."""
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
    manifest.update(result.summary(len(items)), case_mismatches=sorted(finder.case_mismatches))
    return manifest


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
