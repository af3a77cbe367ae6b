"""Caches of in-memory arrays (one ``data.npz``: the synthetic and small sets): written with the common part
of their manifest; read back after checking the data format, the checksum (hashed once, then remembered in
``.verified.json``) and the manifest against the arrays; split by ``data.seed`` and the fractions at load time.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mmtool.data.cache import Dataset, Split
from mmtool.data.cache_checks import check_labels, manifest_field, read_manifest
from mmtool.data_config import DataConfig
from mmtool.errors import UserError
from mmtool.files import atomic_write_bytes, write_json

VERIFIED = ".verified.json"  # (size, mtime, sha256) of a file whose checksum was checked once
EVAL_SUFFIX = "_eval"  # "<m>_eval" in a cache: the version of modality m that validation and test read


def split_indices(n: int, seed: int, test_fraction: float, val_fraction: float) -> dict[str, np.ndarray]:
    """Random train/val/test indices: test is ``test_fraction`` of all, val ``val_fraction`` of the rest."""
    if not (0 < test_fraction < 1 and 0 <= val_fraction < 1):
        raise UserError(
            f"data.test_fraction must be in (0, 1) and data.val_fraction in [0, 1), got {test_fraction}, {val_fraction}"
        )
    order = np.random.default_rng([seed, 1]).permutation(n)  # own stream: independent of generation
    n_test = round(n * test_fraction)
    n_val = round((n - n_test) * val_fraction)
    test, rest = order[:n_test], order[n_test:]
    return {"train": np.sort(rest[n_val:]), "val": np.sort(rest[:n_val]), "test": np.sort(test)}


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> str:
    """Write an ``.npz`` atomically; returns its sha256."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def input_shape(array: np.ndarray) -> int | list[int]:
    """Per-sample input shape of an (N, ...) array as models read it: an int for vectors (N, D), else the
    list of dimensions, e.g. [3, 8, 8] for images (N, 3, 8, 8)."""
    return int(array.shape[1]) if array.ndim == 2 else [int(d) for d in array.shape[1:]]


def write_array_cache(
    cfg: DataConfig, out: Path, build: Callable[[int, int], dict[str, np.ndarray]], n: int, data_format: int
) -> tuple[dict[str, np.ndarray], dict]:
    """Generate ``build(seed, n)``, save it as ``data.npz`` and return (arrays, the manifest's common part:
    sizes, label counts, split sizes for the given fractions, checksum, timing)."""
    started = time.perf_counter()
    arrays = build(cfg.seed, n)
    seconds = time.perf_counter() - started
    sha = save_arrays(out / "data.npz", arrays)
    idx = split_indices(n, cfg.seed, cfg.test_fraction, cfg.val_fraction)
    return arrays, {
        "dataset": cfg.name,
        "format": data_format,
        "seed": cfg.seed,
        "n": n,
        "split_sizes": {k: len(v) for k, v in idx.items()},
        "split_note": "splits are drawn at load time from data.seed, data.test_fraction, data.val_fraction; "
        "per-split figures here are for the fractions given to prep",
        "files": {"data.npz": sha},
        "generate_seconds": round(seconds, 4),
        "skipped": [],
    }


def read_verified_arrays(
    cfg: DataConfig, folder: Path, data_format: int, modalities: tuple[str, ...], num_classes: int | None = None
) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest and ``data.npz`` arrays of a cache, after checking its data format and checksum, and
    the manifest's facts against the arrays (:func:`check_array_manifest`)."""
    manifest = read_manifest(folder, f"run `mmtool prep {cfg.name} --force` with the same data.* settings")
    if manifest.get("format") != data_format:
        raise UserError(
            f"{folder} was prepared in data format {manifest.get('format')}, this mmtool writes format "
            f"{data_format} (run `mmtool prep {cfg.name} --force` with the same data.* settings)"
        )
    path = folder / "data.npz"
    sha = (manifest.get("files") or {}).get("data.npz")
    if not _verified_before(path, sha):
        blob = path.read_bytes() if path.is_file() else b""
        if hashlib.sha256(blob).hexdigest() != sha:
            raise UserError(
                f"{path} is missing or does not match its manifest (re-run `mmtool prep {cfg.name} --force`)"
            )
        _remember_verified(path, sha)
    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # damaged after it was verified
        raise UserError(f"{path} is damaged ({type(err).__name__}: {err}); re-run `mmtool prep {cfg.name} --force`"
                        ) from None  # fmt: skip
    check_array_manifest(cfg, folder, manifest, arrays, modalities, num_classes)
    return manifest, arrays


def check_array_manifest(
    cfg: DataConfig,
    folder: Path,
    manifest: dict,
    arrays: dict[str, np.ndarray],
    modalities: tuple[str, ...],
    num_classes: int | None = None,
) -> None:
    """An array cache's manifest against its arrays: the dataset name, ``n`` (every array holds one row per
    sample), ``modalities`` (the per-sample shape of each, its ``<m>_eval`` version alike), and the labels
    (:func:`check_labels`; ``num_classes`` None: the labels' maximum + 1, the rule prep applies)."""
    path = folder / "manifest.json"
    fix = f"run `mmtool prep {cfg.name} --force` with the same data.* settings"
    held = str(folder / "data.npz")
    if manifest.get("dataset", cfg.name) != cfg.name:
        raise UserError(
            f"{path}: field 'dataset' is {manifest['dataset']!r}, but this cache is read as {cfg.name!r} ({fix})"
        )
    y = arrays.get("y")
    if y is None or y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{held}: no integer label array 'y' of shape (N,) ({fix})")
    if num_classes is None and len(y):  # what prep wrote: the label array's maximum + 1
        check_labels(path, manifest, y, fix, held, int(y.max()) + 1, f"the label array 'y' of {held}")
    else:
        check_labels(path, manifest, y, fix, held, num_classes, cfg.name)
    for name, array in arrays.items():  # a row per sample in every array (labels, inputs, eval versions)
        if array.ndim == 0 or len(array) != len(y):
            raise UserError(f"{held}: array {name!r} has {len(array) if array.ndim else 0} rows, 'y' {len(y)} ({fix})")
    shapes = manifest_field(manifest, "modalities", path, fix)
    if not isinstance(shapes, dict) or sorted(shapes) != sorted(modalities):
        found = {m: input_shape(arrays[m]) for m in modalities if m in arrays}
        raise UserError(f"{path}: field 'modalities' is {shapes}, but {held} holds {found} ({fix})")
    for m in modalities:
        if m not in arrays:
            raise UserError(f"{held}: no array {m!r} for modality {m} ({fix})")
        found = input_shape(arrays[m])
        if shapes[m] != found:
            raise UserError(
                f"{path}: field 'modalities.{m}' is {shapes[m]}, but {held} holds {m} of shape {found} ({fix})"
            )
        evaluated = arrays.get(m + EVAL_SUFFIX)
        if evaluated is not None and evaluated.shape != arrays[m].shape:
            raise UserError(f"{held}: {m}{EVAL_SUFFIX} has shape {evaluated.shape}, {m} {arrays[m].shape} ({fix})")


def _stat_key(path: Path, sha: str) -> dict:
    """What identifies the file that was hashed: a rewrite changes its change time (ctime) or inode even
    when size and modification time are put back (``cp -p``, ``touch -r``), and ctime cannot be set back."""
    st = path.stat()
    return {"file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "inode": st.st_ino, "sha256": sha}  # fmt: skip


def _verified_before(path: Path, sha: str) -> bool:
    """Whether ``path`` was hashed against ``sha`` before and has not changed since (size and mtime):
    a cache is hashed once, not on every run."""
    stamp = path.parent / VERIFIED
    try:
        return path.is_file() and json.loads(stamp.read_text()) == _stat_key(path, sha)
    except (OSError, ValueError):
        return False


def _remember_verified(path: Path, sha: str) -> None:
    try:
        write_json(path.parent / VERIFIED, _stat_key(path, sha))
    except OSError:  # a read-only dataset folder: hash again next time
        pass


def dataset_from_arrays(
    cfg: DataConfig, manifest: dict, arrays: dict[str, np.ndarray], modalities: tuple[str, ...]
) -> Dataset:
    """Split cached arrays by ``data.seed``/fractions; val and test read ``<m>_eval`` where it is stored.
    ``manifest`` is one :func:`read_verified_arrays` checked against ``arrays``."""
    idx = split_indices(len(arrays["y"]), cfg.seed, cfg.test_fraction, cfg.val_fraction)

    def part(m: str, split: str, ix: np.ndarray) -> torch.Tensor:
        source = arrays[m] if split == "train" else arrays.get(m + EVAL_SUFFIX, arrays[m])
        return torch.from_numpy(source[ix])

    splits = {
        k: Split({m: part(m, k, ix) for m in modalities}, torch.from_numpy(arrays["y"][ix])) for k, ix in idx.items()
    }
    return Dataset(cfg.name, modalities, manifest["num_classes"], dict(manifest["modalities"]), splits)
