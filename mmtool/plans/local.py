"""The local executor: N runs at a time on this machine, each in its own slot.

A slot is a thread count or a GPU: slot k gets ``OMP_NUM_THREADS`` (torch's intra-op threads) and,
where GPUs are visible, ``CUDA_VISIBLE_DEVICES`` = the k-th of them (round robin when there are more
slots than GPUs). Small models on few cores do more work as several one-thread runs than as one run
with every thread; large ones want one run per GPU.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
from collections.abc import Collection
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from mmtool.plans.task import Task, execute
from mmtool.procs import OWNER_ENV


def visible_gpus() -> list[str]:
    """The GPUs a slot may be given: CUDA_VISIBLE_DEVICES when set, else what nvidia-smi lists (no torch)."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [g for g in given.split(",") if g.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listed.splitlines()) if line.startswith("GPU ")]


class LocalExecutor:
    """Runs tasks ``jobs`` at a time in processes started from worker threads."""

    eager = False  # a task starts only once its inputs have finished

    def __init__(self, jobs: int = 1, threads: int | None = None, gpus: list[str] | None = None) -> None:
        self.jobs = max(1, jobs)
        self.threads = threads or max(1, (os.cpu_count() or 1) // self.jobs)
        self.gpus = visible_gpus() if gpus is None else gpus
        self.pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="slot")
        self.slots: queue.Queue[int] = queue.Queue()
        for k in range(self.jobs):
            self.slots.put(k)

    def slot_env(self, slot: int) -> dict[str, str]:
        env = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
               OWNER_ENV: str(os.getpid())}  # the run stops (and saves) if this driver ends  # fmt: skip
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        return env

    def describe(self) -> str:
        where = f", GPUs {','.join(self.gpus)}" if self.gpus else ""
        return f"local: {self.jobs} at a time, {self.threads} thread(s) each{where}"

    def submit(self, task: Task, after: Collection[Future] = ()) -> Future:
        return self.pool.submit(self._run, task)

    def _run(self, task: Task) -> int:
        slot = self.slots.get()
        try:
            return execute(task, self.slot_env(slot))
        finally:
            self.slots.put(slot)

    def wait(self, handles: Collection[Future]) -> list[tuple[Future, int]]:
        """The handles that finished (at least one), each with its exit status."""
        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        return [(h, _status(h)) for h in done]

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _status(handle: Future) -> int:
    try:
        return handle.result()
    except OSError:  # the command could not even start (a missing interpreter): a failed run, not a crash
        return 127
