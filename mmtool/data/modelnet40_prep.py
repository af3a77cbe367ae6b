"""ModelNet40 prep: the renders under the raw folder scanned and grouped by object, each object's front and
rear renders (and side render, with ``data.side_view``) decoded once, then the index and the manifest. The
dataset is described in :mod:`mmtool.data.modelnet40`.
"""

from __future__ import annotations

import functools
import io
import os
import re
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
from mmtool.data.settings import ModelNet40Settings
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

FORMAT = 1  # bump when the index changes
NAME = "modelnet40"
RENDERS = "modelnet40_images_new_12x"  # the folder of the published archive (Wu et al., env.sh: DATA_DIR)
NUM_VIEWS = 12
SPLIT_DIRS = ("train", "test")
MODALITIES = ("front", "rear")  # the two views; ``data.side_view`` adds SIDE as a third
SIDE = "side"
INDEX = "index.jsonl"
RENDER = re.compile(r"^(?P<object>.+)\.obj\.shaded_v(?P<view>\d{3})\.png$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk type and its CRC: the last bytes of a complete PNG
EXAMPLES = 20  # unrecognised file names listed in the manifest (all are counted)
OFFICIAL_CLASSES = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone", "cup", "curtain",
    "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp", "laptop", "mantel",
    "monitor", "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink", "sofa", "stairs", "stool",
    "table", "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox",
)  # fmt: skip
OFFICIAL_SIZES = {"train": 9843, "test": 2468}  # objects of the published renders (ModelNet40's official split)


def render_name(obj: str, view: int) -> str:
    """File name of render ``view`` (0-based) of object ``obj``: ``airplane_0001.obj.shaded_v001.png``."""
    return f"{obj}.obj.shaded_v{view + 1:03d}.png"


def view_pair(cfg: DataConfig) -> tuple[int, int]:
    """(front, rear) 0-based render indices: ``data.front_view``, ``data.rear_view``.

    Raises:
        UserError: the same render twice.
    """
    s = dataset_settings(cfg, ModelNet40Settings)
    if s.front_view == s.rear_view:
        raise UserError(f"data.front_view and data.rear_view must be two different renders, both are {s.front_view}")
    return s.front_view, s.rear_view


def view_set(cfg: DataConfig) -> dict[str, int]:
    """``{modality: 0-based render}``: front and rear (:func:`view_pair`), and ``side`` when ``data.side_view``
    is set (paper 002, Sec. 7's three views).

    Raises:
        UserError: the same render twice.
    """
    front, rear = view_pair(cfg)
    side = dataset_settings(cfg, ModelNet40Settings).side_view
    if side is None:
        return {"front": front, "rear": rear}
    if side in (front, rear):
        raise UserError(f"data.side_view must be a render other than the front ({front}) and rear ({rear}), got {side}")
    return {"front": front, "rear": rear, SIDE: side}


# --------------------------------------------------------------------------------------------- raw layout
def resolve_raw(raw: str | None) -> Path:
    """The folder holding the class folders: ``raw`` itself, or its ``modelnet40_images_new_12x/``.

    Raises:
        UserError: no raw folder given, or it does not exist.
    """
    if not raw:
        raise UserError(f"{NAME} needs its raw folder: `mmtool prep {NAME} --raw DIR` (see data_prep/modelnet40.md)")
    path = Path(raw).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"{path} is not a folder (--raw must hold {RENDERS}/ or its class folders)")
    return path / RENDERS if (path / RENDERS).is_dir() else path


@dataclass
class Scan:
    """What the raw folder holds: classes, objects with their renders, and everything else, counted."""

    raw: Path
    classes: list[str]
    objects: dict[str, dict[str, Any]]  # object -> {"class", "split", "folder", "views": {0-based view}}
    ignored: list[str]  # entries of the raw folder that are not class folders
    absent_folders: list[str]  # "<class>/<split>" folders that do not exist
    unrecognised: list[str]  # files of the split folders that are not renders ("<class>/<split>/<name>")
    hidden: int = 0  # files of the split folders whose names start with "." (never read)


def scan(raw: Path) -> Scan:
    """Every render of ``raw/<class>/<train|test>/``, grouped by object.

    Raises:
        UserError: no class folder, or one object name in two folders (a train/test leak or a copy).
    """
    entries = sorted(p for p in raw.iterdir() if not p.name.startswith("."))
    classes = [p.name for p in entries if p.is_dir() and any((p / s).is_dir() for s in SPLIT_DIRS)]
    if not classes:
        raise UserError(
            f"{raw}: no class folder with train/ or test/ inside (expected {RENDERS}/<class>/<train|test>/"
            "<class>_0001.obj.shaded_v001.png; see data_prep/modelnet40.md)"
        )
    found = Scan(raw, classes, {}, [p.name for p in entries if p.name not in classes], [], [])
    for name in classes:
        for split in SPLIT_DIRS:
            _scan_folder(found, name, split)
    return found


def _scan_folder(found: Scan, class_name: str, split: str) -> None:
    rel = f"{class_name}/{split}"
    folder = found.raw / rel
    if not folder.is_dir():
        found.absent_folders.append(rel)
        return
    for file_name in sorted(os.listdir(folder)):
        if file_name.startswith("."):  # e.g. the "._<name>.png" resource forks of a copy made on macOS
            found.hidden += 1
            continue
        match = RENDER.match(file_name)
        view = int(match["view"]) - 1 if match else -1
        if not 0 <= view < NUM_VIEWS:
            found.unrecognised.append(f"{rel}/{file_name}")
            continue
        obj = match["object"]
        entry = found.objects.setdefault(obj, {"class": class_name, "split": split, "folder": rel, "views": set()})
        if entry["folder"] != rel:
            raise UserError(
                f"object {obj} has renders in both {found.raw / entry['folder']} and {folder}: an object must be "
                "in one class and one split (a train/test leak otherwise); remove one copy"
            )
        entry["views"].add(view)


# --------------------------------------------------------------------------------------------- prep
def prepare(cfg: DataConfig, out: Path, options: PrepOptions) -> dict:
    """Prepare the ModelNet40 cache in ``out`` from ``data.raw``; returns its manifest (the spec's ``prepare``)."""
    views = view_set(cfg)
    found = scan(resolve_raw(cfg.raw))
    items = _plan(found, views)
    for stale in out.glob(".*.tmp*"):  # half-written files of a killed run are never part of the cache
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    process = functools.partial(process_object, raw=str(found.raw))
    result = run_pipeline(
        items,
        process,
        out,
        workers=options.workers,
        max_skip_frac=options.max_skip_frac,
        label=f"prep {NAME}",
        raw=found.raw,
    )
    order = {s: i for i, s in enumerate(SPLIT_DIRS)}
    rows = sorted(result.records, key=lambda r: (order[r["split"]], r["label"], r["key"]))  # Wu et al.'s order
    write_jsonl(out / INDEX, rows)
    manifest = _manifest(found, views, rows, out)
    manifest.update(result.summary(len(items)))
    return manifest


def _plan(found: Scan, views: dict[str, int]) -> list[PrepItem]:
    """One prep item per object (sorted by name); the paths of its renders, one per modality of ``views``."""
    items = []
    for obj, entry in sorted(found.objects.items()):
        paths = {m: f"{entry['folder']}/{render_name(obj, v)}" for m, v in views.items()}
        meta = {"class": entry["class"], "split": entry["split"], "views": sorted(entry["views"]),
                "wanted": tuple(views.values()), **paths}  # fmt: skip
        if tuple(views) != MODALITIES:  # two views: the fingerprint of earlier preps, so a resumed prep reuses them
            meta["modalities"] = tuple(views)
        label = found.classes.index(entry["class"])
        items.append(PrepItem(obj, entry["split"], label, tuple(paths.values()), meta))
    return items


def process_object(item: PrepItem, out: Path, *, raw: str) -> dict:
    """Decode one object's renders (front and rear, and side if asked) and return its index row.

    Raises:
        SkipSample: ``missing_view`` when the object lacks one of the renders, else see :func:`check_image`.
    """
    meta = item.meta
    mods = meta.get("modalities", MODALITIES)
    absent = [f"v{v + 1:03d} ({m})" for m, v in zip(mods, meta["wanted"], strict=True) if v not in meta["views"]]
    if absent:
        have = ", ".join(f"v{v + 1:03d}" for v in meta["views"])
        raise SkipSample("missing_view", f"{item.key}: no render {' or '.join(absent)}; it has {have}")
    row: dict[str, Any] = {"class": meta["class"], "label": item.label, "split": meta["split"]}
    for m in mods:
        row[m] = meta[m]
        row[f"{m}_image"] = check_image(Path(raw) / meta[m])
    return row


def check_image(path: Path) -> str:
    """Decode ``path`` completely; returns ``"WxH MODE"`` (e.g. ``"224x224 RGB"``).

    Raises:
        SkipSample: ``unreadable`` (not a regular file, no permission), ``zero_byte``, ``truncated`` (a PNG
            without its closing IEND chunk, or an image that ends early), ``not_media`` (no image format
            recognised, e.g. an HTML error page saved under the render's name) or ``corrupt`` (it does not decode).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        data = path.read_bytes()
    except OSError as err:
        raise SkipSample("unreadable", f"{path.name}: {err.strerror or type(err).__name__}") from None
    if not data:
        raise SkipSample("zero_byte", path.name)
    if data.startswith(PNG_SIGNATURE) and data.rfind(PNG_END) < 0:
        raise SkipSample("truncated", f"{path.name}: {len(data)} bytes, no IEND chunk (the PNG ends early)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return f"{image.width}x{image.height} {image.mode}"
    except UnidentifiedImageError:
        raise SkipSample("not_media", f"{path.name}: not an image PIL recognises ({data[:16]!r}...)") from None
    except Exception as err:  # noqa: BLE001  (PIL raises many types for bad bytes)
        reason = "truncated" if "truncated" in str(err) else "corrupt"
        raise SkipSample(reason, f"{path.name}: {type(err).__name__}: {err}") from None


def _manifest(found: Scan, views: dict[str, int], rows: list[dict], out: Path) -> dict:
    classes = found.classes
    split_rows = {s: [r for r in rows if r["split"] == s] for s in SPLIT_DIRS}
    renders = Counter(len(e["views"]) for e in found.objects.values())
    return {
        "dataset": NAME,
        "format": FORMAT,
        "n": len(rows),
        "num_classes": len(classes),
        "class_names": classes,  # sorted folder names; label = position
        "official_classes": classes == list(OFFICIAL_CLASSES),
        "modalities": {m: [3, "image_size", "image_size"] for m in views},  # image_size: a load-time setting
        "views": {m: {"index": v, "file": f"shaded_v{v + 1:03d}"} for m, v in views.items()},
        "class_counts": _class_counts(rows, len(classes)),
        "split_sizes": {s: len(part) for s, part in split_rows.items()},
        "official_split_sizes": OFFICIAL_SIZES,
        "split_counts": {s: _class_counts(part, len(classes)) for s, part in split_rows.items()},
        "split_note": "test is the test/ folders; val is carved at load time from the train/ objects "
        "(data.val_fraction, data.seed; random.Random(seed).shuffle as Wu et al. 2022)",
        "image_formats": dict(sorted(Counter(r[f"{m}_image"] for r in rows for m in views).items())),
        "renders_per_object": {str(k): v for k, v in sorted(renders.items())},
        "layout": {"raw": str(found.raw), "renders": f"<class>/<split>/{render_name('<object>', 0)} (v001..v012)"},
        "ignored_entries": found.ignored,
        "absent_folders": found.absent_folders,
        "unrecognised": {"count": len(found.unrecognised), "examples": found.unrecognised[:EXAMPLES]},
        "hidden_files": found.hidden,
        "files": {INDEX: file_sha256(out / INDEX)},
    }


def _class_counts(rows: Sequence[dict], num_classes: int) -> list[int]:
    return np.bincount([r["label"] for r in rows], minlength=num_classes).astype(int).tolist()
