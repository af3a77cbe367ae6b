"""Run directories: layout, atomic writes, metrics.jsonl and env.json.

Layout of every run::

    runs/<stage>/<dataset>-<method>-<timestamp>/
        config.yaml      resolved recipe (re-loadable: `mmtool train --resume RUN_DIR`)
        env.json         versions, git SHA, device, seed
        metrics.jsonl    one JSON object per logged epoch / evaluation
        checkpoints/     last.pt (resumable), best.pt (selected on validation), COMPLETE marker
        results.json     the stage's final numbers
        plots/           PNG figures
        .lock            flock'ed by the command that owns the run while it runs
        sessions.json    start, end, duration and outcome of each command that worked on the run
        failed.json      the one-line error of a run whose last command failed (removed by a resume)
"""

from __future__ import annotations

import errno
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from mmtool.errors import UserError
from mmtool.faults import fault_point

_WRITER = True  # False in the processes of a distributed run other than rank 0


def set_writer(is_writer: bool) -> None:
    """Declare whether this process writes run files. In a distributed run only rank 0 does: every write
    below (checkpoints, JSON, metrics, plots, caches) is a no-op in the other ranks, which compute the same
    numbers and read what rank 0 wrote."""
    global _WRITER
    _WRITER = bool(is_writer)


def is_writer() -> bool:
    return _WRITER


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, fsync, then rename over ``path``
    (:func:`atomic_write`)."""
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a temp file in the same folder, fsync, then rename over ``path``: a large
    object (a checkpoint) streams to disk without a copy of it in memory first.

    A write the file system refuses (read-only folder, full disk, file too large, no permission) is a
    :class:`UserError` naming the path; the temp file is removed and ``path`` keeps its previous content.
    Does nothing outside the writing process (:func:`set_writer`)."""
    if not _WRITER:
        return
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a run is read by the group on shared servers
        with os.fdopen(fd, "wb") as fh:
            fault_point("write")  # tests: MMTOOL_FAULT=write:N:enospc fails the N-th file write
            try:
                write(fh)
            except RuntimeError as err:  # torch.save reports its file's failed write as a RuntimeError
                failed = _os_error(err)
                if failed is None:
                    raise
                raise failed from None
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if err.errno in _STORAGE_ERRORS:
            reason = err.strerror or str(err)
            raise UserError(f"cannot write {path}: {reason} (its previous version, if any, is intact)") from None
        raise
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def _os_error(err: BaseException) -> OSError | None:
    """The OSError an exception was raised while handling (its cause or context chain), if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


_STORAGE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EDQUOT}


def _umask() -> int:
    """The process's umask (read without changing it where /proc allows; else set and restored at once)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"missing file {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path} is not valid JSON") from None


def new_run_dir(root: str | Path, stage: str, dataset: str, method: str, run_dir: str | Path | None = None) -> Path:
    """Create ``root/stage/<dataset>-<method>-<timestamp>`` (or ``run_dir`` when given) and return it.

    The folder is created with ``mkdir(exist_ok=False)``, so two commands started in the same second get
    two folders (``-1``, ``-2``, ... suffixes) instead of sharing one."""
    if run_dir is not None:
        path = Path(run_dir)
        if (path / "config.yaml").exists():
            raise UserError(f"run directory {path} already holds a run (use --resume to continue it)")
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / stage / f"{dataset}-{method}-{stamp}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for k in range(10_000):
        path = base if k == 0 else Path(f"{base}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise UserError(f"could not create a run folder next to {base}")


LOCK = ".lock"
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
    fh.seek(0)
    fh.truncate()
    command = " ".join(["mmtool", *sys.argv[1:]])
    fh.write(f"pid {os.getpid()} on {platform.node()} ({command}), since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    fh.flush()
    _held[key] = fh
    _started[key] = time.monotonic()


def seconds_held(path: Path) -> float | None:
    """Seconds since this process took the run folder's lock (the wall time of this command's work on it)."""
    began = _started.get(str(Path(path).resolve()))
    return None if began is None else time.monotonic() - began


def unlock_run(path: Path) -> None:
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


RESULTS = "results.json"
FAILED = "failed.json"
SESSIONS = "sessions.json"


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
    if _WRITER:
        (path / FAILED).unlink(missing_ok=True)
        write_json(path / SESSIONS, [*read_sessions(path), {"started": _now(), "ended": None, "seconds": None,
                                                             "outcome": None}])  # fmt: skip
    return time.monotonic()


def end_session(path: Path, began: float, outcome: str, error: str | None = None) -> None:
    """Close the session :func:`begin_session` opened with its outcome (``complete``, ``failed`` or
    ``interrupted``); a failure also writes failed.json with its one-line error. A session killed outright
    stays open: ``mmtool runs`` counts it up to the run's last write."""
    path = Path(path)
    if not _WRITER or not path.is_dir():
        return
    sessions = read_sessions(path) or [{"started": None}]
    sessions[-1].update(ended=_now(), seconds=round(time.monotonic() - began, 3), outcome=outcome)
    try:  # bookkeeping: a disk that refuses these writes must not hide the command's own outcome
        write_json(path / SESSIONS, sessions)
        if outcome == "failed":
            write_json(path / FAILED, {"error": error or "unknown error", "time": _now()})
    except (OSError, UserError):
        pass


class MetricsWriter:
    """Appends one JSON object per line to ``metrics.jsonl``, flushed at every write."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if not _WRITER:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    def truncate_after(self, epoch: int) -> None:
        """Drop records logged after ``epoch`` (work a resumed run will redo)."""
        if not _WRITER or not self.path.exists():
            return
        keep = [
            line
            for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line).get("epoch", 0) <= epoch
        ]
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def write_env(run_dir: Path, seed: int, runtime: dict[str, Any]) -> None:
    """Versions, git SHA, the runtime in force (device, precision, ...), seed and command line."""
    import torch

    from mmtool import __version__

    write_json(
        Path(run_dir) / "env.json",
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
    if (p / "config.yaml").is_file():
        return p
    name = flag or key
    if not p.exists():
        raise UserError(f"{name}: {p} does not exist")
    for parent in p.resolve().parents:
        if (parent / "config.yaml").is_file():
            raise UserError(f"{name}: {p} is inside the run {parent} ({_stage_of(parent)}); pass {parent}")
    if (p / "results.json").is_file():
        raise UserError(f"{name}: {p} holds the results of {_stage_of(p)} but no config.yaml; it is not a run")
    raise UserError(f"{name}: {p} is not a run directory (no config.yaml)")


def _stage_of(folder: Path) -> str:
    """``a `mmtool decide` run``, read from the folder's config.yaml or results.json."""
    stage = None
    for name in ("config.yaml", "results.json"):
        try:
            text = (folder / name).read_text()
        except OSError:
            continue
        if name == "results.json":
            try:
                stage = json.loads(text).get("stage")
            except (json.JSONDecodeError, AttributeError):
                stage = None
        else:
            found = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("stage:")]
            stage = found[0] if found else None
        if stage:
            break
    return f"a `{COMMANDS.get(stage, stage)}` run" if stage else "a run"
