"""Processes that must not outlive the one that started them: data loader and prep workers, and the commands
a plan runs on this machine."""

from __future__ import annotations

import os
import signal
import threading

OWNER_ENV = "MMTOOL_STOP_WITH"  # a process whose end stops this command (the plan driver that started it)


def exit_with(owner: int) -> None:
    """End this process as soon as process ``owner`` ends. Under ``forkserver`` a worker's parent is the fork
    server, not the command's process, so the usual parent-death checks watch the wrong process: a command
    killed with SIGKILL would otherwise leave its workers (and their memory) behind."""
    _when_ended(owner, lambda: os._exit(0))


def stop_with_owner() -> None:
    """When ``$MMTOOL_STOP_WITH`` names a process (the ``mmtool reproduce`` that started this command), send
    this process SIGTERM once that one ends, however it ends: a training run then saves a checkpoint and
    stops as on a preemption (the next ``reproduce`` resumes it), prep stops between items."""
    owner = os.environ.get(OWNER_ENV, "")
    if owner.isdigit() and int(owner) != os.getpid():
        _when_ended(int(owner), lambda: os.kill(os.getpid(), signal.SIGTERM))


def _when_ended(owner: int, then) -> None:
    """Run ``then`` in a daemon thread once process ``owner`` has ended: a pidfd wait (no polling) where
    Linux has one, else a check once a second."""

    def watch() -> None:
        import select
        import time

        try:
            fd = os.pidfd_open(owner)
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            select.select([fd], [], [])
        else:
            while True:
                try:
                    os.kill(owner, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
                time.sleep(1.0)
        then()

    threading.Thread(target=watch, name="mmtool-owner-watch", daemon=True).start()
