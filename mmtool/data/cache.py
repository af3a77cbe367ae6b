"""Prepared caches: building them (``prep``), loading them, and checking them against their manifests.

A dataset family registers a :class:`~mmtool.data.registry.DatasetSpec` under its short name (see
:mod:`mmtool.data.registry`). ``prep`` writes the family's
loader-ready cache to ``<root>/<name>/<key>/`` with a ``manifest.json``; training stages load that cache
and never regenerate data behind the user's back.

A manifest is not trusted: loading checks what it says (``n``, ``num_classes``, ``class_counts``, the
label range, per-modality shapes) against the data actually loaded, with shapes and one bincount of the
labels (:func:`check_labels`, :func:`check_array_manifest`), and every relative path an index lists must stay
inside its root (:class:`RootGuard`). A mismatch is a one-line :class:`UserError` naming the manifest,
the field, both values and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmtool.data.pipeline import JOURNAL
from mmtool.data.registry import DATASETS, PrepOptions
from mmtool.data.source import ArraySource, SplitSource
from mmtool.data_config import DataConfig
from mmtool.errors import UserError
from mmtool.files import atomic_write_bytes, write_json

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


def cache_dir(cfg: DataConfig) -> Path:
    from mmtool.paths import data_root

    return data_root(cfg.root) / cfg.name / DATASETS.get(cfg.name).cache_key(cfg)


PREP_STATE = ".prep.json"  # an unfinished cache: which --raw folder its journal was made from


def prepare(cfg: DataConfig, force: bool = False, options: PrepOptions | None = None) -> tuple[Path, dict]:
    """Build the cache for ``cfg`` unless a complete one in the current data format exists; returns
    (folder, manifest). A cache written by an older format is rebuilt in place. One prep at a time per
    cache folder (a file lock): a second command waits, then finds the cache complete."""
    out = cache_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    with _prep_lock(out):
        return _prepare_locked(cfg, out, force, options or PrepOptions())


def _prepare_locked(cfg: DataConfig, out: Path, force: bool, options: PrepOptions) -> tuple[Path, dict]:
    spec = DATASETS.get(cfg.name)
    manifest_path = out / "manifest.json"
    raw = str(Path(cfg.raw).expanduser().resolve()) if cfg.raw else None
    if manifest_path.is_file() and not force:
        manifest = json.loads(manifest_path.read_text())
        _check_same_raw(out, manifest.get("raw"), raw, "was prepared from")
        if spec.data_format is None or manifest.get("format") == spec.data_format:
            return out, {**manifest, "run": {"cached": True}}
    if not force and (out / JOURNAL).is_file():  # an interrupted prep: its journal is only valid for its --raw
        _check_same_raw(out, _read_state(out).get("raw"), raw, "holds an unfinished prep of")
    manifest_path.unlink(missing_ok=True)  # stale or forced: incomplete until the new manifest is written
    if force:
        (out / JOURNAL).unlink(missing_ok=True)  # --force rebuilds: nothing of an earlier prep is reused
    write_json(out / PREP_STATE, {"raw": raw})
    started = time.perf_counter()
    manifest = spec.prepare(cfg, out, options)
    _check_not_empty(cfg, out, manifest)
    # how this prep ran (time, work reused after an interruption) is reported, not stored: the cache's
    # bytes depend on the data only, however often prep was interrupted
    run = {**manifest.pop("run", {}), "seconds": round(time.perf_counter() - started, 3)}
    if raw:
        manifest["raw"] = raw  # what a later `prep --raw` is checked against
    write_json(manifest_path, manifest)  # written last: its presence marks a complete cache
    (out / JOURNAL).unlink(missing_ok=True)  # kept until now: a kill before the manifest redoes nothing
    (out / PREP_STATE).unlink(missing_ok=True)
    return out, {**manifest, "run": run}


def _check_same_raw(out: Path, recorded: str | None, raw: str | None, what: str) -> None:
    if raw and recorded not in (None, raw):
        raise UserError(
            f"{out} {what} {recorded}, not {raw}: give another --root, or --force to rebuild it from the new folder"
        )


def _read_state(out: Path) -> dict:
    try:
        state = json.loads((out / PREP_STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _check_not_empty(cfg: DataConfig, out: Path, manifest: dict) -> None:
    """A cache with no sample, or a train or test split with none, is not a dataset: fail now, not with a
    NaN loss at the first epoch of training."""
    if not manifest.get("n"):
        raise UserError(f"prep {cfg.name}: no usable sample under {cfg.raw or out} (see {out}/skipped.jsonl)")
    empty = [name for name, size in _leaves(manifest.get("split_sizes") or {}) if size == 0
             and name.rsplit(".", 1)[-1] in ("train", "test")]  # fmt: skip
    if empty:
        raise UserError(
            f"prep {cfg.name}: split {', '.join(empty)} has no sample (split sizes {manifest['split_sizes']}); "
            "check the split files and --raw"
        )


def _leaves(tree: dict, prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out += _leaves(value, name + ".") if isinstance(value, dict) else [(name, value)]
    return out


@contextmanager
def _prep_lock(out: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``.<cache>.lock`` beside the cache folder (outside it: a cache holds its
    data only), dropped by the kernel however its holder ends."""
    import fcntl

    try:
        fh = open(out.parent / f".{out.name}.lock", "a")  # noqa: SIM115
    except OSError:  # a read-only dataset folder: nobody can prepare into it, so nothing to serialise
        yield
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def load_dataset(cfg: DataConfig) -> Dataset:
    """The prepared dataset ``cfg`` names. An embedded dataset (generated, no ``--raw``) that is not
    prepared yet is prepared now, with a line on stderr; a real one needs `mmtool prep NAME --raw DIR`."""
    spec = DATASETS.get(cfg.name)
    folder = cache_dir(cfg)
    if not (folder / "manifest.json").is_file():
        how = prep_command(cfg, "--raw DIR" if spec.raw_doc else "")
        if spec.raw_doc:
            raise UserError(
                f"dataset {cfg.name!r} is not prepared under {folder} (run `{how}`; DIR holds the layout of "
                f"{spec.raw_doc})"
            )
        _prepare_on_first_use(cfg, folder, how)
    return spec.load(cfg, folder)


def _prepare_on_first_use(cfg: DataConfig, folder: Path, how: str) -> None:
    """Generate an embedded dataset's cache. Under torchrun rank 0 writes it (the other ranks write no
    files) while the others wait for its manifest, taking the prep lock in turn."""
    from mmtool.files import is_writer

    if is_writer():
        _say(f"preparing {cfg.name} under {folder} on first use (as `{how}` would)")
        prepare(cfg)
        return
    for _ in range(3000):  # rank 0 holds the lock while it prepares; at most ~10 minutes
        folder.mkdir(parents=True, exist_ok=True)
        with _prep_lock(folder):
            if (folder / "manifest.json").is_file():
                return
        time.sleep(0.2)
    raise UserError(f"dataset {cfg.name!r}: rank 0 did not prepare {folder} (run `{how}` first)")


def prep_command(cfg: DataConfig, raw: str = "") -> str:
    """The `mmtool prep` command line that builds the cache ``cfg`` reads: the data.* settings that differ
    from their defaults (the dataset's settings class's own, e.g. CREMA-D's 3 frames), as overrides."""
    defaults = DataConfig(name=cfg.name).flat()
    skip = {"name", "root", "raw"}
    extra = [f"data.{k}={_yaml_value(v)}" for k, v in cfg.flat().items()
             if k not in skip and v != defaults.get(k)]  # fmt: skip
    return " ".join(["mmtool prep", cfg.name, *([raw] if raw else []), *extra])


def _yaml_value(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _say(line: str) -> None:
    import os
    import sys

    if os.environ.get("RANK", "0") == "0":
        print(line, file=sys.stderr, flush=True)


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


def read_manifest(folder: Path, fix: str) -> dict:
    """``folder/manifest.json`` as a dict; unreadable JSON is a :class:`UserError` saying ``fix``."""
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable manifest ({type(err).__name__}; {fix})") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path}: not a readable manifest (a JSON object expected; {fix})")
    return manifest


# --------------------------------------------------------------------------- manifest vs. data checks
def manifest_field(manifest: dict, name: str, path: Path, fix: str) -> object:
    """``manifest[name]``, or a :class:`UserError` naming the missing field."""
    if name not in manifest:
        raise UserError(f"{path}: field '{name}' is missing ({fix})")
    return manifest[name]


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


VERIFIED = ".verified.json"  # (size, mtime, sha256) of a file whose checksum was checked once


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


EVAL_SUFFIX = "_eval"  # "<m>_eval" in a cache: the version of modality m that validation and test read


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
