"""Walk a plan: reuse what finished, hand the rest to an executor, report what failed.

Prep nodes come first in every plan: their identities (the caches' manifests) are inputs of every run's.
A node is handed over once its inputs finished (an ``eager`` executor, SLURM with ``afterok``, gets it as
soon as its inputs were submitted, with their jobs as dependencies). A failed node does not stop the
others: only the nodes that read it are left out, and the end says which runs failed, with their logs.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mmtool.errors import UserError
from mmtool.plans.graph import Node, Plan, argv, prep_identity, prep_output, resume_argv, run_dir, run_identity
from mmtool.plans.task import Task, continues
from mmtool.runs import is_finished

TAIL_LINES = 15  # of a failed run's log, printed at the end


class Executor(Protocol):
    eager: bool

    def submit(self, task: Task, after: list[Any]) -> Any: ...
    def wait(self, handles: list[Any]) -> list[tuple[Any, int]]: ...
    def describe(self) -> str: ...


@dataclass
class Outcome:
    """What happened to each node: ``reused``, ``done``, ``failed`` or ``skipped`` (an input failed)."""

    status: dict[str, str] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    identities: dict[str, str] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(s in ("reused", "done") for s in self.status.values())


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Driver:
    """One walk of ``plan`` with ``executor`` (:func:`run_plan`)."""

    def __init__(self, plan: Plan, executor: Executor, log: Callable[[str], None] = say) -> None:
        self.plan, self.executor, self.say = plan, executor, log
        self.out = Outcome()
        self.running: dict[Any, str] = {}  # handle -> node key
        self.handles: dict[str, Any] = {}

    def run(self) -> Outcome:
        while True:
            while self._hand_over():
                pass
            if not self.running:
                return self.out
            for handle, code in self.executor.wait(list(self.running)):
                self._settle(self.running.pop(handle), code)

    def _hand_over(self) -> bool:
        """Reuse, submit or leave out every node that can be decided now; whether any was."""
        moved = False
        for node in self.plan.nodes.values():
            if node.key in self.out.status or node.key in self.handles:
                continue
            failed = [i.node for i in node.inputs if self.out.status.get(i.node) in ("failed", "skipped")]
            if failed:
                self._finish(node.key, "skipped", f"input {failed[0]} did not finish")
            elif self._ready(node):
                self._start(node)
            else:
                continue
            moved = True
        return moved

    def _ready(self, node: Node) -> bool:
        for i in node.inputs:
            done = self.out.status.get(i.node) in ("reused", "done")
            submitted = i.node in self.handles and not self.plan.nodes[i.node].is_prep
            if not (done or (self.executor.eager and submitted)):
                return False
        return True

    def _start(self, node: Node) -> None:
        if node.is_prep:
            return self._submit(node, None, [])
        ident = run_identity(node, self.out.identities)
        self.out.identities[node.key] = ident
        path = self.out.paths[node.key] = run_dir(node, ident)
        if is_finished(path):
            self.say(f"{self.plan.name}: reused {node.key} ({path}; finished before{provenance(path)})")
            return self._finish(node.key, "reused")
        pending = [self.handles[i.node] for i in node.inputs if i.node not in self.out.status]  # eager only
        self._submit(node, path, pending)

    def _submit(self, node: Node, path: Path | None, after: list[Any]) -> None:
        task = make_task(self.plan, node, self.out.paths, path)
        handle = self.executor.submit(task, after)
        self.handles[node.key] = handle
        self.running[handle] = node.key
        what = f"{node.key} -> {path}" if path is not None else node.key
        self.say(f"{self.plan.name}: {'resume' if continues(task) else 'run'} {what} (log: {task.log})")

    def _settle(self, key: str, code: int) -> None:
        node = self.plan.nodes[key]
        if code == 0 and node.is_prep:
            ident = prep_identity(node)
            if ident is None:
                return self._finish(key, "failed", f"prep wrote no usable {prep_output(node)}")
            self.out.identities[key] = ident
        if code != 0:
            failed = [i.node for i in node.inputs if self.out.status.get(i.node) in ("failed", "skipped")]
            if failed:  # cancelled by its scheduler because an input failed
                return self._finish(key, "skipped", f"input {failed[0]} did not finish")
            return self._finish(key, "failed", f"exit status {code}")
        self._finish(key, "done")
        self.say(f"{self.plan.name}: finished {key}")

    def _finish(self, key: str, status: str, why: str = "") -> None:
        self.out.status[key] = status
        if why:
            self.out.why[key] = why
        if status == "failed":
            self.say(f"{self.plan.name}: FAILED {key}: {why} (log: {self.plan.log(key)})")


@functools.cache
def _code_commit() -> str | None:
    from mmtool.runs import git_sha

    return git_sha()


def provenance(run: Path) -> str:
    """``", made by mmtool at commit X (now Y)..."`` when a finished run was made from another commit of the
    code than the one running now (nothing when the same, or when either is unknown)."""
    from mmtool.runs import env_of

    then, now = (env_of(run) or {}).get("git_sha"), _code_commit()
    if not then or not now or then == now:
        return ""
    return f", made at commit {then[:7]} (now {now[:7]}; delete the folder to make it again)"


def make_task(plan: Plan, node: Node, paths: dict[str, Path], path: Path | None) -> Task:
    """The job of ``node``: its command line with its inputs' folders, its log and (prep) its output."""
    return Task(
        key=node.key,
        argv=argv(node, paths, path),
        log=str(plan.log(node.key)),
        cwd=str(Path.cwd()),
        run_dir=None if path is None else str(path),
        resume_argv=None if path is None else resume_argv(node, path),
        setup=node.setup,
        output=str(prep_output(node)) if node.is_prep else None,
    )


def run_plan(plan: Plan, executor: Executor, log: Callable[[str], None] = say) -> Outcome:
    """Run every node of ``plan`` that did not finish before; the outcome of each."""
    return Driver(plan, executor, log).run()


def report(plan: Plan, out: Outcome, log: Callable[[str], None] = say) -> None:
    """One line per run that failed (with its log and the end of it) or was left out, and a count."""
    counts = {s: sum(1 for v in out.status.values() if v == s) for s in ("reused", "done", "failed", "skipped")}
    for key, status in out.status.items():
        if status == "failed":
            path = plan.log(key)
            log(f"{plan.name}: failed: {key} ({out.why.get(key, '')}); log: {path}")
            for line in _tail(path):
                log(f"    {line}")
        elif status == "skipped":
            log(f"{plan.name}: not run: {key} ({out.why.get(key, '')})")
    log(f"{plan.name}: {counts['done']} run, {counts['reused']} reused, {counts['failed']} failed, "
        f"{counts['skipped']} not run")  # fmt: skip


def _tail(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-TAIL_LINES:]
    except OSError:
        return []


def preview(plan: Plan) -> list[str]:
    """What a run of ``plan`` would do, one line per node: reuse, resume, run, or run after prep (a cache
    not prepared yet: the identities of its runs are known once it is), with a rough duration."""
    idents: dict[str, str | None] = {}
    lines = []
    for node in plan.nodes.values():
        if node.is_prep:
            idents[node.key] = prep_identity(node)
            what = "prep" if idents[node.key] is None else "check"
            lines.append(f"{what:<8} {node.key:<34} {prep_output(node)}  ({node.estimate})")
            continue
        known = [idents.get(i.node) for i in node.inputs]
        if any(k is None for k in known):
            idents[node.key] = None
            lines.append(f"{'run':<8} {node.key:<34} {node.folder}/{node.name}-<after prep>  ({node.estimate})")
            continue
        ident = idents[node.key] = run_identity(node, idents)  # type: ignore[arg-type]
        path = run_dir(node, ident)
        probe = Task(node.key, (), "", str(Path.cwd()), str(path), resume_argv(node, path))
        what = "reuse" if is_finished(path) else ("resume" if continues(probe) else "run")
        lines.append(f"{what:<8} {node.key:<34} {path}  ({'done' if what == 'reuse' else _estimate(node)})")
    return lines


def _estimate(node: Node) -> str:
    """The time an earlier run of the same name took in this folder (another recipe), else the node's guess."""
    from mmtool.runs import read_sessions

    for other in sorted(Path(node.folder).glob(f"{node.name}-*")):
        try:
            seconds = sum(s.get("seconds") or 0 for s in read_sessions(other))
        except (OSError, ValueError, AttributeError, UserError):  # an unreadable earlier run only loses its hint
            continue
        if seconds:
            return f"~{seconds:.0f} s, as {other.name}"
    return node.estimate


def carry_out(plan: Plan, executor: Executor | None, dry_run: bool, out: Path,
              write: Callable[[dict[str, Path]], str]) -> int:  # fmt: skip
    """What ``mmtool reproduce`` does with a plan: ``dry_run`` prints :func:`preview`; else run it, report,
    and when every run finished ``write`` the table from the runs' folders (node key -> folder) and print
    it. The exit status: 1 when a run failed (the table is then not written)."""
    if dry_run:
        print(f"{plan.name}: {len(plan.nodes)} nodes, runs in {plan.root}/, table -> {out}")
        print("\n".join(preview(plan)))
        return 0
    say(f"{plan.name}: {len(plan.nodes)} nodes ({executor.describe()}); logs in {plan.root / 'logs'}")
    outcome = run_plan(plan, executor)
    report(plan, outcome)
    if not outcome.ok:
        say(f"{plan.name}: {out} not written; run the same command again to continue (finished runs are reused)")
        return 1
    print(write(outcome.paths))
    return 0
