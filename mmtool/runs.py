"""Run folders: the one owner of every path inside one.

Layout of every run::

    runs/<stage>/<dataset>-<method>-<timestamp>/
        config.yaml      resolved recipe (re-loadable: `mmtool train --resume RUN_DIR`)
        env.json         versions, git SHA, device, seed
        metrics.jsonl    one JSON object per logged epoch / evaluation (null for a number that was not finite)
        checkpoints/     last.pt (resumable; counters only once complete, unless train.keep_optimizer),
                         best.pt (selected on validation), COMPLETE marker
        results.json     the stage's final numbers
        plots/           PNG figures
        features/<key>/  frozen-encoder features cached for later probes and decisions
        <modality>/      a pretrain run's per-modality training (metrics.jsonl, checkpoints/, plots/, features/)
        .lock            flock'ed by the command that owns the run while it runs
        sessions.json    start, end, duration and outcome of each command that worked on the run
        failed.json      the one-line error of a run whose last command failed (removed by a resume)

:class:`Run` is a run folder: :meth:`Run.create` starts one (rank 0 creates, locks and writes config.yaml and
env.json; every rank gets the path), :meth:`Run.open` reads an earlier one (what kind of run it is, from
config.yaml), :meth:`Run.resume` continues one; as a ``with`` block it records the command's session and
outcome, and :meth:`Run.finish` writes results.json. A :class:`Layout` is a folder one training writes into
(the run itself, a pretrain run's modality, a probe's classifier): its metrics, checkpoints
(:class:`CheckpointStore`), plots and feature cache. No other module spells these names or joins them onto
a path (tests/test_architecture.py checks it): a change of layout is a change of this file.

This module is longer than the house's 400 lines on purpose: the layout, the lifecycle that writes it and
the readers that interpret it (status, sessions, what a folder is) must agree, and they agree best in one
place. The primitives it writes with (atomic writes, refused-write messages, JSON Lines) are
:mod:`mmtool.files`, re-exported here for the writers that predate it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmtool.errors import Interrupted, UserError
from mmtool.faults import fault_point
from mmtool.files import MetricsWriter, is_writer, read_json, write_json, writing

if TYPE_CHECKING:
    from mmtool.config import Recipe
    from mmtool.engine.runtime import Runtime
    from mmtool.models import MultiModalNet

# the names inside a run folder, spelt here only
CONFIG, ENV, METRICS, RESULTS, PLOTS = "config.yaml", "env.json", "metrics.jsonl", "results.json", "plots"
CHECKPOINTS, FEATURES, SESSIONS, FAILED, LOCK = "checkpoints", "features", "sessions.json", "failed.json", ".lock"
LAST, BEST, COMPLETE = "last.pt", "best.pt", "COMPLETE"
PREVIOUS = "last.prev.pt"  # the resumable checkpoint before the current one
RESUMABLE = ("train", "pretrain")  # the stages whose runs `--resume` continues
CONFIG_SHA256 = "config_sha256"  # env.json key: config.yaml's hash when the run started
TAGS = {"pretrain": "unimodal", "ensemble": "ume", "utilization": "util"}  # folder name's middle part per stage


# ------------------------------------------------------------------------------------------------ layout
class CheckpointStore:
    """A training's ``checkpoints/`` folder: the resumable ``last.pt`` and its rotations, the selected
    ``best.pt``, the ``COMPLETE`` marker and the epoch snapshots. The file mechanics (atomic, rotated only
    once the new file is on disk, damaged files skipped) are :mod:`mmtool.engine.checkpoint`'s."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.best, self.last = self.folder / BEST, self.folder / LAST

    def create(self) -> None:
        if is_writer():
            with writing(self.folder, "create"):
                self.folder.mkdir(parents=True, exist_ok=True)

    def chain(self, keep: int = 2) -> list[Path]:
        """The ``keep`` newest resumable checkpoints, newest first: last.pt, last.prev.pt, last.prev2.pt, ..."""
        names = [LAST, PREVIOUS, *(f"last.prev{k}.pt" for k in range(2, keep))]
        return [self.folder / n for n in names[:keep]]

    def rotations(self) -> list[Path]:
        return sorted(self.folder.glob("last.prev*.pt"))

    def save_last(self, state: dict[str, Any], keep: int = 2) -> None:
        """Write last.pt, keeping the ``keep - 1`` before it (oldest dropped); see :func:`save_rotating`."""
        from mmtool.engine.checkpoint import save_rotating

        chain = self.chain(max(keep, 1))
        save_rotating(chain, state, stale=lambda: [p for p in self.rotations() if p not in chain])

    def latest_good(self) -> dict[str, Any] | None:
        """The newest readable resumable checkpoint, or None when there is none (see :func:`first_good`)."""
        from mmtool.engine.checkpoint import first_good

        return first_good(self.chain(len(self.rotations()) + 2), self.folder)

    def save_best(self, state: dict[str, Any]) -> None:
        from mmtool.engine.checkpoint import save_checkpoint

        save_checkpoint(self.best, state)

    def remove_best(self) -> None:
        with writing(self.best, "remove"):
            self.best.unlink(missing_ok=True)

    def complete(self) -> dict | None:
        """The COMPLETE marker's content (how training ended), or None while training is not complete."""
        marker = self.folder / COMPLETE
        return json.loads(marker.read_text()) if marker.exists() else None

    def mark_complete(self, info: dict[str, Any]) -> None:
        write_json(self.folder / COMPLETE, info)

    def save_snapshot(self, epoch: int, state: dict[str, Any]) -> None:
        """The weights of ``epoch`` (``train.snapshot_every``)."""
        from mmtool.engine.checkpoint import save_checkpoint

        save_checkpoint(self.folder / f"epoch_{epoch:06d}.pt", state)

    def snapshots(self) -> list[tuple[int, Path]]:
        """``[(epoch, path)]`` of the snapshots kept, by epoch."""
        return sorted((int(p.stem.removeprefix("epoch_")), p) for p in self.folder.glob("epoch_*.pt"))

    def compact(self, keep_optimizer: bool = False) -> None:
        """For a finished training: the rotations removed and last.pt cut to its counters (see
        :func:`~mmtool.engine.checkpoint.compact`)."""
        from mmtool.engine.checkpoint import compact

        compact(self.last, self.rotations(), keep_optimizer)

    def load_model(self, which: str = "best") -> tuple[MultiModalNet, dict]:
        """The model saved in best.pt (``which="last"``: last.pt), in eval mode, and its checkpoint."""
        from mmtool.engine.checkpoint import model_from_checkpoint

        return model_from_checkpoint(self.best if which == "best" else self.last)


class Layout:
    """A folder one training writes into: a run, or a part of one (a pretrain run's modality, a probe's
    classifier). Metrics, the loggers' files, checkpoints, plots and cached features live in it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def part(self, *names: str) -> Layout:
        """The layout of a sub-folder (``run.part("probes", "m1")``)."""
        return Layout(self.path.joinpath(*names))

    @property
    def logs(self) -> Path:
        """The loggers' folder (metrics.csv, tensorboard/ beside metrics.jsonl)."""
        return self.path

    def metrics(self) -> MetricsWriter:
        return MetricsWriter(self.path / METRICS)

    def has_metrics(self) -> bool:
        return (self.path / METRICS).exists()

    def checkpoints(self) -> CheckpointStore:
        return CheckpointStore(self.path / CHECKPOINTS)

    def plot(self, name: str) -> Path:
        """Where the figure ``name`` (``confusion.png``) goes."""
        return self.path / PLOTS / name

    def features(self, key: str) -> Path:
        """The folder of this training's cached features for the data fingerprinted by ``key``."""
        return self.path / FEATURES / key

    def file(self, name: str) -> Path:
        """A stage's own extra file (``per_class.md``); never one of the names above."""
        if name in (CONFIG, ENV, METRICS, RESULTS, SESSIONS, FAILED, LOCK, CHECKPOINTS, PLOTS, FEATURES):
            raise ValueError(f"{name} is part of the run layout")
        return self.path / name


# ---------------------------------------------------------------------------------------------------- runs
class Run(Layout):
    """A run folder (see the module docstring): what kind of run it is, its layout, and, as a ``with`` block,
    the session of the command working on it."""

    def __init__(self, path: str | Path, config: Recipe | None = None, *, created: bool = False) -> None:
        super().__init__(path)
        self._config = config
        self._created = created  # this command made the folder: a failure before any progress removes it
        self._began: float | None = None

    # ------------------------------------------------------------------------------------ what it is
    @property
    def config(self) -> Recipe:
        """The run's resolved recipe (its config.yaml)."""
        if self._config is None:
            from mmtool.config import load_recipe

            self._config = load_recipe(self.path / CONFIG, saved=True)
        return self._config

    @property
    def kind(self) -> str:
        """The stage that made the run (``train``, ``pretrain``, ``probe``, ...)."""
        return self.config.stage

    @property
    def finished(self) -> bool:
        return (self.path / RESULTS).is_file()

    def results(self) -> dict[str, Any]:
        return read_json(self.path / RESULTS)

    def env(self) -> dict[str, Any]:
        env = read_json(self.path / ENV) if (self.path / ENV).is_file() else {}
        return env if isinstance(env, dict) else {}

    def describe(self) -> str:
        what = f"`{COMMANDS.get(self.kind, self.kind)}` run"
        return what + (f" (method {self.config.method.name})" if self.kind == "train" else "")

    def modality(self, name: str) -> Layout:
        """Where a pretrain run trains (and keeps) its uni-modal model of modality ``name``."""
        return self.part(name)

    def modalities(self) -> list[str]:
        """The modalities a finished pretrain run trained (its results.json), else none."""
        return list(self.results()["modalities"]) if self.finished else []

    def check_same_data(self, recipe: Recipe, key: str) -> None:
        """Refuse to combine this run with ``recipe`` when it was trained on another dataset or split: a
        teacher that saw this recipe's validation or test samples would leak them."""
        other, mine = self.config.data.sample_keys(), recipe.data.sample_keys()
        differ = [f for f in {**other, **mine} if other.get(f, "unset") != mine.get(f, "unset")]
        if differ:
            diff = ", ".join(f"data.{f} {other.get(f)!r} there, {mine.get(f)!r} here" for f in differ)
            raise UserError(f"{key}: {self.path} was trained on other samples ({diff}); pass matching data.* overrides")

    # ------------------------------------------------------------------------------ open, create, resume
    @classmethod
    def open(cls, path: str | Path | None, *, key: str = "run", expect: tuple[str, ...] = (),
             finished: bool = False, what: str = "this stage") -> Run:  # fmt: skip
        """The earlier run at ``path``, of one of the stages in ``expect`` (any when empty) and finished when
        asked; else one line saying what it is and what is needed (``key``: the recipe key or flag)."""
        run = cls(require_run(path, what, key))
        return run.expect(expect, key, finished) if expect or finished else run

    def expect(self, stages: tuple[str, ...], key: str, finished: bool = False) -> Run:
        """This run, if it is of one of ``stages`` (and finished, when asked); else one line saying what it
        is and what is needed."""
        if stages and self.kind not in stages:
            wanted = " or ".join(f"a `{COMMANDS[s]}` run" for s in stages)
            raise UserError(f"{key}: {self.path} is a {self.describe()}; this needs {wanted}")
        if finished and not self.finished:
            raise UserError(
                f"{key}: {self.path} has not finished (no results.json); complete it with "
                f"`{COMMANDS[self.kind]} --resume {self.path}`"
            )
        return self

    @classmethod
    def create(cls, root: str | Path, stage: str, recipe: Recipe, runtime: Runtime,
               run_dir: str | Path | None = None) -> Run:  # fmt: skip
        """A new run: rank 0 creates ``root/<stage>/<dataset>-<tag>-<timestamp>`` (or ``run_dir``) without
        racing another command for the name, takes its lock and writes config.yaml and env.json (with
        config.yaml's sha256, which ``--resume`` checks); every rank gets the path. A start that fails
        removes what it made, so nothing blocks a rerun."""
        existed = run_dir is not None and Path(run_dir).exists()
        made = len(created_runs())
        try:
            path = _start(root, stage, recipe, runtime, run_dir)
        except BaseException as err:
            for folder in created_runs()[made:]:  # a full disk at config.yaml, say
                _discard(folder, err)
            raise
        return cls(path, recipe, created=not existed)

    def check_resume(self, stage: str, overrides: list[str] | None = None, method: str | None = None,
                     wanted: Recipe | None = None, given: str = "") -> None:  # fmt: skip
        """Refuse a ``--resume`` that asks for anything but the run as it is: another stage or method,
        recipe values (``overrides``), a recipe (``wanted``, named on the command line by ``given``) that
        is not the run's own, or a config.yaml edited since the run started. Continuing a run under other
        settings would leave a config.yaml describing a run that never happened."""
        from mmtool.config import load_recipe, recipe_changes

        self._check_unedited(stage)
        saved = self.config
        if wanted is not None:
            changes = recipe_changes(saved, wanted)
            if changes:
                raise UserError(
                    f"--resume {self.path}: {given} is not the recipe of the run ({'; '.join(changes)}); resume it "
                    f"as it is ({COMMANDS.get(stage, 'mmtool ' + stage)} --resume {self.path}), or start a new run"
                )
            return
        changes = [f"stage: {saved.stage} -> {stage}"] if saved.stage != stage else []
        if method is not None and method != saved.method.name:
            changes.append(f"method: {saved.method.name} -> {method}")
        if overrides:
            changes += recipe_changes(saved, load_recipe(self.path / CONFIG, overrides, saved=True))
        if changes:
            raise UserError(
                f"--resume {self.path}: the run was made with other settings ({'; '.join(changes)}); resume it as "
                "it is, or start a new run"
            )

    def _check_unedited(self, stage: str) -> None:
        """Refuse to resume a run whose config.yaml changed since it started (a run started before the hash
        was recorded is taken as it is)."""
        started = self.env().get(CONFIG_SHA256)
        if started is None:
            return
        now = _sha256(self.path / CONFIG)
        if now != started:
            raise UserError(
                f"{self.path / CONFIG} was edited after the run started (sha256 {started[:12]} then, {now[:12]} "
                f"now); put it back or start a new run with that recipe: {COMMANDS.get(stage, 'mmtool ' + stage)} "
                f"-r {self.path / CONFIG}"
            )

    def resume(self, runtime: Runtime) -> Run:
        """Take the run's lock (rank 0) to continue it; use as a ``with`` block."""
        if runtime.is_main:
            lock_run(self.path)
        return self

    # --------------------------------------------------------------------------------- the session
    def __enter__(self) -> Run:
        try:
            self._began = begin_session(self.path)
        except BaseException as err:
            self.__exit__(type(err), err, None)
            raise
        announce(self.path)
        return self

    def __exit__(self, kind: Any, err: BaseException | None, tb: Any) -> None:
        """Record the outcome (sessions.json, failed.json for an error) and announce it; a run this command
        created that failed before it made progress (an epoch, a checkpoint, results) is removed instead."""
        if err is not None and self._created and is_writer() and not has_progress(self.path):
            _discard(self.path, err)
            return
        outcome, error = _outcome(err)
        if self._began is not None:
            end_session(self.path, self._began, outcome, error)
        announce(self.path, outcome)

    def finish(self, result: dict) -> dict:
        """Write ``results.json``: the stage's numbers, plus where and how they were computed (device,
        precision, threads and processes, from env.json) and the wall time of the command that finished it.
        First, each finished training's rotations are removed and its last.pt is cut down to the weights and
        counters unless the recipe sets ``train.keep_optimizer`` (:meth:`CheckpointStore.compact`)."""
        result = _rounded(result)
        result["run_dir"] = str(self.path)
        env = self.env()
        result["runtime"] = {k: env[k] for k in ("device", "device_name", "precision", "threads", "world_size")
                             if k in env}  # fmt: skip
        held = seconds_held(self.path)
        if held is not None:
            result["wall_seconds"] = round(held, 1)
        if is_writer():
            keep = self.config.train.keep_optimizer
            for marker in sorted(self.path.rglob(COMPLETE)):
                CheckpointStore(marker.parent).compact(keep)
        write_json(self.path / RESULTS, result)
        return result


ACCURACY_DECIMALS = 4  # k/N exactly for test sets up to a million samples; beyond that, float32 noise


def _rounded(value: Any, key: str = "") -> Any:
    """Accuracies (any key mentioning ``accuracy``, at any depth) rounded to :data:`ACCURACY_DECIMALS`
    decimals: they are computed in float32, and 72.45370483398438 says no more than 72.4537."""
    if isinstance(value, dict):
        return {k: _rounded(v, k if "accuracy" in str(k) else key) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, key) for v in value]
    if isinstance(value, float) and "accuracy" in key and math.isfinite(value):
        return round(value, ACCURACY_DECIMALS)
    return value


def _start(root: str | Path, stage: str, recipe: Recipe, runtime: Runtime, run_dir: str | Path | None) -> Path:
    """Create, lock and describe the run folder on rank 0; its path on every rank."""
    from mmtool.config import save_recipe

    if not runtime.is_main:  # under torchrun, rank 0 creates the folder and every rank uses its path
        return Path(runtime.broadcast_object(None))
    try:
        tag = recipe.method.name if stage == "train" else TAGS.get(stage, stage)
        path = new_run_dir(root, stage, recipe.data.name, tag, run_dir)
        lock_run(path)
        save_recipe(recipe, path / CONFIG)
        write_env(path, recipe.train.seed, {**runtime.describe(), CONFIG_SHA256: _sha256(path / CONFIG)})
    except BaseException:
        runtime.broadcast_object(None)  # the other ranks stop too (each with its own line)
        raise
    return Path(runtime.broadcast_object(str(path)))


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _discard(path: Path, err: BaseException) -> None:
    """Remove the folder of a run that failed before it made progress, and say so."""
    unlock_run(path)
    shutil.rmtree(path, ignore_errors=True)
    for parent in (path.parent, path.parent.parent):  # runs/<stage>/ and runs/, when this left them empty
        try:
            parent.rmdir()
        except OSError:
            break
    announce(path, f"{_outcome(err)[0]}, nothing kept")


def _outcome(err: BaseException | None) -> tuple[str, str | None]:
    """(outcome, one-line error): a signal (:class:`Interrupted`, Ctrl-C) interrupts, any other error fails."""
    if err is None:
        return "complete", None
    if isinstance(err, Interrupted) or not isinstance(err, Exception):
        return "interrupted", None
    message = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
    return "failed", (message.strip().splitlines() or [type(err).__name__])[0][:500]


def announce(path: Path, outcome: str | None = None) -> None:
    """``run: PATH`` (and ``(outcome)`` at the end) on stderr, from rank 0 only under torchrun."""
    if os.environ.get("RANK", "0") != "0":
        return
    print(f"run: {path}" + (f" ({outcome})" if outcome else ""), file=sys.stderr, flush=True)


def results_of(folder: str | Path) -> dict[str, Any]:
    """The results.json of the run in ``folder`` (tables read finished runs by their folders)."""
    return read_json(Path(folder) / RESULTS)


def is_finished(folder: str | Path) -> bool:
    """Whether the run in ``folder`` finished (its results.json is written)."""
    return (Path(folder) / RESULTS).is_file()


def config_of(folder: str | Path) -> dict[str, Any] | None:
    """The resolved recipe the run in ``folder`` saved (config.yaml), as a plain mapping; None without one."""
    import yaml

    path = Path(folder) / CONFIG
    if not path.is_file():
        return None
    config = yaml.safe_load(path.read_text())
    return config if isinstance(config, dict) else None


def is_unfinished_run(folder: str | Path) -> bool:
    """Whether ``folder`` holds a run that started and has not finished (a config.yaml, no results.json)."""
    return (Path(folder) / CONFIG).is_file() and not is_finished(folder)


def metrics_of(folder: str | Path) -> list[dict[str, Any]]:
    """The records of the metrics.jsonl in ``folder`` (a run, or a part of one)."""
    return MetricsWriter(Path(folder) / METRICS).read()


# ------------------------------------------------------------------------- readers of any run folder
def run_of(path: Path) -> Path | None:
    """The run folder holding ``path`` (the nearest of it and its parents with a config.yaml), if any."""
    return next((p for p in (Path(path), *Path(path).parents) if (p / CONFIG).is_file()), None)


def has_progress(run: Path) -> bool:
    """Whether a run folder holds anything worth resuming: results, a logged epoch or a checkpoint."""
    run = Path(run)
    if (run / RESULTS).exists() or any(run.rglob("last*.pt")):
        return True
    return any(p.stat().st_size > 0 for p in run.rglob(METRICS))


def resume_command(run: Path) -> str:
    """The command that continues ``run`` (train or pretrain), as it was launched (torchrun included)."""
    command = COMMANDS.get(run_stage(run) or "train", "mmtool train")
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        command = command.replace("mmtool", f"torchrun --nproc_per_node {world} -m mmtool", 1)
    return f"{command} --resume {run}"


def next_step_after_fix(path: Path) -> str:
    """What follows fixing a refused write of ``path``: the run's resume command when it has something to
    resume, else a rerun."""
    try:
        run = run_of(path)
        resumable = run is not None and run_stage(run) in RESUMABLE and has_progress(run)
    except OSError:  # a folder that cannot even be read: nothing to promise
        resumable = False
    return f"resume with `{resume_command(run)}`" if resumable else "run the command again"


def interrupted_run(checkpoint: Path) -> Path:
    """The run folder holding a checkpoint a signal stopped at (the nearest parent with a config.yaml)."""
    return run_of(Path(checkpoint).parent) or Path(checkpoint).parent.parent


def config_text(folder: Path) -> str | None:
    """The raw text of a folder's config.yaml (None when it has none or it cannot be read)."""
    try:
        return (Path(folder) / CONFIG).read_text()
    except OSError:
        return None


# ------------------------------------------------------------------------------ folder mechanics
def new_run_dir(root: str | Path, stage: str, dataset: str, method: str, run_dir: str | Path | None = None) -> Path:
    """Create ``root/stage/<dataset>-<method>-<timestamp>`` (or ``run_dir`` when given) and return it.

    The folder is created with ``mkdir(exist_ok=False)``, so two commands started in the same second get
    two folders (``-1``, ``-2``, ... suffixes) instead of sharing one. A folder this call creates is listed
    in :func:`created_runs`; a folder it cannot create is one line naming it (:func:`storage_error`)."""
    if run_dir is not None:
        path = Path(run_dir)
        if (path / CONFIG).exists():
            raise UserError(f"run directory {path} already holds a run (use --resume to continue it)")
        if not path.is_dir():
            _make_dir(path, parents=True)
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / stage / f"{dataset}-{method}-{stamp}"
    with writing(base.parent, "create"):
        fault_point("run_mkdir")
        base.parent.mkdir(parents=True, exist_ok=True)
    for k in range(10_000):
        path = base if k == 0 else Path(f"{base}-{k}")
        try:
            _make_dir(path)
            return path
        except FileExistsError:
            continue
    raise UserError(f"could not create a run folder next to {base}")


_created: list[Path] = []  # run folders new_run_dir made in this process, oldest first


def created_runs() -> list[Path]:
    """The run folders :func:`new_run_dir` made in this process, oldest first (a start that fails after
    making its folder finds it here, to remove it again)."""
    return list(_created)


def _make_dir(path: Path, parents: bool = False) -> None:
    with writing(path, "create"):
        fault_point("run_mkdir")  # tests: MMTOOL_FAULT=run_mkdir:1:eacces (a runs root without write permission)
        path.mkdir(parents=parents)
    _created.append(path)


_held: dict[str, Any] = {}  # run folder -> open lock file: held until the process ends (kill -9 included)
_started: dict[str, float] = {}  # run folder -> when this process locked it (time.monotonic)


def lock_run(path: Path) -> None:
    """Take the run folder's exclusive lock, or fail naming the process that holds it.

    The lock is an ``flock`` on ``<run>/.lock``: the kernel drops it when its holder dies, however it dies,
    so a killed run never leaves a stale lock behind."""
    import fcntl

    path = Path(path)
    key = str(path.resolve())
    if key in _held:
        return
    with writing(path / LOCK):
        fault_point("lock")  # tests: MMTOOL_FAULT=lock:1:erofs (a run folder on a read-only file system)
        fh = open(path / LOCK, "a+")  # noqa: SIM115  (kept open: the lock lives as long as the file)
    for attempt in range(5):  # a few tries: `mmtool runs` probes the lock for an instant (lock_held)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt < 4:
                time.sleep(0.05)
                continue
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise UserError(f"run directory {path} is in use by {holder}; wait for it or stop it first") from None
    command = " ".join(["mmtool", *sys.argv[1:]])
    holder = f"pid {os.getpid()} on {platform.node()} ({command}), since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
    try:
        with writing(path / LOCK):
            fh.seek(0)
            fh.truncate()
            fh.write(holder)
            fh.flush()
    except BaseException:
        fh.close()  # the lock goes with it: a command that cannot start does not hold the run
        raise
    _held[key] = fh
    _started[key] = time.monotonic()


@contextmanager
def held_briefly(path: Path) -> Iterator[None]:
    """Hold the lock of the run containing ``path`` for the block (a command writing into an earlier run's
    folder, e.g. its feature cache): a :class:`UserError` naming the holder when the run is in use. A lock
    this process already holds is kept as it is; outside the writing process nothing is locked."""
    run = run_of(path)
    if run is None or not is_writer() or str(run.resolve()) in _held:
        yield
        return
    lock_run(run)
    try:
        yield
    finally:
        unlock_run(run)


def seconds_held(path: Path) -> float | None:
    """Seconds since this process took the run folder's lock (the wall time of this command's work on it)."""
    began = _started.get(str(Path(path).resolve()))
    return None if began is None else time.monotonic() - began


def unlock_run(path: Path) -> None:
    _started.pop(str(Path(path).resolve()), None)
    fh = _held.pop(str(Path(path).resolve()), None)
    if fh is not None:
        fh.close()


def lock_held(path: Path) -> bool:
    """Whether a live process holds the run's lock (this one included). Probed with a non-blocking shared
    ``flock``, released at once: a dead holder's lock is gone, so no pid is guessed at."""
    import fcntl

    try:
        fh = open(Path(path) / LOCK, "rb")  # noqa: SIM115
    except OSError:  # no lock file (never locked) or not ours to read
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False




def run_status(path: Path) -> str:
    """``running`` (its lock is held), ``complete`` (results.json), ``failed`` (its last command raised an
    error: failed.json), else ``interrupted`` (stopped by a signal, or killed without a chance to say so)."""
    path = Path(path)
    if lock_held(path):
        return "running"
    if (path / RESULTS).is_file():
        return "complete"
    if (path / FAILED).is_file():
        return "failed"
    return "interrupted"


def read_sessions(path: Path) -> list[dict[str, Any]]:
    """The run's sessions.json (an empty list for runs made before sessions were recorded)."""
    file = Path(path) / SESSIONS
    try:
        sessions = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return sessions if isinstance(sessions, list) else []


def _now() -> str:
    """Local time with its offset, to the millisecond (runs started in one second still sort in order)."""
    from datetime import datetime

    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def begin_session(path: Path) -> float:
    """Record that a command starts working on the run (and forget an earlier failure: the run's status is
    its last command's). Returns the start, for :func:`end_session`."""
    path = Path(path)
    if is_writer():
        with writing(path / FAILED, "remove"):
            (path / FAILED).unlink(missing_ok=True)
        write_json(path / SESSIONS, [*read_sessions(path), {"started": _now(), "ended": None, "seconds": None,
                                                             "outcome": None}])  # fmt: skip
    return time.monotonic()


def end_session(path: Path, began: float, outcome: str, error: str | None = None) -> None:
    """Close the session :func:`begin_session` opened with its outcome (``complete``, ``failed`` or
    ``interrupted``); a failure also writes failed.json with its one-line error. A session killed outright
    stays open: ``mmtool runs`` counts it up to the run's last write."""
    path = Path(path)
    if not is_writer() or not path.is_dir():
        return
    sessions = read_sessions(path) or [{"started": None}]
    sessions[-1].update(ended=_now(), seconds=round(time.monotonic() - began, 3), outcome=outcome)
    try:  # bookkeeping: a disk that refuses these writes must not hide the command's own outcome
        write_json(path / SESSIONS, sessions)
        if outcome == "failed":
            write_json(path / FAILED, {"error": error or "unknown error", "time": _now()})
    except (OSError, UserError):
        pass




def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def env_of(folder: str | Path) -> dict[str, Any] | None:
    """The run's env.json (versions, git SHA, runtime), or None when it has none readable."""
    return _mapping(Path(folder) / ENV)


def write_env(run_dir: Path, seed: int, runtime: dict[str, Any]) -> None:
    """Versions, git SHA, the runtime in force (device, precision, ...), seed and command line."""
    import torch

    from mmtool import __version__

    write_json(
        Path(run_dir) / ENV,
        {
            "mmtool": __version__,
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "platform": platform.platform(),
            "git_sha": git_sha(),
            **runtime,
            "seed": seed,
            "argv": sys.argv,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


COMMANDS = {"pretrain": "mmtool pretrain-unimodal", "train": "mmtool train", "probe": "mmtool probe",
            "decide": "mmtool decide", "ensemble": "mmtool ensemble", "utilization": "mmtool utilization"}  # fmt: skip
FLAGS = {"run": "--run", "teachers": "--teachers", "--resume": "--resume"}  # recipe key -> command-line flag


def require_run(path: str | Path | None, what: str, key: str) -> Path:
    """Check that ``path`` is an existing run directory; ``key`` names the recipe key (or flag) for the
    message. A folder that is not a run says what it is when it can: a part of a run (a pretrain run's
    per-modality folder, a checkpoints folder), or a folder with another stage's results.json."""
    flag = FLAGS.get(key)
    if path is None:
        how = f"{flag} RUN_DIR" + (f" (or {key}=RUN_DIR)" if flag and flag != key else "") if flag else f"{key}=RUN_DIR"
        raise UserError(f"{what} needs {how}")
    p = Path(path)
    if (p / CONFIG).is_file():
        return p
    name = flag or key
    if not p.exists():
        raise UserError(f"{name}: {p} does not exist")
    for parent in p.resolve().parents:
        if (parent / CONFIG).is_file():
            raise UserError(f"{name}: {p} is inside the run {parent} ({_stage_of(parent)}); pass {parent}")
    if (p / RESULTS).is_file():
        raise UserError(f"{name}: {p} holds the results of {_stage_of(p)} but no config.yaml; it is not a run")
    raise UserError(f"{name}: {p} is not a run directory (no config.yaml)")


def run_stage(folder: Path) -> str | None:
    """The stage of the run in ``folder``, from its config.yaml (None when it has none or names none)."""
    try:
        text = (Path(folder) / CONFIG).read_text()
    except OSError:
        return None
    found = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("stage:")]
    return found[0] if found else None


def _stage_of(folder: Path) -> str:
    """``a `mmtool decide` run``, read from the folder's config.yaml or results.json."""
    stage = run_stage(folder)
    if not stage:
        try:
            stage = json.loads((folder / RESULTS).read_text()).get("stage")
        except (OSError, json.JSONDecodeError, AttributeError):
            stage = None
    return f"a `{COMMANDS.get(stage, stage)}` run" if stage else "a run"


# ------------------------------------------------------------------------------------ listings of run folders
def find_runs(root: Path) -> list[Path]:
    """Every run folder at or under ``root`` (hidden folders skipped, runs not descended into: a pretrain
    run's modality folders are part of it)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if CONFIG in filenames:
            found.append(Path(dirpath))
            dirnames.clear()
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return found


def _mapping(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def listed(folder: Path) -> dict[str, Any]:
    """What a listing of runs reads from a run folder, each None when missing or unreadable: ``config``
    (config.yaml's text), ``results``, ``error`` (failed.json's), ``env`` and the modification times of
    config.yaml and results.json (``created``, ``finished``)."""
    folder = Path(folder)

    def mtime(name: str) -> float | None:
        try:
            return (folder / name).stat().st_mtime
        except OSError:
            return None

    return {
        "config": config_text(folder),
        "results": _mapping(folder / RESULTS),
        "error": (_mapping(folder / FAILED) or {}).get("error"),
        "env": _mapping(folder / ENV) or {},
        "created": mtime(CONFIG),
        "finished": mtime(RESULTS),
    }
