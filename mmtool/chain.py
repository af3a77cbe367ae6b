"""Runs several mmtool commands one after another in one Python process, each through the real CLI.

Why: every ``mmtool`` process first pays for importing torch and for building its first optimizer (which
imports torch._dynamo), about 2-3 s on a small CPU. ``make table20`` runs three short commands per
(dataset, seed) job; in one process that start-up is paid once per job instead of once per command.
Each command goes through ``mmtool.cli.app`` exactly as typed on a command line (same recipe resolution,
overrides and run folders), so what a job computes does not depend on how it was launched.

Usage: python -m mmtool.chain "prep synth-gamma data.seed=0" "train naive -r R.yaml --run-dir D" ...
(also under torchrun: ``torchrun --nproc_per_node 2 -m mmtool.chain "train ..." "probe ..."``)

Each argument is one command line (split like a shell would). The commands run in order and stop at the
first that fails; a user error prints one line and exits 2, as ``mmtool`` does. Stdout carries what the
commands print; stderr their logs plus one ``chain:`` line per command with its wall time.
"""

from __future__ import annotations

import shlex
import sys
import time

from typer.exceptions import TyperException

from mmtool.cli import app, release_workers
from mmtool.errors import UserError


def run(commands: list[str]) -> None:
    """Run each command line through the CLI, in order, in this process."""
    for command in commands:
        start = time.perf_counter()
        try:
            try:
                app(shlex.split(command), standalone_mode=False)
            finally:
                release_workers()
        except (UserError, TyperException) as err:  # a recipe or usage error: one line, as `mmtool` prints it
            print(f"error: {err} (in: mmtool {command})", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        print(f"chain: {time.perf_counter() - start:.2f} s  mmtool {command}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    commands = sys.argv[1:] if argv is None else argv
    if not commands:
        raise SystemExit('usage: python -m mmtool.chain "COMMAND ARGS..." ["COMMAND ARGS..." ...]')
    run(commands)


if __name__ == "__main__":
    main()
