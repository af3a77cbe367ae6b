"""Helpers shared by the Markdown result tables (`make table20`, `make laziness`, `make methods`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from mmtool.analysis.report import summarise
from mmtool.files import atomic_write_text


def mean_std(values: list[float], digits: int = 1, sign: str = "") -> str:
    """``"mean ± std"`` over seeds (:func:`mmtool.analysis.report.summarise`: sample std, 0 for one value),
    ``digits`` decimals, ``sign="+"`` to sign the mean; a dash for no values."""
    if not values:
        return "—"
    s = summarise(values)
    std = 0.0 if s.std is None else s.std
    return f"{s.mean:{sign}.{digits}f} ± {std:.{digits}f}"


def mean(values: list[float]) -> float:
    """The mean over seeds, as :func:`mean_std` prints it."""
    return summarise(values).mean


def table_main(argv: list[str] | None, module: str, build: Callable[[Path], str]) -> None:
    """``python -m <module> RUNS_ROOT OUT.md``: build the table from a runs folder, write it and print it."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        raise SystemExit(f"usage: python -m {module} RUNS_ROOT OUT.md")
    text = build(Path(args[0]))
    atomic_write_text(Path(args[1]), text)
    print(text)
