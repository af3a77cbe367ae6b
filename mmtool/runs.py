"""Run directories: layout, atomic writes, metrics.jsonl and env.json.

Layout of every run::

    runs/<stage>/<dataset>-<method>-<timestamp>/
        config.yaml      resolved recipe (re-loadable: `mmtool train --resume RUN_DIR`)
        env.json         versions, git SHA, device, seed
        metrics.jsonl    one JSON object per logged epoch / evaluation (null for a number that was not finite)
        checkpoints/     last.pt (resumable; counters only once complete, unless train.keep_optimizer),
                         best.pt (selected on validation), COMPLETE marker
        results.json     the stage's final numbers
        plots/           PNG figures
        .lock            flock'ed by the command that owns the run while it runs
        sessions.json    start, end, duration and outcome of each command that worked on the run
        failed.json      the one-line error of a run whose last command failed (removed by a resume)

A write the file system refuses (full disk or quota, read-only folder, no permission, file too large), on any
of these paths, is one line naming the path and what to do (:func:`storage_error`, :func:`writing`).
"""

from __future__ import annotations

import errno
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def atomic_write(path: Path, write: Callable[[BinaryIO], object], before_replace: Callable[[], object] | None = None
                 ) -> None:  # fmt: skip
    """Call ``write`` on a temp file in the same folder, fsync, then rename over ``path``: a large
    object (a checkpoint) streams to disk without a copy of it in memory first. ``before_replace`` runs once
    the temp file is complete, just before the rename (a checkpoint's rotation: nothing moves before the new
    file is safely on disk).

    A write the file system refuses (read-only folder, full disk, file too large, no permission) is a
    :class:`UserError` naming the path and what to do (:func:`storage_error`); the temp file is removed and
    ``path`` keeps its previous content. Does nothing outside the writing process (:func:`set_writer`)."""
    if not _WRITER:
        return
    path = Path(path)
    tmp = None
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a run is read by the group on shared servers
            with os.fdopen(fd, "wb") as fh:
                fault_point("write")  # tests: MMTOOL_FAULT=write:N:enospc fails the N-th file write
                fault_point(f"write_{path.name}")  # tests: write_results.json:1:erofs fails that file's first write
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            if before_replace is not None:
                before_replace()
            os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def _os_error(err: BaseException) -> OSError | None:
    """The OSError an exception was raised while handling (its cause or context chain), if any: torch.save
    reports its file's failed write as a RuntimeError raised from the OSError."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


_STORAGE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EDQUOT}
RESUMABLE = ("train", "pretrain")  # the stages whose runs `--resume` continues


def storage_error(err: BaseException, path: Path, action: str = "write") -> UserError | None:
    """The one-line :class:`UserError` for a write the file system refused (full disk or quota, read-only
    folder, no permission, file too large) while writing ``path``, or None for any other error.

    It names the path, the reason and what to do: fix the cause, then resume the run (when its stage
    resumes and it holds progress: a checkpoint, a logged epoch or results) or run the command again."""
    found = _os_error(err)
    if found is None or found.errno not in _STORAGE_ERRORS:
        return None
    path = Path(path)
    reason = found.strerror or os.strerror(found.errno)
    return UserError(f"cannot {action} {path}: {reason}; {_fix(found.errno, path)}, then {_next_step(path)}")


@contextmanager
def writing(path: Path, action: str = "write") -> Iterator[None]:
    """Turn a refused write inside the block into :func:`storage_error`'s one line naming ``path``; any
    other error passes unchanged."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        failed = storage_error(err, path, action)
        if failed is None:
            raise
        raise failed from None


def _fix(code: int, path: Path) -> str:
    if code == errno.ENOSPC:
        return "free space on its disk"
    if code == errno.EDQUOT:
        return "free space within your disk quota"
    if code == errno.EFBIG:
        return "raise the file size limit (ulimit -f) or keep runs on a file system that allows larger files"
    if code == errno.EROFS:  # the whole file system: name the folder
        folder = next((p for p in path.parents if p.is_dir()), path.parent)
        return f"make {_shown(folder)} writable (its file system is read-only)"
    here = next((p for p in (path, *path.parents) if p.exists()), path)
    return f"give yourself write permission on {_shown(here)}"


def _shown(path: Path) -> Path:
    """``path`` as a message names it: the current folder by its full name rather than ``.``."""
    return Path.cwd() if str(path) in ("", ".") else path


def _next_step(path: Path) -> str:
    """What follows the fix: the run's resume command when it has something to resume, else a rerun."""
    try:
        run = run_of(path)
        resumable = run is not None and run_stage(run) in RESUMABLE and has_progress(run)
    except OSError:  # a folder that cannot even be read: nothing to promise
        resumable = False
    return f"resume with `{resume_command(run)}`" if resumable else "run the command again"


def run_of(path: Path) -> Path | None:
    """The run folder holding ``path`` (the nearest of it and its parents with a config.yaml), if any."""
    return next((p for p in (Path(path), *Path(path).parents) if (p / "config.yaml").is_file()), None)


def has_progress(run: Path) -> bool:
    """Whether a run folder holds anything worth resuming: results, a logged epoch or a checkpoint."""
    run = Path(run)
    if (run / RESULTS).exists() or any(run.rglob("last*.pt")):
        return True
    return any(p.stat().st_size > 0 for p in run.rglob("metrics.jsonl"))


def resume_command(run: Path) -> str:
    """The command that continues ``run`` (train or pretrain), as it was launched (torchrun included)."""
    command = COMMANDS.get(run_stage(run) or "train", "mmtool train")
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        command = command.replace("mmtool", f"torchrun --nproc_per_node {world} -m mmtool", 1)
    return f"{command} --resume {run}"


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
    two folders (``-1``, ``-2``, ... suffixes) instead of sharing one. A folder this call creates is listed
    in :func:`created_runs`; a folder it cannot create is one line naming it (:func:`storage_error`)."""
    if run_dir is not None:
        path = Path(run_dir)
        if (path / "config.yaml").exists():
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
    """Appends one JSON object per line to ``metrics.jsonl``, flushed at every write.

    The file is standard JSON Lines: a float that is not finite (NaN, inf) is written as ``null``, which
    readers take as "not a number". A record cut short (a full disk in the middle of a write) can only be
    the last line and never blocks anything: :meth:`read` skips it and :meth:`truncate_after`, which a
    resume calls, drops it. A write the file system refuses is one line naming the file (:func:`writing`).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if _WRITER:
            with writing(self.path.parent, "create"):
                self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if not _WRITER:
            return
        line = json.dumps(finite_or_none(record), allow_nan=False) + "\n"
        with writing(self.path), self.path.open("a") as fh:
            # tests: MMTOOL_FAULT=metrics_write:N:enospc writes half of the N-th record, then fails
            fault_point("metrics_write", partial=lambda: (fh.write(line[: len(line) // 2]), fh.flush()))
            fh.write(line)

    def truncate_after(self, epoch: int) -> None:
        """Drop records logged after ``epoch`` (work a resumed run will redo), and a record cut short."""
        if not _WRITER or not self.path.exists():
            return
        keep = [line for line, record in self._lines() if record.get("epoch", 0) <= epoch]
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))

    def read(self) -> list[dict[str, Any]]:
        """The records, in order (``null`` where a number was not finite; a record cut short left out)."""
        return [record for _, record in self._lines()]

    def _lines(self) -> list[tuple[str, dict[str, Any]]]:
        """(line, record) of every complete record. Only the last line can be cut short (the one being
        written when the disk filled up); a line elsewhere that is not JSON is damage to the file."""
        if not self.path.exists():
            return []
        lines = self.path.read_text().split("\n")
        out = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                out.append((line, json.loads(line)))
            except json.JSONDecodeError:
                if number == len(lines):  # no newline after it: a write that never finished
                    continue
                raise UserError(
                    f"{self.path}: line {number} is not JSON ({line[:40]!r}); delete that line, then run again"
                ) from None
        return out


def finite_or_none(value: Any) -> Any:
    """``value`` with every float that is not finite (at any depth of dicts and lists) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


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


def run_stage(folder: Path) -> str | None:
    """The stage of the run in ``folder``, from its config.yaml (None when it has none or names none)."""
    try:
        text = (Path(folder) / "config.yaml").read_text()
    except OSError:
        return None
    found = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("stage:")]
    return found[0] if found else None


def _stage_of(folder: Path) -> str:
    """``a `mmtool decide` run``, read from the folder's config.yaml or results.json."""
    stage = run_stage(folder)
    if not stage:
        try:
            stage = json.loads((folder / "results.json").read_text()).get("stage")
        except (OSError, json.JSONDecodeError, AttributeError):
            stage = None
    return f"a `{COMMANDS.get(stage, stage)}` run" if stage else "a run"
