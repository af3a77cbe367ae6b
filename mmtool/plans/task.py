"""One node's job: its commands as processes, wherever the job runs (a local slot or a SLURM allocation).

A run folder left by an earlier attempt is continued, never trusted: an interrupted training run (a
killed job, a preempted or timed-out SLURM job) continues from its last checkpoint with ``--resume``;
anything else that did not finish (no checkpoint yet, or a stage that does not resume) is removed and
run again. Stdout goes to ``output`` (prep's JSON, which says where its cache is) or nowhere; stderr of
every command is appended to the node's log, which the driver names when a run fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mmtool.runs import has_progress, is_finished, is_unfinished_run

SIGTERM_EXIT = 143  # mmtool train saved a checkpoint and stopped on SIGTERM (a preemption)


@dataclass(frozen=True)
class Task:
    """Everything a job needs, picklable (submitit ships it to the compute node) and free of torch."""

    key: str
    argv: tuple[str, ...]
    log: str
    cwd: str
    run_dir: str | None = None
    resume_argv: tuple[str, ...] | None = None
    setup: tuple[tuple[str, ...], ...] = ()
    output: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def continues(task: Task) -> bool:
    """Whether an earlier attempt left progress that ``--resume`` continues (a checkpoint, a logged epoch)."""
    if task.run_dir is None or task.resume_argv is None:
        return False
    run = Path(task.cwd, task.run_dir)
    return is_unfinished_run(run) and has_progress(run)


def command(task: Task) -> tuple[str, ...]:
    """The command that (re)starts the run: ``--resume`` where an earlier attempt left progress; a folder
    with nothing worth continuing is removed first."""
    if continues(task):
        return task.resume_argv
    run = None if task.run_dir is None else Path(task.cwd, task.run_dir)
    if run is not None and run.exists() and not is_finished(run):
        shutil.rmtree(run)
    return task.argv


def execute(task: Task, env: dict[str, str] | None = None,
            started: Callable[[subprocess.Popen], None] | None = None) -> int:  # fmt: skip
    """Run the task's commands in order; the first non-zero exit status ends it and is returned.
    ``started`` sees each process (a SLURM job forwards a preemption signal to it)."""
    log = Path(task.cwd, task.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **task.env, **(env or {})}
    steps = [*task.setup, command(task)]
    for i, argv in enumerate(steps):
        last = i == len(steps) - 1
        with open(log, "a") as err, _stdout(task, last) as out:
            err.write(f"$ {' '.join(argv)}\n")
            err.flush()
            proc = subprocess.Popen(argv, cwd=task.cwd, env=full_env, stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL)  # fmt: skip
            if started is not None:
                started(proc)
            code = proc.wait()
        if code != 0:
            return code
    return 0


class _stdout:
    """The output file for the last command with an ``output`` (written whole or not at all), else DEVNULL."""

    def __init__(self, task: Task, last: bool) -> None:
        self.path = Path(task.cwd, task.output) if (last and task.output) else None
        self.file = None

    def __enter__(self):
        if self.path is None:
            return subprocess.DEVNULL
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path.with_suffix(".tmp"), "w")
        return self.file

    def __exit__(self, kind, *rest) -> None:
        if self.file is not None:
            self.file.close()
            self.path.with_suffix(".tmp").replace(self.path)
