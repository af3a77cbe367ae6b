"""Prepared caches: building them (``prep``) and loading them.

A dataset family registers a :class:`~mmtool.data.registry.DatasetSpec` under its short name (see
:mod:`mmtool.data.registry`). ``prep`` writes the family's
loader-ready cache to ``<root>/<name>/<key>/`` with a ``manifest.json``; training stages load that cache
and never regenerate data behind the user's back.


What loading checks of a cache against its manifest is in :mod:`mmtool.data.cache_checks`; caches of
in-memory arrays (one ``data.npz``) are written and read back by :mod:`mmtool.data.cache_arrays`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mmtool.data.duplicate import apply_duplicate
from mmtool.data.missing import apply_missing
from mmtool.data.pipeline_journal import JOURNAL
from mmtool.data.registry import DATASETS, PrepOptions
from mmtool.data.source import ArraySource, SplitSource
from mmtool.data_config import MISSING_KEYS, DataConfig
from mmtool.errors import UserError
from mmtool.files import write_json

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
    data = apply_duplicate(spec.load(cfg, folder), cfg)  # data.duplicate: every modality reads one's input
    return apply_missing(data, cfg)  # data.missing_rate > 0: presence masks per split


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
    skip = {"name", "root", "raw", *MISSING_KEYS}  # masks are drawn at load time, not prepared
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
