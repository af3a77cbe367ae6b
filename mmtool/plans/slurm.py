"""The SLURM executor: one job per run through submitit.

Settings (``--slurm KEY=VALUE``, see :data:`SETTINGS`): partition, GPUs and CPUs per run, time limit,
memory, account, qos, constraint, how many times a job may be requeued, and ``mode``:

* ``afterok`` (default): every run is submitted at once, each with ``--dependency=afterok:<its inputs' jobs>``
  and ``--kill-on-invalid-dep=yes`` (a run whose input failed is cancelled, not left pending); the
  driver only waits. Prep jobs are waited for first: the runs' identities include their caches' manifests.
* ``wait``: the driver submits a run once its inputs have finished (for clusters that limit pending jobs).

A job runs :class:`SlurmRun`, a ``submitit.helpers.Checkpointable``: on the preemption/timeout signal
submitit sends (USR2, ``signal_delay_s`` before the limit) its :meth:`SlurmRun.checkpoint` forwards SIGTERM
to the mmtool process, which saves a resumable checkpoint and exits 143, and the job is requeued under the
same id (its dependents keep waiting on it). A run whose process got SIGTERM from SLURM itself (a preemption)
asks for the same requeue. The requeued job finds the run folder's progress and continues it with
``--resume`` (:mod:`mmtool.plans.task`). With more than one GPU per run, training runs under torchrun.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from mmtool.errors import UserError
from mmtool.plans.task import SIGTERM_EXIT, Task, execute

# --slurm KEY: (submitit SlurmExecutor parameter, type); mode and max_requeue are ours
SETTINGS: dict[str, tuple[str, type]] = {
    "partition": ("partition", str),
    "gpus_per_run": ("gpus_per_node", int),
    "cpus_per_run": ("cpus_per_task", int),
    "time_min": ("time", int),
    "mem": ("mem", str),
    "account": ("account", str),
    "qos": ("qos", str),
    "constraint": ("constraint", str),
    "signal_delay_s": ("signal_delay_s", int),
    "max_requeue": ("", int),
    "mode": ("", str),
}
DEFAULTS = {"gpus_per_run": 1, "cpus_per_run": 8, "time_min": 24 * 60, "max_requeue": 3, "mode": "afterok"}
POLL_S = 30.0  # between looks at the queue while waiting (sacct through submitit's watcher)


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> typed settings over :data:`DEFAULTS`; unknown keys and bad values are one line."""
    out: dict[str, Any] = dict(DEFAULTS)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in SETTINGS:
            raise UserError(f"--slurm {item}: expected KEY=VALUE with KEY one of {', '.join(SETTINGS)}")
        try:
            out[key] = SETTINGS[key][1](value)
        except ValueError:
            raise UserError(f"--slurm {item}: {key} must be a whole number") from None
    if out["mode"] not in ("afterok", "wait"):
        raise UserError(f"--slurm mode={out['mode']}: expected afterok or wait")
    return out


class SlurmRun:
    """The callable a SLURM job runs: the task's commands; requeued on preemption (module docstring)."""

    def __init__(self, task: Task, gpus: int = 1, threads: int = 8) -> None:
        self.task, self.gpus, self.threads = task, gpus, threads
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict:
        return {"task": self.task, "gpus": self.gpus, "threads": self.threads}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _proc=None)

    def __call__(self) -> int:
        task = distributed(self.task, self.gpus)
        code = execute(task, {"OMP_NUM_THREADS": str(self.threads)}, started=self._started)
        if code == SIGTERM_EXIT and _requeue_handler_installed():
            os.kill(os.getpid(), _preempt_signal())  # SLURM's SIGTERM reached mmtool first: requeue as on USR2
        if code != 0:
            raise RuntimeError(f"{self.task.key}: exit status {code}; log: {self.task.log}")
        return 0

    def _started(self, proc: subprocess.Popen) -> None:
        self._proc = proc

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit's hook on preemption/timeout: let mmtool save and stop, then requeue this same run."""
        import submitit

        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
        return submitit.helpers.DelayedSubmission(SlurmRun(self.task, self.gpus, self.threads))


def _preempt_signal() -> int:
    from submitit.core.job_environment import JobEnvironment

    return JobEnvironment._usr_sig()


def _requeue_handler_installed() -> bool:
    """Whether submitit's requeue handler is in place (inside a submitit job; not when called directly)."""
    return callable(signal.getsignal(_preempt_signal()))


def distributed(task: Task, gpus: int) -> Task:
    """The task with its training command under torchrun when the run has several GPUs."""
    if gpus <= 1 or task.resume_argv is None:
        return task
    launch = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus))

    def wrap(argv: tuple[str, ...]) -> tuple[str, ...]:
        return (*launch, *argv[1:]) if argv[1:3] == ("-m", "mmtool.cli") else argv

    from dataclasses import replace

    return replace(task, argv=wrap(task.argv), resume_argv=wrap(task.resume_argv))


class SlurmExecutor:
    """Submits each task as one SLURM job (submitit); ``eager`` in ``afterok`` mode."""

    def __init__(self, folder: Path, settings: dict[str, Any], executor: Any = None) -> None:
        import submitit

        self.settings = settings
        self.eager = settings["mode"] == "afterok"
        self.ex = executor or submitit.SlurmExecutor(folder=str(folder), max_num_timeout=settings["max_requeue"])
        params = {SETTINGS[k][0]: v for k, v in settings.items() if SETTINGS[k][0]}
        if hasattr(self.ex, "_internal_update_parameters"):  # the SLURM executor; Local/Debug take fewer keys
            self.ex.update_parameters(**params, additional_parameters={"kill-on-invalid-dep": "yes"})

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"slurm: {shown}"

    def submit(self, task: Task, after: Collection[Any] = ()) -> Any:
        run = SlurmRun(task, self.settings["gpus_per_run"], self.settings["cpus_per_run"])
        if hasattr(self.ex, "_internal_update_parameters"):
            deps = ":".join(str(job.job_id) for job in after)
            self.ex.update_parameters(job_name=task.key.replace("/", "-"),
                                      dependency=f"afterok:{deps}" if deps else None)  # fmt: skip
        return self.ex.submit(run)

    def wait(self, handles: Collection[Any]) -> list[tuple[Any, int]]:
        """The jobs that ended (at least one), each with 0 or 1; a job SLURM cancelled counts as failed."""
        while True:
            done = [job for job in handles if job.done()]
            if done:
                return [(job, _status(job)) for job in done]
            time.sleep(POLL_S)


def _status(job: Any) -> int:
    try:
        job.result()
    except Exception:  # noqa: BLE001 - a failed, cancelled or lost job: its log says why
        return 1
    return 0
