"""Deterministic fault injection for tests: ``MMTOOL_FAULT=<point>:<count>:<action>[,<point>:<count>:<action>...]``.

Code calls :func:`fault_point` at places where a real run can die (after a prep sample is recorded,
after a training step, while a checkpoint is saved). When the environment names that point, the
``count``-th call (1-based) performs the action: ``kill`` ends the process at once as ``kill -9`` would
(``os._exit(137)``, no cleanup, no flushing), ``raise`` raises :class:`InjectedFault`, ``enospc`` raises
the ``OSError`` of a full disk, ``edquot`` of a full quota, ``efbig`` of a file over the size limit,
``erofs`` of a read-only file system and ``eacces`` of a folder without write permission, ``oom`` torch's
``OutOfMemoryError``, ``sigterm`` / ``sigint`` send that signal to the process itself (as a scheduler or a
Ctrl-C would, at exactly this point). A point inside a write may pass ``partial``: before a full disk
(``enospc``, ``edquot``, ``efbig``) refuses the rest, it is called to write the part the disk took.
Without the variable a call costs one dict lookup. Under torchrun, ``MMTOOL_FAULT_RANK=R`` limits the
faults to rank R (how a test preempts one rank of a distributed run).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

_counts: dict[str, int] = {}


class InjectedFault(RuntimeError):
    """Raised by a ``raise`` fault."""


def armed() -> Callable[[str], None]:
    """:func:`fault_point` when ``MMTOOL_FAULT`` is set, else a function that does nothing: a hot loop
    looks the variable up once per epoch, not twice per step."""
    return fault_point if os.environ.get("MMTOOL_FAULT") else _nothing


def _nothing(name: str) -> None:
    pass


STORAGE = {"enospc": errno.ENOSPC, "edquot": errno.EDQUOT, "efbig": errno.EFBIG, "erofs": errno.EROFS,
           "eacces": errno.EACCES}  # fmt: skip
_CUT_SHORT = ("enospc", "edquot", "efbig")  # a write the disk took in part (a refused open writes nothing)


def fault_point(name: str, partial: Callable[[], object] | None = None) -> None:
    """Perform the action ``MMTOOL_FAULT`` names for this call of point ``name``, if any (module docstring)."""
    spec = os.environ.get("MMTOOL_FAULT")
    if not spec or name not in spec:
        return
    only = os.environ.get("MMTOOL_FAULT_RANK")
    if only is not None and only != os.environ.get("RANK", "0"):
        return
    actions = {}
    for one in spec.split(","):
        point, _, rest = one.partition(":")
        if point == name:
            count, _, action = rest.partition(":")
            actions[int(count or 1)] = action
    if not actions:
        return
    _counts[name] = _counts.get(name, 0) + 1
    action = actions.get(_counts[name])
    if action is None:
        return
    if action in ("sigterm", "sigint"):
        import signal

        os.kill(os.getpid(), signal.SIGTERM if action == "sigterm" else signal.SIGINT)
        return
    if action == "raise":
        raise InjectedFault(f"injected fault at {name} #{_counts[name]}")
    if action in STORAGE:  # a file system that refuses the write, as the kernel reports it
        if partial is not None and action in _CUT_SHORT:
            partial()
        raise OSError(STORAGE[action], os.strerror(STORAGE[action]))
    if action == "oom":  # the device (or the host) out of memory, as torch reports it
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory (injected). Tried to allocate 2.00 GiB")
    os._exit(137)
