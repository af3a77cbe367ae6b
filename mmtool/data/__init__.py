"""Datasets: registry, prepared caches, splits and batch iteration.

A dataset family registers a :class:`DatasetSpec` under its short name. ``prep`` writes the family's
loader-ready cache to ``<root>/<name>/<key>/`` with a ``manifest.json``; training stages load that cache
and never regenerate data behind the user's back.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmtool.config import DataConfig
from mmtool.data.pipeline import JOURNAL
from mmtool.data.source import ArraySource, Batch, DiskSource, Shard, SplitSource
from mmtool.errors import UserError
from mmtool.registry import Registry
from mmtool.runs import atomic_write_bytes, write_json

__all__ = ["ArraySource", "Batch", "DiskSource", "Shard", "SplitSource", "Split", "Dataset", "DATASETS"]

SPLITS = ("train", "val", "test")


Split = ArraySource  # the in-memory split (name kept for the array families and their tests)


@dataclass
class Dataset:
    """A prepared dataset: metadata plus its train/val/test splits."""

    name: str
    modalities: tuple[str, ...]
    num_classes: int
    input_dims: dict[str, int | list[int]]  # per-sample shape: an int for vectors, else e.g. [C, H, W]
    splits: dict[str, SplitSource]
    class_names: list[str] | None = None


@dataclass(frozen=True)
class PrepOptions:
    """How ``prep`` runs (not what it produces): worker processes and the failure budget."""

    workers: int = 0
    max_skip_frac: float = 0.05  # skipped (broken) inputs allowed, as a fraction of the listed ones


@dataclass(frozen=True)
class DatasetSpec:
    """How a dataset family is prepared (raw -> cache) and loaded (cache -> :class:`Dataset`)."""

    prepare: Callable[[DataConfig, Path, PrepOptions], dict]
    load: Callable[[DataConfig, Path], Dataset]
    cache_key: Callable[[DataConfig], str]
    description: str
    data_format: int | None = None  # a cache whose manifest names another format is rebuilt by `prep`
    raw_doc: str | None = None  # real datasets: where the published layout `prep --raw DIR` reads is described


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def cache_dir(cfg: DataConfig) -> Path:
    return Path(cfg.root) / cfg.name / DATASETS.get(cfg.name).cache_key(cfg)


def prepare(cfg: DataConfig, force: bool = False, options: PrepOptions | None = None) -> tuple[Path, dict]:
    """Build the cache for ``cfg`` unless a complete one in the current data format exists; returns
    (folder, manifest). A cache written by an older format is rebuilt in place."""
    spec = DATASETS.get(cfg.name)
    out = cache_dir(cfg)
    manifest_path = out / "manifest.json"
    raw = str(Path(cfg.raw).expanduser().resolve()) if cfg.raw else None
    if manifest_path.is_file() and not force:
        manifest = json.loads(manifest_path.read_text())
        if raw and manifest.get("raw") not in (None, raw):
            raise UserError(
                f"{out} was prepared from {manifest['raw']}, not {raw}: give another --root, or --force to "
                "rebuild it from the new folder"
            )
        if spec.data_format is None or manifest.get("format") == spec.data_format:
            return out, {**manifest, "run": {"cached": True}}
    manifest_path.unlink(missing_ok=True)  # stale or forced: incomplete until the new manifest is written
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    manifest = spec.prepare(cfg, out, options or PrepOptions())
    # how this prep ran (time, work reused after an interruption) is reported, not stored: the cache's
    # bytes depend on the data only, however often prep was interrupted
    run = {**manifest.pop("run", {}), "seconds": round(time.perf_counter() - started, 3)}
    if raw:
        manifest["raw"] = raw  # what a later `prep --raw` is checked against
    write_json(manifest_path, manifest)  # written last: its presence marks a complete cache
    (out / JOURNAL).unlink(missing_ok=True)  # kept until now: a kill before the manifest redoes nothing
    return out, {**manifest, "run": run}


def load_dataset(cfg: DataConfig) -> Dataset:
    spec = DATASETS.get(cfg.name)
    folder = cache_dir(cfg)
    if not (folder / "manifest.json").is_file():
        how = f"mmtool prep {cfg.name} --raw DIR" if spec.raw_doc else f"mmtool prep {cfg.name}"
        layout = f"; DIR holds the layout of {spec.raw_doc}" if spec.raw_doc else ""
        raise UserError(
            f"dataset {cfg.name!r} is not prepared under {folder} (run `{how}` with the same data.* settings{layout})"
        )
    return spec.load(cfg, folder)


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


def read_verified_arrays(cfg: DataConfig, folder: Path, data_format: int) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest and ``data.npz`` arrays of a cache, after checking its data format and checksum."""
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("format") != data_format:
        raise UserError(
            f"{folder} was prepared in data format {manifest.get('format')}, this mmtool writes format "
            f"{data_format} (run `mmtool prep {cfg.name} --force` with the same data.* settings)"
        )
    path = folder / "data.npz"
    if not _verified_before(path, manifest["files"]["data.npz"]):
        blob = path.read_bytes() if path.is_file() else b""
        if hashlib.sha256(blob).hexdigest() != manifest["files"]["data.npz"]:
            raise UserError(
                f"{path} is missing or does not match its manifest (re-run `mmtool prep {cfg.name} --force`)"
            )
        _remember_verified(path, manifest["files"]["data.npz"])
    with np.load(path) as npz:
        return manifest, {k: npz[k] for k in npz.files}


VERIFIED = ".verified.json"  # (size, mtime, sha256) of a file whose checksum was checked once


def _stat_key(path: Path, sha: str) -> dict:
    st = path.stat()
    return {"file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}


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


EVAL_SUFFIX = "_eval"  # "<m>_eval" in a cache: the version of modality m that validation and test read


def dataset_from_arrays(
    cfg: DataConfig, manifest: dict, arrays: dict[str, np.ndarray], modalities: tuple[str, ...]
) -> Dataset:
    """Split cached arrays by ``data.seed``/fractions; val and test read ``<m>_eval`` where it is stored."""
    idx = split_indices(manifest["n"], cfg.seed, cfg.test_fraction, cfg.val_fraction)

    def part(m: str, split: str, ix: np.ndarray) -> torch.Tensor:
        source = arrays[m] if split == "train" else arrays.get(m + EVAL_SUFFIX, arrays[m])
        return torch.from_numpy(source[ix])

    splits = {
        k: Split({m: part(m, k, ix) for m in modalities}, torch.from_numpy(arrays["y"][ix])) for k, ix in idx.items()
    }
    return Dataset(cfg.name, modalities, manifest["num_classes"], dict(manifest["modalities"]), splits)


# register the built-in families
import mmtool.data.registry_laziness  # noqa: E402,F401
from mmtool.data import registry_synthetic, ucf101, vggsound  # noqa: E402,F401
