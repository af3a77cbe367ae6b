"""UPMC Food-101 prep: the title CSVs read and paired with the image folders, each pair's image decoded once and
its text tokenized once, then the index, the token arrays and the manifest. The dataset is described in
:mod:`mmtool.data.food101`.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmtool.data import PrepOptions
from mmtool.data.modelnet40_prep import check_image
from mmtool.data.pipeline import run_pipeline
from mmtool.data.pipeline_io import PrepItem, SkipSample, file_sha256, save_npy, write_jsonl
from mmtool.data.registry import dataset_settings
from mmtool.data.settings import Food101Settings
from mmtool.data.text import (
    OFFSETS,
    TOKENS,
    pack,
    read_tokenizer,
    resolve_tokenizer,
    text_ids,
    tokenizer_fingerprint,
    tokenizer_info,
)
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

FORMAT = 1  # bump when the index or the token arrays change
NAME = "food101"
SPLIT_DIRS = ("train", "test")
MODALITIES = ("image", "text")
INDEX = "index.jsonl"
TITLES = {s: f"texts/{s}_titles.csv" for s in SPLIT_DIRS}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"  # SOI and EOI markers
EXAMPLES = 20  # unrecognised files, malformed and duplicate rows listed in the manifest (all are counted)


def cache_key(cfg: DataConfig) -> str:
    """``tok-<fingerprint of the tokenizer's files>-L<max_tokens>``: what the token ids depend on (the images are
    read at load time, so image size, split seed and fraction are not part of it)."""
    s = dataset_settings(cfg, Food101Settings)
    return f"tok-{tokenizer_fingerprint(resolve_tokenizer(s.tokenizer, NAME))}-L{s.max_tokens}"


def resolve_raw(raw: str | None) -> Path:
    """The folder holding ``images/`` and ``texts/``.

    Raises:
        UserError: no raw folder given, it does not exist, or it lacks ``images/`` or ``texts/``.
    """
    if not raw:
        raise UserError(f"{NAME} needs its raw folder: `mmtool prep {NAME} --raw DIR` (see data_prep/food101.md)")
    path = Path(raw).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"{path} is not a folder (--raw must hold images/ and texts/ of UPMC Food-101)")
    absent = [d for d in ("images", "texts") if not (path / d).is_dir()]
    if absent:
        raise UserError(f"{path} has no {' or '.join(f'{d}/' for d in absent)} (expected images/{{train,test}}/"
                        "<class>/<file>.jpg and texts/{train,test}_titles.csv; see data_prep/food101.md)")  # fmt: skip
    return path


# --------------------------------------------------------------------------------------------- raw layout
@dataclass
class Scan:
    """What the raw folder holds: title rows and images per key ``<split>/<class>/<file>``, and the rest, counted."""

    raw: Path
    classes: list[str]
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {"text", "bad_text"}
    images: dict[str, str] = field(default_factory=dict)  # key -> path relative to raw
    csv: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> rows, header, malformed, duplicates
    unrecognised: list[str] = field(default_factory=list)  # files of the class folders that are not images
    hidden: int = 0  # files whose names start with "." (never read)


def scan(raw: Path) -> Scan:
    """Every title row and every image of ``raw``.

    Raises:
        UserError: a title CSV is absent, or no class folder exists under ``images/train``.
    """
    folders = [raw / "images" / s for s in SPLIT_DIRS if (raw / "images" / s).is_dir()]
    classes = sorted({p.name for f in folders for p in f.iterdir() if p.is_dir() and not p.name.startswith(".")})
    if not classes:
        raise UserError(f"{raw}/images: no class folder under train/ or test/ (expected images/{{train,test}}/"
                        "<class>/<file>.jpg; see data_prep/food101.md)")  # fmt: skip
    found = Scan(raw, classes)
    for split in SPLIT_DIRS:
        found.csv[split] = read_titles(raw / TITLES[split], split, found.rows)
        for name in classes:
            _scan_images(found, split, name)
    return found


def read_titles(path: Path, split: str, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Add the rows of one title CSV (``image_file_name,text,label``) to ``rows``; returns what the file held.

    The bytes are decoded as UTF-8 keeping invalid bytes (``surrogateescape``), so one bad text is that row's
    problem (``bad_encoding`` at prep), not the file's. A first row whose first field names no image is a header.
    A text holding commas that were not quoted arrives as more than three fields: the first is the file, the
    last the label, and the text is the rest joined back with commas.

    Raises:
        UserError: the file is absent or unreadable.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: {err.strerror or type(err).__name__} (expected {TITLES[split]} of UPMC "
                        "Food-101; see data_prep/food101.md)") from None  # fmt: skip
    text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    info: dict[str, Any] = {"rows": 0, "header": False, "malformed": [], "duplicates": []}
    for number, fields in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if not any(f.strip() for f in fields):
            continue
        if len(fields) < 3:
            info["malformed"].append(f"{path.name}:{number}")
            continue
        file, label, body = fields[0].strip(), fields[-1].strip(), ",".join(fields[1:-1])
        if number == 1 and not file.lower().endswith(IMAGE_SUFFIXES):
            info["header"] = True
            continue
        key = f"{split}/{label}/{file}"
        if key in rows:
            info["duplicates"].append(key)
            continue
        info["rows"] += 1
        bad = any("\udc80" <= c <= "\udcff" for c in body)
        shown = body.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        rows[key] = {"text": None if bad else body, "bad_text": f"{path.name}:{number}: {shown[:80]!r}" if bad
                     else None}  # fmt: skip
    return info


def _scan_images(found: Scan, split: str, class_name: str) -> None:
    rel = f"images/{split}/{class_name}"
    folder = found.raw / rel
    if not folder.is_dir():
        return
    for file in sorted(os.listdir(folder)):
        if file.startswith("."):  # e.g. the "._<name>.jpg" resource forks of a copy made on macOS
            found.hidden += 1
        elif file.lower().endswith(IMAGE_SUFFIXES):
            found.images[f"{split}/{class_name}/{file}"] = f"{rel}/{file}"
        else:
            found.unrecognised.append(f"{rel}/{file}")


# --------------------------------------------------------------------------------------------- prep
def prepare(cfg: DataConfig, out: Path, options: PrepOptions) -> dict:
    """Prepare the Food-101 cache in ``out`` from ``data.raw``; returns its manifest (the spec's ``prepare``)."""
    s = dataset_settings(cfg, Food101Settings)
    tokenizer = resolve_tokenizer(s.tokenizer, NAME)
    read_tokenizer(str(tokenizer))  # a bad folder fails here, once, not in every item (any pad id: mmtool.data.text)
    found = scan(resolve_raw(cfg.raw))
    items = plan(found)
    for stale in out.glob(".*.tmp*"):  # half-written files of a killed run are never part of the cache
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    process = functools.partial(process_pair, raw=str(found.raw), tokenizer=str(tokenizer), max_tokens=s.max_tokens)
    result = run_pipeline(items, process, out, workers=options.workers, max_skip_frac=options.max_skip_frac,
                          label=f"prep {NAME}", raw=found.raw)  # fmt: skip
    order = {s: i for i, s in enumerate(SPLIT_DIRS)}
    records = sorted(result.records, key=lambda r: (order[r["split"]], r["label"], r["key"]))
    tokens, offsets = pack([np.asarray(r["tokens"], dtype=np.int32) for r in records])
    save_npy(out / TOKENS, tokens)
    save_npy(out / OFFSETS, offsets)
    rows = [{**r, "tokens": len(r["tokens"])} for r in records]
    write_jsonl(out / INDEX, rows)
    manifest = _manifest(found, rows, out, tokenizer, s.max_tokens)
    manifest.update(result.summary(len(items)))
    return manifest


def plan(found: Scan) -> list[PrepItem]:
    """One prep item per key that has a row, an image or both (sorted); a half pair is skipped by the item."""
    items = []
    for key in sorted(set(found.rows) | set(found.images)):
        split, name, file = key.split("/", 2)
        row, image = found.rows.get(key), found.images.get(key)
        meta = {"class": name, "file": file, "image": image, "has_row": row is not None, **(row or {})}
        label = found.classes.index(name) if name in found.classes else -1
        items.append(PrepItem(key, split, label, (image,) if image else (), meta))
    return items


def process_pair(item: PrepItem, out: Path, *, raw: str, tokenizer: str, max_tokens: int) -> dict:
    """Check one pair, decode its image and tokenize its text; returns its index row with its token ids.

    Raises:
        SkipSample: ``missing_pair``, ``bad_encoding``, ``empty_text``, or an image reason of
            :func:`~mmtool.data.modelnet40_prep.check_image`.
    """
    meta, titles = item.meta, TITLES[item.split]
    if not meta["has_row"]:
        raise SkipSample("missing_pair", f"{item.key}: an image without a row in {titles}")
    if meta["image"] is None:
        raise SkipSample("missing_pair", f"{item.key}: a row of {titles} without its image "
                         f"images/{item.key} (class folder {meta['class']!r})")  # fmt: skip
    if meta["bad_text"] is not None:
        raise SkipSample("bad_encoding", f"{item.key}: the text is not UTF-8 ({meta['bad_text']})")
    if not meta["text"].strip():
        raise SkipSample("empty_text", f"{item.key}: the text of {titles} is blank")
    ids = text_ids(tokenizer, meta["text"], max_tokens, any_pad=True)
    if ids is None:
        raise SkipSample("empty_text", f"{item.key}: the text holds no token but special ones: {meta['text'][:80]!r}")
    image_format = check_photo(Path(raw) / meta["image"])
    return {"split": item.split, "label": item.label, "class": meta["class"], "image": meta["image"],
            "image_format": image_format, "tokens": ids.tolist()}  # fmt: skip


def check_photo(path: Path) -> str:
    """:func:`~mmtool.data.modelnet40_prep.check_image`, with a JPEG that fails to decode and lacks its closing EOI
    marker called ``truncated`` (an interrupted download) rather than ``corrupt``."""
    try:
        return check_image(path)
    except SkipSample as skip:
        if skip.reason != "corrupt":
            raise
        data = path.read_bytes()
        if data.startswith(JPEG_START) and not data.rstrip(b"\0").endswith(JPEG_END):
            detail = f"{path.name}: {len(data)} bytes, no EOI marker (the JPEG ends early)"
            raise SkipSample("truncated", detail) from None
        raise


def _manifest(found: Scan, rows: list[dict], out: Path, tokenizer: Path, max_tokens: int) -> dict:
    classes = found.classes
    split_rows = {s: [r for r in rows if r["split"] == s] for s in SPLIT_DIRS}
    return {
        "dataset": NAME,
        "format": FORMAT,
        "n": len(rows),
        "num_classes": len(classes),
        "class_names": classes,  # sorted image folder names; label = position
        "modalities": {"image": [3, "image_size", "image_size"], "text": [max_tokens]},  # text: at most max_tokens
        **tokenizer_info(tokenizer, max_tokens, np.array([r["tokens"] for r in rows]), any_pad=True),
        "class_counts": _class_counts(rows, len(classes)),
        "split_sizes": {s: len(part) for s, part in split_rows.items()},
        "split_counts": {s: _class_counts(part, len(classes)) for s, part in split_rows.items()},
        "split_note": "test is the official test split (images/test, texts/test_titles.csv); val is carved at load "
        "time from the train pairs (data.val_fraction, data.seed; random.Random(seed).shuffle)",
        "image_formats": dict(sorted(Counter(r["image_format"] for r in rows).items())),
        "layout": {"raw": str(found.raw), "images": "images/<split>/<class>/<file>",
                   "texts": "texts/<split>_titles.csv: image_file_name,text,label"},  # fmt: skip
        "csv": {s: {"rows": c["rows"], "header": c["header"], "malformed": _listed(c["malformed"]),
                    "duplicates": _listed(c["duplicates"])} for s, c in found.csv.items()},  # fmt: skip
        "unrecognised": _listed(found.unrecognised),
        "hidden_files": found.hidden,
        "files": {name: file_sha256(out / name) for name in (INDEX, TOKENS, OFFSETS)},
    }


def _listed(entries: Sequence[str]) -> dict:
    return {"count": len(entries), "examples": list(entries[:EXAMPLES])}


def _class_counts(rows: Sequence[dict], num_classes: int) -> list[int]:
    return np.bincount([r["label"] for r in rows], minlength=num_classes).astype(int).tolist()
