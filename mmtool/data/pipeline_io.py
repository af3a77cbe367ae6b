"""What a prep ``process`` function deals in: the :class:`PrepItem` it is given, the :class:`SkipSample` it
raises for a broken input (with one of the :data:`REASONS`), and the atomic, deterministic writers of its
outputs and of the cache's index. :func:`mmtool.data.pipeline.run_pipeline` runs the items.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmtool.files import atomic_write_bytes, atomic_write_text

REASONS = {
    "zero_byte": "the file is empty (0 bytes)",
    "not_media": "no audio/video container could be recognised (e.g. a text or HTML file)",
    "truncated": "the file ends before its streams do (an interrupted download)",
    "corrupt": "the container opened but a frame or packet could not be decoded",
    "no_video": "the file has no video stream",
    "no_audio": "the file has no audio stream",
    "unreadable": "the path exists but cannot be read (permissions, or not a regular file)",
    "too_short": "fewer frames or seconds than a sample needs",
    "missing_view": "a sample made of several files lacks one of them (e.g. an object without its rear render)",
    "empty_text": "a sample's text is blank, or holds no token but the tokenizer's special ones",
    "bad_encoding": "a sample's text is not valid UTF-8 (nor, where the dataset allows it, its fallback encoding)",
    "missing_pair": "an image-text sample lacks one half: an image without a text row, or a row without its image",
    "bad_label": "a sample's label row names a class the dataset does not have",
    "no_transcript": "an utterance without its line in the transcription file (IEMOCAP)",
    "outside_video": "an utterance whose time span does not lie inside its dialog video (IEMOCAP)",
    "missing_depth": "a gesture whose depth video (NVGesture sk_depth.avi) is absent while its colour video is there",
    "bad_range": "a listed frame range that is malformed, or starts outside its video (NVGesture start:end)",
    "error": "an unexpected error while decoding (message recorded)",
}


class SkipSample(Exception):
    """Raised by a ``process`` function: this sample is broken in a known way (``reason`` in REASONS)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown skip reason {reason!r} (known: {', '.join(REASONS)})")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class PrepItem:
    """One sample to prepare. ``key`` is unique and file-name safe (outputs are named after it)."""

    key: str
    split: str
    label: int
    sources: tuple[str, ...]  # the raw files or folders read (recorded with a skip)
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


# --------------------------------------------------------------------------------------------- outputs
def save_npy(path: Path, array: np.ndarray) -> str:
    """Write ``array`` as ``.npy`` atomically; returns the file's sha256 (deterministic bytes)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Fill a temporary sibling folder, then rename it to ``path``: a reader never sees half a folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
