"""Helper processes that must not outlive the command that started them (data loader and prep workers)."""

from __future__ import annotations

import os
import threading


def exit_with(owner: int) -> None:
    """End this process as soon as process ``owner`` ends. Under ``forkserver`` a worker's parent is the fork
    server, not the command's process, so the usual parent-death checks watch the wrong process: a command
    killed with SIGKILL would otherwise leave its workers (and their memory) behind. A daemon thread waits
    on a pidfd (no polling) where Linux has one, else checks once a second."""

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
        os._exit(0)

    threading.Thread(target=watch, name="mmtool-owner-watch", daemon=True).start()
