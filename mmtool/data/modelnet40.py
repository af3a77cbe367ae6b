"""ModelNet40 front and rear views (paper 000, App. A.1; paper 002, Sec. 6.1): prepared from a local copy.

Paper 000 "follows Wu et al. (2022)" (paper 002) for ModelNet40 and defers to their code
(github nyukat/greedy_multimodal_learning) for every setting. That code reads the MVCNN 12-view renders of
Su et al. (``modelnet40_images_new_12x``, env.sh) laid out as ``<class>/<train|test>/<object>.obj.shaded_vVVV.png``
(VVV = 001..012, one camera every 30 degrees around the object), and feeds a multi-modal ResNet-18 pair with
views ``[0, 6]`` (configs/training.gin, ``specific_views``): v001 is the *front* and v007, 180 degrees round, the
*rear*. ``mmtool prep modelnet40 --raw DIR`` reads that layout; ``data.front_view``/``data.rear_view``
pick other renders.
The layout, quirks and choices are described in ``data_prep/modelnet40.md``.

Design notes
  * What Wu et al.'s loader (src/dataset.py) does, and this module does alike: labels are the position of the
    class folder in the sorted class list (their hard-coded list is the 40 names sorted); every image is read
    with ``PIL.Image.convert("RGB")`` at its own size (224 x 224 in the published renders) and normalised with
    the ImageNet mean and std; training flips each view horizontally with probability 1/2 (independently per
    view, as their per-image ``RandomHorizontalFlip``) and does nothing else: no crop, unlike UCF101;
    evaluation reads the image as it is. ``data.image_size`` other than the renders' size resizes both.
  * Splits: test is the ``test/`` folders and is never used for selection. Validation is carved at load time
    from the ``train/`` objects exactly as Wu et al. do: the train objects in (class, name) order, shuffled by
    ``random.Random(data.seed).shuffle``, the first ``floor(data.val_fraction * n)`` held out (at least one when
    the fraction is positive). With their ``valid_size=0.2`` and ``random_seed_for_validation=10``
    (recipes/_base/modelnet40.yaml) and a complete copy, the validation objects are theirs. The split is not
    stratified by class, as theirs is not.
  * Objects are found from the file names (there are no split lists): everything before ``.obj.`` names the
    object. An object with renders but without the front or the rear one is skipped as ``missing_view``: an
    interrupted extraction must not pass unseen. The same object name in two
    folders (a train/test leak) stops prep with the two paths.
  * Renders stay where they are: the cache holds an index, not a copy (as the frames of UCF101). Prep decodes
    each selected render once; a render that does not decode is skipped with its reason (``truncated``:
    a PNG cut before its IEND chunk; ``not_media``: not an image at all; ``zero_byte``; ``corrupt``;
    ``unreadable``). Files that are not renders are counted in the manifest (``unrecognised``), never dropped
    silently. The cache key is the pair of views (``v001-v007``); image size, split seed and fraction are
    applied at load time.
  * Sizes: the published copy has 9,843 train and 2,468 test objects. Both papers print "9,483 training
    samples", a transposition of 9,843 (the official ModelNet40 train split); the manifest records the
    counts found.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import random
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
from mmtool.data.pipeline import PrepItem, SkipSample, file_sha256, read_jsonl, run_pipeline, write_jsonl
from mmtool.data.registry import DATASETS, DatasetSpec, dataset_settings
from mmtool.data.settings import ModelNet40Settings
from mmtool.data.transforms import IMAGENET_MEAN, IMAGENET_STD, hflip, normalize, resize
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

FORMAT = 1  # bump when the index changes
NAME = "modelnet40"
RENDERS = "modelnet40_images_new_12x"  # the folder of the published archive (Wu et al., env.sh: DATA_DIR)
NUM_VIEWS = 12
SPLIT_DIRS = ("train", "test")
MODALITIES = ("front", "rear")
INDEX = "index.jsonl"
EVAL_BATCH = 64
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
def _cache_key(cfg: DataConfig) -> str:
    # only what prep's output depends on; image_size, val_fraction and seed are applied at load time
    front, rear = view_pair(cfg)
    return f"v{front + 1:03d}-v{rear + 1:03d}"


def _prepare(cfg: DataConfig, out: Path, options: PrepOptions) -> dict:
    views = view_pair(cfg)
    found = scan(resolve_raw(cfg.raw))
    items = _plan(found, views)
    for stale in out.glob(".*.tmp*"):  # half-written files of a killed run are never part of the cache
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    process = functools.partial(process_object, raw=str(found.raw))
    result = run_pipeline(
        items, process, out, workers=options.workers, max_skip_frac=options.max_skip_frac, label=f"prep {NAME}",
        raw=found.raw,
    )
    order = {s: i for i, s in enumerate(SPLIT_DIRS)}
    rows = sorted(result.records, key=lambda r: (order[r["split"]], r["label"], r["key"]))  # Wu et al.'s order
    write_jsonl(out / INDEX, rows)
    manifest = _manifest(found, views, rows, out)
    manifest.update(
        skipped=[{"key": s["key"], "reason": s["reason"]} for s in result.skipped],
        skipped_counts=dict(sorted(Counter(s["reason"] for s in result.skipped).items())),
        missing=len(result.missing),
        run={"items": len(items), "reused": result.reused, "processed": len(items) - result.reused,
             "seconds": result.seconds},
    )  # fmt: skip
    return manifest


def _plan(found: Scan, views: tuple[int, int]) -> list[PrepItem]:
    """One prep item per object (sorted by name); the paths of its front and rear renders."""
    items = []
    for obj, entry in sorted(found.objects.items()):
        paths = {m: f"{entry['folder']}/{render_name(obj, v)}" for m, v in zip(MODALITIES, views, strict=True)}
        meta = {"class": entry["class"], "split": entry["split"], "views": sorted(entry["views"]), "wanted": views,
                **paths}  # fmt: skip
        label = found.classes.index(entry["class"])
        items.append(PrepItem(obj, entry["split"], label, tuple(paths.values()), meta))
    return items


def process_object(item: PrepItem, out: Path, *, raw: str) -> dict:
    """Decode one object's front and rear renders and return its index row.

    Raises:
        SkipSample: ``missing_view`` when the object lacks one of the two renders, else see :func:`check_image`.
    """
    meta = item.meta
    absent = [f"v{v + 1:03d} ({m})" for m, v in zip(MODALITIES, meta["wanted"], strict=True) if v not in meta["views"]]
    if absent:
        have = ", ".join(f"v{v + 1:03d}" for v in meta["views"])
        raise SkipSample("missing_view", f"{item.key}: no render {' or '.join(absent)}; it has {have}")
    row: dict[str, Any] = {"class": meta["class"], "label": item.label, "split": meta["split"]}
    for m in MODALITIES:
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


def _manifest(found: Scan, views: tuple[int, int], rows: list[dict], out: Path) -> dict:
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
        "modalities": {m: [3, "image_size", "image_size"] for m in MODALITIES},  # image_size: a load-time setting
        "views": {m: {"index": v, "file": f"shaded_v{v + 1:03d}"} for m, v in zip(MODALITIES, views, strict=True)},
        "class_counts": _class_counts(rows, len(classes)),
        "split_sizes": {s: len(part) for s, part in split_rows.items()},
        "official_split_sizes": OFFICIAL_SIZES,
        "split_counts": {s: _class_counts(part, len(classes)) for s, part in split_rows.items()},
        "split_note": "test is the test/ folders; val is carved at load time from the train/ objects "
        "(data.val_fraction, data.seed; random.Random(seed).shuffle as Wu et al. 2022)",
        "image_formats": dict(sorted(Counter(r[f"{m}_image"] for r in rows for m in MODALITIES).items())),
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


# --------------------------------------------------------------------------------------------- reading
class ViewReader:
    """Reads the ``front`` and ``rear`` inputs, (3, S, S) each, of a list of objects.

    Picklable and stateless: every image is opened when it is read, inside the process that reads it.

    Args:
        pairs: (front path, rear path) of each object, in sample order.
        image_size: S, the side of the square inputs.
        augment: random horizontal flips in training (Wu et al.: ``RandomHorizontalFlip``, per view).
    """

    def __init__(self, pairs: Sequence[tuple[str, str]], image_size: int, augment: bool = True) -> None:
        self.pairs = list(pairs)
        self.size = (image_size, image_size)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int, modalities: Sequence[str], train: bool, rng: np.random.Generator) -> dict[str, Any]:
        """``{modality: float32 tensor (3, S, S)}`` of object ``index``; ``rng`` drives the training flips."""
        # one child stream per view, drawn whatever is selected: a view is augmented the same alone or in a pair
        seeds = dict(zip(MODALITIES, rng.integers(0, 2**63, size=len(MODALITIES)), strict=True))
        paths = dict(zip(MODALITIES, self.pairs[index], strict=True))
        return {m: self._view(paths[m], train, np.random.default_rng(seeds[m])) for m in modalities}

    def _view(self, path: str, train: bool, rng: np.random.Generator) -> torch.Tensor:
        x = resize(load_rgb(Path(path)).float() / 255.0, self.size)  # (3, S, S); no-op at the renders' size
        if train and self.augment and rng.random() < 0.5:
            x = hflip(x)
        return normalize(x, IMAGENET_MEAN, IMAGENET_STD).contiguous()


def load_rgb(path: Path) -> torch.Tensor:
    """(3, H, W) uint8 of one render, converted to RGB as Wu et al. do (grey or RGBA renders alike)."""
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


# --------------------------------------------------------------------------------------------- loading
def carve_splits(rows: Sequence[dict], val_fraction: float, seed: int) -> dict[str, list[int]]:
    """Row positions of train/val/test: test is the test/ folders; val is Wu et al.'s rule (module docstring)
    applied to the train/ rows in index order, which is their (class, name) order."""
    if not 0 <= val_fraction < 1:
        raise UserError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    k = math.floor(val_fraction * len(train))
    if val_fraction > 0 and len(train) > 1:
        k = min(len(train) - 1, max(1, k))
    held = set(order[:k])
    return {
        "train": [p for j, p in enumerate(train) if j not in held],
        "val": [p for j, p in enumerate(train) if j in held],
        "test": [i for i, r in enumerate(rows) if r["split"] == "test"],
    }


def _load(cfg: DataConfig, folder: Path) -> Dataset:
    manifest = _read_manifest(folder)
    rows = _read_index(folder, manifest)
    raw = resolve_raw(cfg.raw) if cfg.raw else Path(manifest["layout"]["raw"])
    _check_rows(rows, manifest, raw, folder)
    pairs = [tuple(str(raw / row[m]) for m in MODALITIES) for row in rows]
    _check_sampled_paths(pairs, folder)
    parts = carve_splits(rows, cfg.val_fraction, cfg.seed)
    s = dataset_settings(cfg, ModelNet40Settings)
    splits = {}
    for name, positions in parts.items():
        reader = ViewReader([pairs[i] for i in positions], s.image_size, s.augment)
        targets = torch.tensor([rows[i]["label"] for i in positions], dtype=torch.long)
        splits[name] = DiskSource(reader, targets, MODALITIES, EVAL_BATCH)
    dims = {m: [3, s.image_size, s.image_size] for m in MODALITIES}
    return Dataset(NAME, MODALITIES, manifest["num_classes"], dims, splits, list(manifest["class_names"]))


FIX = f"re-run `mmtool prep {NAME} --raw DIR --force`"


def _read_manifest(folder: Path) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("format") != FORMAT:
        raise UserError(
            f"{folder / 'manifest.json'} is in data format {manifest.get('format')}, this mmtool reads format "
            f"{FORMAT} ({FIX})"
        )
    return manifest


def _read_index(folder: Path, manifest: dict) -> list[dict]:
    """The index rows, after checking its checksum against the manifest (no image is hashed)."""
    path = folder / INDEX
    data = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(data).hexdigest() != manifest.get("files", {}).get(INDEX):
        raise UserError(f"{path} is missing or does not match {folder / 'manifest.json'} ({FIX})")
    return read_jsonl(path)


def _check_rows(rows: list[dict], manifest: dict, raw: Path, folder: Path) -> None:
    """The manifest's n, num_classes and class_counts against the index; each row's class, label and split
    agree; every path stays inside its ``<class>/<split>/`` folder of the raw folder (links included)."""
    path, index = folder / "manifest.json", folder / INDEX
    labels = np.array([r["label"] for r in rows], dtype=np.int64)
    names = manifest.get("class_names")
    if not isinstance(names, list):
        raise UserError(f"{path}: field 'class_names' is missing or not a list ({FIX})")
    check_labels(path, manifest, labels, FIX, str(index), len(names), "its field 'class_names'")
    guard = RootGuard(raw, FIX)
    for line, row in enumerate(rows, start=1):
        if row.get("split") not in SPLIT_DIRS or names[row["label"]] != row.get("class"):
            raise UserError(f"{index}:{line}: class {row.get('class')!r}, label {row['label']} and split "
                            f"{row.get('split')!r} do not agree with {path} ({FIX})")  # fmt: skip
        for m in MODALITIES:
            guard.check(row[m], f"{index}:{line} {m}", f"{row['class']}/{row['split']}")


def _check_sampled_paths(pairs: list[tuple[str, ...]], cache: Path, samples: int = 3) -> None:
    """The renders of a few evenly spaced objects exist: catches a moved or wrong raw folder cheaply."""
    picks = sorted({round(j * (len(pairs) - 1) / max(1, samples - 1)) for j in range(samples)}) if pairs else []
    for path in (Path(p) for i in picks for p in pairs[i]):
        if not path.is_file():
            raise UserError(
                f"{path} (listed in {cache / INDEX}) does not exist: pass data.raw=DIR of the prepared copy, or {FIX}"
            )


DATASETS.register(NAME)(
    DatasetSpec(
        prepare=_prepare,
        load=_load,
        cache_key=_cache_key,
        description="ModelNet40 (App. A.1; Wu et al. 2022): front (v001) and rear (v007) renders of the MVCNN "
        "12-view set, 40 classes",
        settings=ModelNet40Settings,
        data_format=FORMAT,
        raw_doc="data_prep/modelnet40.md",
    )
)
