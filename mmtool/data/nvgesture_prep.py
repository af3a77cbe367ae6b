"""NVGesture prep: the two split lists read, each listed gesture's colour and depth videos decoded once over
its listed frames, resized and stored as two stacked images, then the index and the manifest. The dataset is
described in :mod:`mmtool.data.nvgesture`.

The lists (``nvgesture_{train,test}_correct_cvpr2016_v2.lst``) hold one gesture a line, fields separated by
spaces, as NVIDIA's reader (``nvGesture_v1/readdata.py``: ``load_split_nvgesture``) parses them::

    path:./Video_data/class_01/subject13_r0 depth:sk_depth:138:218 color:sk_color:138:218 duo_left:...:161:241 label:1

``<sensor>:<file>:<start>:<end>``: the video ``<path>/<file>.avi`` and the gesture's frames, 0-based,
``start`` included and ``end`` excluded (the reader seeks to ``start`` and reads ``end - start`` frames, at
most 80). Labels are 1..25 in the file, 0..24 here.
"""

from __future__ import annotations

import functools
import hashlib
import io
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmtool.data import PrepOptions
from mmtool.data.pipeline import run_pipeline
from mmtool.data.pipeline_io import PrepItem, SkipSample, file_sha256, write_jsonl
from mmtool.data.registry import dataset_settings
from mmtool.data.settings import NVGestureSettings
from mmtool.data_config import DataConfig
from mmtool.errors import UserError
from mmtool.files import atomic_write_bytes

FORMAT = 1  # bump when the index or the stored files change
NAME = "nvgesture"
LISTS = {"train": "nvgesture_train_correct_cvpr2016_v2.lst", "test": "nvgesture_test_correct_cvpr2016_v2.lst"}
SENSORS = {"rgb": "color", "depth": "depth"}  # modality -> the list's sensor name
MODALITIES = ("rgb", "depth")
NUM_CLASSES = 25
OFFICIAL_SIZES = {"train": 1050, "test": 482}
INDEX = "index.jsonl"
JPEG_QUALITY = 90  # colour frames: fixed quality, no metadata -> the same bytes on every run


@dataclass(frozen=True)
class Listed:
    """One line of a split list, as written (ranges unchecked; a field that does not parse is None)."""

    split: str
    line: int
    path: str  # e.g. "./Video_data/class_01/subject13_r0"
    label: int | None  # 1-based as in the file
    files: dict[str, str]  # sensor -> file name without ".avi"
    ranges: dict[str, tuple[int, int] | None]  # sensor -> (start, end)

    @property
    def key(self) -> str:
        """``class_01-subject13_r0``: unique, file-name safe."""
        parts = [p for p in self.path.replace("\\", "/").split("/") if p not in ("", ".")]
        return "-".join(parts[-2:])


def resolve_raw(raw: str | None) -> Path:
    """The folder holding the two lists (``raw`` or its ``nvGesture_v1/``).

    Raises:
        UserError: no folder given, or no list in it.
    """
    if not raw:
        raise UserError(f"{NAME} needs its raw folder: `mmtool prep {NAME} --raw DIR` (see data_prep/nvgesture.md)")
    path = Path(raw).expanduser().resolve()
    for folder in (path, path / "nvGesture_v1"):
        if all((folder / name).is_file() for name in LISTS.values()):
            return folder
    lists = " and ".join(LISTS.values())
    raise UserError(f"{path}: expected {lists} (and Video_data/) there; see data_prep/nvgesture.md")


def parse_list(path: Path, split: str) -> list[Listed]:
    """The gestures of one list; blank lines are ignored.

    Raises:
        UserError: a line that does not start with ``path:`` (not an NVGesture list).
    """
    rows = []
    for number, text in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        fields = text.split()
        if not fields:
            continue
        if not fields[0].startswith("path:"):
            raise UserError(f"{path}:{number}: expected 'path:./Video_data/<class>/<subject>' first, got {fields[0]!r}")
        rows.append(_parse_fields(fields, split, number))
    return rows


def _parse_fields(fields: list[str], split: str, number: int) -> Listed:
    label, files, ranges = None, {}, {}
    for field in fields[1:]:
        parts = field.split(":")
        if parts[0] == "label":
            label = int(parts[1]) if len(parts) == 2 and parts[1].lstrip("-").isdigit() else None
        elif parts[0] in SENSORS.values():
            files[parts[0]] = parts[1] if len(parts) > 1 else ""
            ok = len(parts) == 4 and all(p.lstrip("-").isdigit() for p in parts[2:])
            ranges[parts[0]] = (int(parts[2]), int(parts[3])) if ok else None
    return Listed(split, number, fields[0].split(":", 1)[1], label, files, ranges)


# --------------------------------------------------------------------------------------------- prep
def prepare(cfg: DataConfig, out: Path, options: PrepOptions) -> dict:
    """Prepare the NVGesture cache in ``out`` from ``data.raw``; returns its manifest (the spec's ``prepare``)."""
    s = dataset_settings(cfg, NVGestureSettings)
    if s.store_size * s.max_frames > 65500:  # the JPEG format's limit on the stacked image's height
        raise UserError(f"data.max_frames x data.store_size must be at most 65500, got {s.max_frames} x {s.store_size}")
    raw = resolve_raw(cfg.raw)
    listed = [row for split, name in LISTS.items() for row in parse_list(raw / name, split)]
    _check_unique(listed, raw)
    items, missing = _plan(listed, raw)
    for stale in out.glob("**/.*.tmp*"):  # half-written files of a killed run are never part of the cache
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    process = functools.partial(process_gesture, raw=str(raw), size=s.store_size, max_frames=s.max_frames)
    result = run_pipeline(items, process, out, workers=options.workers, max_skip_frac=options.max_skip_frac,
                          missing=missing, max_missing_frac=options.max_missing_frac, raw=raw,
                          label=f"prep {NAME}")  # fmt: skip
    order = {split: i for i, split in enumerate(LISTS)}
    rows = sorted(result.records, key=lambda r: (order[r["split"]], r["key"]))
    write_jsonl(out / INDEX, rows)
    manifest = _manifest(raw, s, rows, out)
    manifest.update(result.summary(len(items)))
    return manifest


def _check_unique(listed: list[Listed], raw: Path) -> None:
    seen: dict[str, Listed] = {}
    for row in listed:
        if row.key in seen:
            first = seen[row.key]
            raise UserError(f"{raw / LISTS[row.split]}:{row.line}: {row.path} is listed twice (first at "
                            f"{LISTS[first.split]}:{first.line}); a gesture must be in one list once")  # fmt: skip
        seen[row.key] = row


def _plan(listed: list[Listed], raw: Path) -> tuple[list[PrepItem], list[dict]]:
    """One item per listed gesture; one whose folder holds neither video is *missing* (reported apart)."""
    items, missing = [], []
    for row in listed:
        videos = {m: f"{row.path.removeprefix('./')}/{row.files.get(SENSORS[m], '')}.avi" for m in MODALITIES}
        present = {m: (raw / v).is_file() for m, v in videos.items()}
        if not any(present.values()):
            missing.append({"key": row.key, "split": row.split, "label": row.label, "absent": list(videos.values())})
            continue
        label = row.label - 1 if row.label is not None else -1
        ranges = {m: row.ranges.get(SENSORS[m]) for m in MODALITIES}
        meta = {"list": f"{LISTS[row.split]}:{row.line}", "path": row.path, "listed_label": row.label,
                "ranges": ranges, "present": present, **videos}  # fmt: skip
        items.append(PrepItem(row.key, row.split, label, tuple(videos.values()), meta))
    return items, missing


def process_gesture(item: PrepItem, out: Path, *, raw: str, size: int, max_frames: int) -> dict:
    """Decode one gesture's colour and depth frames and store them; returns its index row.

    Raises:
        SkipSample: ``bad_label``, ``bad_range``, ``missing_depth``, ``missing_view`` (no colour video), or
            the video's own reasons (:func:`mmtool.data.ucf101_prep.probe_video`, ``corrupt``).
    """
    meta = item.meta
    if not 0 <= item.label < NUM_CLASSES:
        raise SkipSample("bad_label", f"{meta['list']}: label {meta['listed_label']} is not one of 1..{NUM_CLASSES}")
    if not meta["present"]["depth"]:
        raise SkipSample("missing_depth", f"{meta['list']}: no {Path(meta['depth']).name} beside the colour video")
    if not meta["present"]["rgb"]:
        raise SkipSample("missing_view", f"{meta['list']}: no {Path(meta['rgb']).name} beside the depth video")
    start, end = _listed_range(meta)
    frames = {m: read_frames(Path(raw) / meta[m], start, min(end, start + max_frames), size) for m in MODALITIES}
    count = min(len(f) for f in frames.values())  # the two videos may end at different frames
    row: dict[str, Any] = {"split": item.split, "label": item.label, "class": meta["path"].rstrip("/").split("/")[-2],
                           "path": meta["path"], "start": start, "end": end, "frames": count,
                           "listed": {m: meta["ranges"][m] for m in MODALITIES}}  # fmt: skip
    row.update(_store(out, item.key, frames["rgb"][:count], frames["depth"][:count, ..., 0]))
    return row


def _listed_range(meta: dict) -> tuple[int, int]:
    """The colour video's (start, end), used for both modalities (paper 002 App. A: the RGB start index)."""
    rgb = meta["ranges"]["rgb"]
    if rgb is None or meta["ranges"]["depth"] is None:
        bad = "color" if rgb is None else "depth"
        raise SkipSample("bad_range", f"{meta['list']}: the {bad} field is not <sensor>:<file>:<start>:<end>")
    start, end = rgb
    if start < 0 or end <= start:
        raise SkipSample("bad_range", f"{meta['list']}: frames {start}:{end} hold no frame")
    return start, end


def read_frames(video: Path, start: int, end: int, size: int) -> np.ndarray:
    """Frames ``start`` .. ``end - 1`` (fewer when the video ends first) of ``video``, resized to
    ``size`` x ``size`` (aspect not kept, App. A): (T, size, size, 3) uint8.

    Raises:
        SkipSample: ``bad_range`` when the video ends before ``start``; see ``probe_video``; ``corrupt``.
    """
    import decord
    from PIL import Image

    from mmtool.data.ucf101_prep import probe_video

    probe_video(video)
    try:
        reader = decord.VideoReader(str(video), ctx=decord.cpu(0), num_threads=1)
        total = len(reader)
        if start >= total:
            raise SkipSample("bad_range", f"{video.name} has {total} frames, the gesture starts at frame {start}")
        frames = reader.get_batch(list(range(start, min(end, total)))).asnumpy()  # (T, H, W, 3)
    except SkipSample:
        raise
    except Exception as err:  # noqa: BLE001  (decord raises its own error types for bad streams)
        raise SkipSample("corrupt", f"{video.name}: {type(err).__name__}: {str(err)[:200]}") from None
    resized = [np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in frames]
    return np.stack(resized)


def _store(out: Path, key: str, rgb: np.ndarray, depth: np.ndarray) -> dict:
    """(T, S, S, 3) colour frames as one stacked JPEG, (T, S, S) depth as one stacked 8-bit PNG (lossless),
    each written atomically; their paths, sizes and checksums."""
    from PIL import Image

    t, s = rgb.shape[:2]
    encoded = {}
    for m, array, fmt, options in (("rgb", rgb.reshape(t * s, s, 3), "JPEG", {"quality": JPEG_QUALITY}),
                                   ("depth", depth.reshape(t * s, s), "PNG", {})):  # fmt: skip
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(array)).save(buf, format=fmt, **options)
        encoded[m] = (f"frames/{key}/{m}.{'jpg' if fmt == 'JPEG' else 'png'}", buf.getvalue())
    row = {}
    for m, (rel, data) in encoded.items():
        atomic_write_bytes(out / rel, data)
        row.update({m: rel, f"{m}_bytes": len(data), f"{m}_sha256": hashlib.sha256(data).hexdigest()})
    return row


def _manifest(raw: Path, s: NVGestureSettings, rows: list[dict], out: Path) -> dict:
    split_rows = {split: [r for r in rows if r["split"] == split] for split in LISTS}
    disagree = [r["key"] for r in rows if r["listed"]["rgb"] and r["listed"]["depth"]
                and r["listed"]["rgb"][0] != r["listed"]["depth"][0]]  # fmt: skip
    return {
        "dataset": NAME,
        "format": FORMAT,
        "n": len(rows),
        "num_classes": NUM_CLASSES,
        "class_names": [f"class_{k + 1:02d}" for k in range(NUM_CLASSES)],
        "modalities": {
            "rgb": [3, "window_frames", "image_size", "image_size"],
            "depth": [1, "window_frames", "image_size", "image_size"],
        },  # fmt: skip
        "settings": {"store_size": s.store_size, "max_frames": s.max_frames},
        "class_counts": _class_counts(rows),
        "split_sizes": {k: len(v) for k, v in split_rows.items()},
        "official_split_sizes": OFFICIAL_SIZES,
        "split_counts": {k: _class_counts(v) for k, v in split_rows.items()},
        "split_note": "test is the test list; val is carved at load time from the train list (data.val_fraction, "
        "data.seed)",
        "frames_stored": dict(sorted(Counter(str(r["frames"]) for r in rows).items())),
        "start_disagreements": disagree,  # depth listed with another start: the colour start is used (App. A)
        "layout": {"raw": str(raw), "lists": list(LISTS.values()), "videos": "<path>/sk_color.avi, sk_depth.avi"},
        "files": {INDEX: file_sha256(out / INDEX), **{name: file_sha256(raw / name) for name in LISTS.values()}},
    }


def _class_counts(rows: Sequence[dict]) -> list[int]:
    return np.bincount([r["label"] for r in rows], minlength=NUM_CLASSES).astype(int).tolist()
