"""The prep journal: which items an interrupted prep finished, kept only while what they were made from is
unchanged (:func:`fingerprint`: the item's list row and the identity of every raw file it reads).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mmtool.data.pipeline_io import PrepItem
from mmtool.files import atomic_write_text

JOURNAL = ".journal.jsonl"


def fingerprint(item: PrepItem, raw: Path | None = None) -> str:
    """What an item was made from: its list row (key, split, label, sources, meta) and the identity of each
    raw file or folder it reads (:func:`_identity`). Equal fingerprints: the item's outputs are still valid."""
    files = [_identity(Path(raw) / s if raw is not None else Path(s)) for s in item.sources]
    row = {"key": item.key, "split": item.split, "label": item.label, "sources": list(item.sources),
           "meta": item.meta, "files": files}  # fmt: skip
    return hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _identity(path: Path) -> list:
    """A file's (path, size, mtime, ctime, inode): a rewrite changes ctime even when size and mtime are put
    back (``cp -p``, ``touch -r``). A folder (a clip's frames): the same for each of its entries, by name."""
    try:
        st = path.stat()
    except OSError:
        return [str(path), None]
    stamp = [str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    if not path.is_dir():
        return stamp
    with os.scandir(path) as entries:
        inside = sorted((e.name, *_stat_tuple(e)) for e in entries)
    return [*stamp, hashlib.sha256(json.dumps(inside).encode()).hexdigest()]


def _stat_tuple(entry: os.DirEntry) -> tuple:
    try:
        st = entry.stat()
    except OSError:
        return (None,)
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def read_journal(path: Path, prints: dict[str, str]) -> dict[str, dict]:
    """Entries of an interrupted run whose item is unchanged (same fingerprint); a line cut by the kill, an
    entry of an item no longer listed or changed since (or written without a fingerprint) is dropped, and
    that item is redone."""
    done: dict[str, dict] = {}
    if not path.is_file():
        return done
    text = path.read_text()
    lines = text.splitlines()
    if text and not text.endswith("\n"):
        lines = lines[:-1]
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        key = entry.get("key") if isinstance(entry, dict) else None
        if key in prints and entry.get("fp") == prints[key]:
            done[key] = entry
    atomic_write_text(path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in done.values()))
    return done
