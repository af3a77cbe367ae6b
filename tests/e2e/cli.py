"""Running the real command line from tests: in this process by default, in a child process on request.

In this process, ``mmtool`` runs exactly as its console script does (``mmtool.cli.main`` with
``sys.argv``), from ``cwd``, with stdin, stdout and stderr swapped for strings and the exit status taken
from ``SystemExit``; an uncaught exception becomes exit status 1 with its traceback on stderr, as in a
child process. What a process's end would release is released after each call (run-folder locks, the
fault-point counters, the writer flag), so calls do not see each other. Saving the ~2.5 s of interpreter
start, torch import and first optimizer per call is most of what keeps the end-to-end tests fast.

``process=True`` runs ``python -m mmtool.cli`` in a child process: for what only a real process shows
(``kill -9``, signals, a lock held by another process, exit codes set by the interpreter).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def base_env() -> dict[str, str]:
    return {"MMTOOL_RECIPES": str(REPO / "recipes"), "PYTHONPATH": str(REPO)}


def run_cli(cwd: Path, *args: str, stdin: str | None = None, check: bool = True, env: dict[str, str] | None = None,
            process: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:  # fmt: skip
    if process:
        proc = subprocess.run([sys.executable, "-m", "mmtool.cli", *args], cwd=cwd, env={**os.environ, **base_env(),
                              **(env or {})}, input=stdin, capture_output=True, text=True, timeout=timeout)  # fmt: skip
    else:
        proc = _in_process(Path(cwd), list(args), stdin, {**base_env(), **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"mmtool {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def _in_process(cwd: Path, args: list[str], stdin: str | None, env: dict[str, str]) -> subprocess.CompletedProcess:
    from mmtool import cli, faults, files, runs

    out, err = io.StringIO(), io.StringIO()
    saved_env = {k: os.environ.get(k) for k in env}
    saved = (os.getcwd(), sys.argv, sys.stdin)
    code = 0
    try:
        os.environ.update({k: v for k, v in env.items() if k != "PYTHONPATH"})
        os.chdir(cwd)
        sys.argv, sys.stdin = ["mmtool", *args], io.StringIO(stdin or "")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
            except Exception:  # noqa: BLE001  (an internal error: a child process would print it and exit 1)
                traceback.print_exc(file=err)
                code = 1
    finally:
        os.chdir(saved[0])
        sys.argv, sys.stdin = saved[1], saved[2]
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for path in list(runs._held):  # what the end of a process releases
            runs.unlock_run(Path(path))
        faults._counts.clear()
        files.set_writer(True)
    return subprocess.CompletedProcess(["mmtool", *args], code, out.getvalue(), err.getvalue())


def messages(stderr: str) -> list[str]:
    """The lines of ``stderr`` other than the ``run: PATH`` announcements every run-making command prints
    when it starts and ends (what "one line" of an error message is counted on)."""
    return [line for line in stderr.strip().splitlines() if line and not line.startswith("run: ")]
