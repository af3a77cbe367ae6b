"""Files written safely: atomic writes, one-line errors for refused writes, JSON, JSON Lines.

Nothing here knows what a run folder holds (that is :mod:`mmtool.runs`); these are the primitives every
writer uses (run folders, dataset caches, tables). A write the file system refuses (full disk or quota,
read-only folder, no permission, file too large) is one line naming the path and what to do
(:func:`storage_error`, :func:`writing`). In a distributed run only rank 0 writes (:func:`set_writer`).
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
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
    """What follows the fix: the run's resume command when ``path`` is in a run with something to resume,
    else a rerun (the run folder's layout is :mod:`mmtool.runs`'s to read)."""
    from mmtool.runs import next_step_after_fix

    return next_step_after_fix(path)


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
