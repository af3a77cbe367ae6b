"""Checks of a prepared cache against its manifest.

A manifest is not trusted: loading checks what it says (``n``, ``num_classes``, ``class_counts``, the
label range, per-modality shapes) against the data actually loaded, with shapes and one bincount of the
labels (:func:`check_labels`, :func:`~mmtool.data.cache_arrays.check_array_manifest`), and every relative
path an index lists must stay inside its root (:class:`RootGuard`). A mismatch is a one-line
:class:`UserError` naming the manifest, the field, both values and the fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmtool.errors import UserError


def read_manifest(folder: Path, fix: str, fmt: int | None = None) -> dict:
    """``folder/manifest.json`` as a dict; unreadable JSON, or (``fmt`` given) another data format than ``fmt``, is a
    :class:`UserError` saying ``fix``."""
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable manifest ({type(err).__name__}; {fix})") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path}: not a readable manifest (a JSON object expected; {fix})")
    if fmt is not None and manifest.get("format") != fmt:
        raise UserError(f"{path} is in data format {manifest.get('format')}, this mmtool reads format {fmt} ({fix})")
    return manifest


# --------------------------------------------------------------------------- manifest vs. data checks
def manifest_field(manifest: dict, name: str, path: Path, fix: str) -> object:
    """``manifest[name]``, or a :class:`UserError` naming the missing field."""
    if name not in manifest:
        raise UserError(f"{path}: field '{name}' is missing ({fix})")
    return manifest[name]


def check_class_rows(folder: Path, manifest: dict, rows: list[dict], index: str, splits: Sequence[str],
                     fix: str) -> None:  # fmt: skip
    """An index of class-folder datasets against its manifest (``folder/manifest.json``): the counts
    (:func:`check_labels`), and each row's ``class``, ``label`` and ``split`` agree with ``class_names`` and
    ``splits`` (``index`` names the index file in messages)."""
    path, where = folder / "manifest.json", folder / index
    names = manifest.get("class_names")
    if not isinstance(names, list):
        raise UserError(f"{path}: field 'class_names' is missing or not a list ({fix})")
    labels = np.array([r["label"] for r in rows], dtype=np.int64)
    check_labels(path, manifest, labels, fix, str(where), len(names), "its field 'class_names'")
    for line, row in enumerate(rows, start=1):
        if row.get("split") not in splits or names[row["label"]] != row.get("class"):
            raise UserError(f"{where}:{line}: class {row.get('class')!r}, label {row['label']} and split "
                            f"{row.get('split')!r} do not agree with {path} ({fix})")  # fmt: skip


def check_labels(
    path: Path,
    manifest: dict,
    labels: np.ndarray,
    fix: str,
    held: str,
    num_classes: int | None = None,
    defined_by: str = "this dataset",
) -> None:
    """``n``, ``num_classes``, the label range and ``class_counts`` of the manifest at ``path`` agree with
    ``labels`` (N,), the labels actually loaded (``held`` names where they come from, for messages).

    ``num_classes``: the number of classes ``defined_by`` defines, where known; the manifest's figure must
    equal it, and in any case cover every label and have ``class_counts`` of that length. One bincount.
    """

    def mismatch(name: str, says: object, found: str) -> UserError:
        return UserError(f"{path}: field '{name}' is {says}, but {found} ({fix})")

    n = manifest_field(manifest, "n", path, fix)
    if n != len(labels):
        raise mismatch("n", n, f"{held} holds {len(labels)} samples")
    classes = manifest_field(manifest, "num_classes", path, fix)
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise mismatch("num_classes", classes, "a positive whole number is expected")
    if num_classes is not None and classes != num_classes:
        raise mismatch("num_classes", classes, f"{defined_by} has {num_classes} classes")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise mismatch("num_classes", classes, f"the labels of {held} run from {labels.min()} to {labels.max()}")
    counts = np.bincount(labels, minlength=classes).tolist() if len(labels) else [0] * classes
    if manifest_field(manifest, "class_counts", path, fix) != counts:
        raise mismatch("class_counts", manifest["class_counts"], f"the labels of {held} count {counts}")


class RootGuard:
    """Refuses relative paths (index entries, split-file lines) that leave ``root``: absolute ones, ones
    with a ``..`` component, and ones that resolve outside ``root`` through a link.

    Cheap for a whole index: whether a folder resolves inside the root is memoised (a dataset's entries
    share a few hundred folders); an entry itself costs one ``lstat``, and a resolve only when it is a link.
    """

    def __init__(self, root: Path, fix: str) -> None:
        self.root, self.fix = Path(root), fix
        self._tops: dict[str, str] = {}  # within -> its real path
        self._folders: dict[tuple[str, str], bool] = {}  # (within, folder) -> resolves inside

    def check(self, rel: object, where: str, within: str = "", links: bool = True) -> None:
        """``rel``, listed at ``where`` (e.g. ``index.jsonl:12 rgb_dir``), stays inside the root, and inside
        its sub-folder ``within`` when given (that folder may itself be a link: a layout assembled from
        several disks). ``links=False``: the lexical checks only (a path recorded, never opened).

        Raises:
            UserError: naming ``where``, the entry, the folder it must stay in and the fix.
        """
        inside = self.root / within if within else self.root
        if not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")):
            raise UserError(f"{where}: {rel!r} is not a path relative to {self.root} ({self.fix})")
        parts = rel.replace("\\", "/").split("/")
        if ".." in parts:
            raise UserError(f"{where}: {rel!r} has a '..' component, it must stay inside {inside} ({self.fix})")
        lead = within.split("/") if within else []
        if parts[: len(lead)] != lead or len(parts) == len(lead):
            raise UserError(f"{where}: {rel!r} is not inside {inside} ({self.fix})")
        if not links:
            return
        if within not in self._tops:
            self._tops[within] = os.path.realpath(inside)
        parent = os.path.join(self.root, *parts[:-1])
        if (within, parent) not in self._folders:
            self._folders[within, parent] = self._resolves_inside(parent, within)
        target = os.path.join(parent, parts[-1])
        if not self._folders[within, parent] or (os.path.islink(target) and not self._resolves_inside(target, within)):
            raise UserError(f"{where}: {rel!r} leads outside {inside} through a link ({self.fix})")

    def _resolves_inside(self, path: str, within: str) -> bool:
        real, top = os.path.realpath(path), self._tops[within]
        return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def check_sampled_files(paths: list[Path], index: Path, fix: str, samples: int = 3) -> None:
    """The files of a few evenly spaced samples of a cache's ``index`` exist: catches a moved or wrong raw folder
    cheaply (a cache that reads its samples from the raw copy: Food-101, MVSA)."""
    picks = sorted({round(j * (len(paths) - 1) / max(1, samples - 1)) for j in range(samples)}) if paths else []
    for path in (Path(paths[i]) for i in picks):
        if not path.is_file():
            raise UserError(f"{path} (listed in {index}) does not exist: pass data.raw=DIR of the prepared copy, or "
                            f"{fix}")  # fmt: skip


def read_checked_index(folder: Path, manifest: dict, name: str, fix: str) -> list[dict]:
    """The rows of the cache's index file ``name``, after checking its sha256 against the manifest's ``files``
    (nothing else is hashed)."""
    import hashlib

    from mmtool.data.pipeline_io import read_jsonl

    path = folder / name
    data = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(data).hexdigest() != manifest.get("files", {}).get(name):
        raise UserError(f"{path} is missing or does not match {folder / 'manifest.json'} ({fix})")
    return read_jsonl(path)
