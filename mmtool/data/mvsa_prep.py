"""MVSA-Single prep: ``labelResultAll.txt`` read, the label-agreement rule applied, each kept pair's tweet decoded
and tokenized once and its image decoded once, then the index, the token arrays and the manifest. The dataset is
described in :mod:`mmtool.data.mvsa`.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmtool.data import PrepOptions
from mmtool.data.food101_prep import IMAGE_SUFFIXES, _class_counts, _listed, check_photo
from mmtool.data.pipeline import run_pipeline
from mmtool.data.pipeline_io import PrepItem, SkipSample, file_sha256, save_npy, write_jsonl
from mmtool.data.registry import dataset_settings
from mmtool.data.settings import MVSASettings
from mmtool.data.text import (
    OFFSETS,
    TOKENS,
    load_tokenizer,
    pack,
    resolve_tokenizer,
    text_ids,
    tokenizer_fingerprint,
    tokenizer_info,
)
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

FORMAT = 1  # bump when the index or the token arrays change
NAME = "mvsa"
MODALITIES = ("image", "text")
# label = position in the sorted names, as MLA's dataset/dataset.py does (classes = sorted(stat_mvsa.txt's lines))
CLASSES = ("negative", "neutral", "positive")
LABELS, DATA = "labelResultAll.txt", "data"
INDEX, FILTERED = "index.jsonl", "filtered.jsonl"
# a tweet's bytes are read as UTF-8 (a byte-order mark dropped), else as Windows-1252; bytes that are neither
# (0x81, 0x8D, 0x8F, 0x90, 0x9D undefined in cp1252) or a NUL byte are `bad_encoding`
ENCODINGS = ("utf-8-sig", "cp1252")
ID = re.compile(r"\w[\w-]*")  # a sample id: the file stem of data/<id>.jpg (digits in the release)
EXAMPLES = 20


def cache_key(cfg: DataConfig) -> str:
    """``tok-<fingerprint>-L<max_tokens>`` as Food-101's: the split is drawn at load time, so seed and fractions
    are not part of it.

    Raises:
        UserError: ``data.n`` set (MVSA uses every kept pair), or no tokenizer.
    """
    if cfg.n is not None:
        raise UserError(f"key 'data.n': {NAME} uses every pair prep keeps; remove it (data.test_fraction and "
                        "data.val_fraction set the split)")  # fmt: skip
    s = dataset_settings(cfg, MVSASettings)
    return f"tok-{tokenizer_fingerprint(resolve_tokenizer(s.tokenizer, NAME))}-L{s.max_tokens}"


def resolve_raw(raw: str | None) -> Path:
    """The MVSA_Single folder holding ``data/`` and ``labelResultAll.txt``.

    Raises:
        UserError: none given, not a folder, or either part absent.
    """
    if not raw:
        raise UserError(f"{NAME} needs its raw folder: `mmtool prep {NAME} --raw DIR` (see data_prep/mvsa.md)")
    path = Path(raw).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"{path} is not a folder (--raw must hold data/ and {LABELS} of MVSA-Single)")
    absent = [p for p, ok in ((f"{DATA}/", (path / DATA).is_dir()), (LABELS, (path / LABELS).is_file())) if not ok]
    if absent:
        raise UserError(f"{path} has no {' or '.join(absent)} (expected data/<id>.jpg, data/<id>.txt and {LABELS} "
                        "of MVSA-Single; see data_prep/mvsa.md)")  # fmt: skip
    return path


def combine_labels(text_label: str, image_label: str) -> str | None:
    """One label for a pair annotated per modality (the rule of the MVSA literature, e.g. Xu & Mao 2017, that
    MLA's and QMF's split files follow): equal labels are kept; a neutral one gives way to the other; positive
    against negative is None (the pair is dropped)."""
    if text_label == image_label:
        return text_label
    if text_label == "neutral":
        return image_label
    if image_label == "neutral":
        return text_label
    return None


def decode_text(data: bytes, key: str) -> tuple[str, str]:
    """(text, encoding) of a tweet's bytes: :data:`ENCODINGS` tried in order.

    Raises:
        SkipSample: ``bad_encoding`` (no encoding reads the bytes, or they hold a NUL byte: not a text).
    """
    nul = data.find(b"\0")
    if nul >= 0:
        raise SkipSample("bad_encoding", f"{key}: a NUL byte at offset {nul}: not a text file")
    for encoding in ENCODINGS:
        try:
            return data.decode(encoding), encoding.removesuffix("-sig")
        except UnicodeDecodeError:
            continue
    shown = data.decode("utf-8", "backslashreplace")[:80]
    raise SkipSample("bad_encoding", f"{key}: neither UTF-8 nor cp1252: {shown!r}")


# --------------------------------------------------------------------------------------------- raw layout
@dataclass
class Scan:
    """What the raw folder holds: label rows, images and texts per id, and the rest, counted."""

    raw: Path
    rows: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (text label, image label) as written
    images: dict[str, str] = field(default_factory=dict)  # id -> path relative to raw
    texts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)  # rows, header, malformed, duplicates
    unrecognised: list[str] = field(default_factory=list)
    hidden: int = 0


def scan(raw: Path) -> Scan:
    """Every label row of ``raw`` and every file of ``raw/data``."""
    rows, labels = read_labels(raw / LABELS)
    found = Scan(raw, rows, labels=labels)
    for file in sorted(os.listdir(raw / DATA)):
        stem, suffix = os.path.splitext(file)
        kind = found.images if suffix.lower() in IMAGE_SUFFIXES else found.texts if suffix.lower() == ".txt" else None
        if file.startswith("."):  # e.g. macOS "._1.jpg" resource forks
            found.hidden += 1
        elif kind is None or not ID.fullmatch(stem) or stem in kind:
            found.unrecognised.append(f"{DATA}/{file}")
        else:
            kind[stem] = f"{DATA}/{file}"
    return found


def read_labels(path: Path) -> tuple[dict[str, tuple[str, str]], dict[str, Any]]:
    """The rows ``<id> TAB <text label>,<image label>`` of ``labelResultAll.txt`` (labels lower-cased) by id, and
    what the file held. A first row whose id is not a number is the
    header (``ID\\ttext,image``); a row of another shape is counted as malformed, a second row of an id as a
    duplicate (the first counts).

    Raises:
        UserError: the file is unreadable.
    """
    try:
        text = path.read_bytes().decode("utf-8", errors="replace").removeprefix("\ufeff")
    except OSError as err:
        raise UserError(f"{path}: {err.strerror or type(err).__name__} (see data_prep/mvsa.md)") from None
    table: dict[str, tuple[str, str]] = {}
    info: dict[str, Any] = {"rows": 0, "header": False, "malformed": [], "duplicates": []}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.strip().split(None, 1)
        if not fields:
            continue
        labels = fields[1].replace(" ", "").lower().split(",") if len(fields) == 2 else []
        if number == 1 and not fields[0].isdigit():  # the release's ids are numbers; its header starts "ID"
            info["header"] = True
        elif len(labels) != 2 or not ID.fullmatch(fields[0]):
            info["malformed"].append(f"{LABELS}:{number}: {line.strip()[:60]!r}")
        elif fields[0] in table:
            info["duplicates"].append(fields[0])
        else:
            info["rows"] += 1
            table[fields[0]] = (labels[0], labels[1])
    return table, info


def id_order(key: str) -> tuple[int, str]:
    """Numeric ids in numeric order (2 before 10), others after them."""
    return (int(key), key) if key.isdigit() else (1 << 62, key)


def plan(found: Scan) -> tuple[list[PrepItem], list[dict]]:
    """One prep item per id with a label row or a file, and the ids the label rule drops (positive vs negative:
    filtered, not broken: never items, so never counted against the failure budget)."""
    items, filtered = [], []
    for key in sorted(set(found.rows) | set(found.images) | set(found.texts), key=id_order):
        row = found.rows.get(key)
        known = row is not None and set(row) <= set(CLASSES)
        combined = combine_labels(*row) if known else None
        if known and combined is None:
            filtered.append({"key": key, "reason": "conflicting_labels", "text_label": row[0], "image_label": row[1]})
            continue
        image, text = found.images.get(key), found.texts.get(key)
        meta = {"image": image, "text": text, "row": list(row) if row else None}
        label = CLASSES.index(combined) if combined else -1
        items.append(PrepItem(key, "all", label, tuple(p for p in (image, text) if p), meta))
    return items, filtered


# --------------------------------------------------------------------------------------------- prep
def prepare(cfg: DataConfig, out: Path, options: PrepOptions) -> dict:
    """Prepare the MVSA-Single cache in ``out`` from ``data.raw``; returns its manifest (the spec's ``prepare``)."""
    s = dataset_settings(cfg, MVSASettings)
    tokenizer = resolve_tokenizer(s.tokenizer, NAME)
    load_tokenizer(str(tokenizer))  # a bad folder fails here, once
    found = scan(resolve_raw(cfg.raw))
    items, filtered = plan(found)
    for stale in out.glob(".*.tmp*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    process = functools.partial(process_pair, raw=str(found.raw), tokenizer=str(tokenizer), max_tokens=s.max_tokens)
    result = run_pipeline(items, process, out, workers=options.workers, max_skip_frac=options.max_skip_frac,
                          label=f"prep {NAME}", raw=found.raw)  # fmt: skip
    records = sorted(result.records, key=lambda r: id_order(r["key"]))
    tokens, offsets = pack([np.asarray(r["tokens"], dtype=np.int32) for r in records])
    save_npy(out / TOKENS, tokens)
    save_npy(out / OFFSETS, offsets)
    rows = [{**r, "tokens": len(r["tokens"])} for r in records]
    write_jsonl(out / INDEX, rows)
    write_jsonl(out / FILTERED, filtered)
    manifest = _manifest(found, rows, out, tokenizer, s.max_tokens)
    manifest.update(filtered_counts=dict(Counter(f["reason"] for f in filtered)), **result.summary(len(items)))
    return manifest


def process_pair(item: PrepItem, out: Path, *, raw: str, tokenizer: str, max_tokens: int) -> dict:
    """Check one pair, decode and tokenize its tweet, decode its image; returns its index row with its ids.

    Raises:
        SkipSample: ``missing_pair``, ``bad_label``, ``unreadable``, ``bad_encoding``, ``empty_text``, or an image
            reason of :func:`~mmtool.data.food101_prep.check_photo`.
    """
    meta, key = item.meta, item.key
    _check_pair(key, meta, item.label)
    try:
        data = (Path(raw) / meta["text"]).read_bytes()
    except OSError as err:
        raise SkipSample("unreadable", f"{meta['text']}: {err.strerror or type(err).__name__}") from None
    text, encoding = decode_text(data, meta["text"])
    ids = text_ids(tokenizer, text, max_tokens) if text.strip() else None
    if ids is None:
        raise SkipSample("empty_text", f"{meta['text']}: no word in {text[:80]!r}")
    image_format = check_photo(Path(raw) / meta["image"])
    return {"label": item.label, "class": CLASSES[item.label], "image": meta["image"], "text": meta["text"],
            "text_label": meta["row"][0], "image_label": meta["row"][1], "encoding": encoding,
            "image_format": image_format, "tokens": ids.tolist()}  # fmt: skip


def _check_pair(key: str, meta: dict, label: int) -> None:
    if meta["row"] is None:
        raise SkipSample("missing_pair", f"{key}: files without a row in {LABELS}")
    absent = [f"{DATA}/{key}{s}" for s, part in ((".jpg", meta["image"]), (".txt", meta["text"])) if part is None]
    if absent:
        raise SkipSample("missing_pair", f"{key}: a row of {LABELS} without {' and '.join(absent)}")
    if label < 0:
        raise SkipSample("bad_label", f"{key}: labels {','.join(meta['row'])!r}; expected two of {', '.join(CLASSES)}")


def _manifest(found: Scan, rows: list[dict], out: Path, tokenizer: Path, max_tokens: int) -> dict:
    return {
        "dataset": NAME,
        "format": FORMAT,
        "n": len(rows),
        "num_classes": len(CLASSES),
        "class_names": list(CLASSES),
        "modalities": {"image": [3, "image_size", "image_size"], "text": [max_tokens]},
        **tokenizer_info(tokenizer, max_tokens, np.array([r["tokens"] for r in rows])),
        "class_counts": _class_counts(rows, len(CLASSES)),
        "label_rule": "equal labels kept; neutral gives way to the other label; positive vs negative filtered",
        "label_pairs": dict(sorted(Counter(f"{r['text_label']},{r['image_label']}" for r in rows).items())),
        "text_encodings": dict(sorted(Counter(r["encoding"] for r in rows).items())),
        "image_formats": dict(sorted(Counter(r["image_format"] for r in rows).items())),
        "split_note": "no official split: train/val/test drawn at load time from data.seed (test: data.test_fraction "
        "of all pairs; val: data.val_fraction of the rest); recipes: 8:1:1 as MLA/QMF",
        "layout": {"raw": str(found.raw), "data": "data/<id>.jpg, data/<id>.txt",
                   "labels": f"{LABELS}: <id>\\t<text label>,<image label>"},  # fmt: skip
        "labels": {"rows": found.labels["rows"], "header": found.labels["header"],
                   "malformed": _listed(found.labels["malformed"]),
                   "duplicates": _listed(found.labels["duplicates"])},  # fmt: skip
        "unrecognised": _listed(found.unrecognised),
        "hidden_files": found.hidden,
        "files": {name: file_sha256(out / name) for name in (INDEX, TOKENS, OFFSETS, FILTERED)},
    }
