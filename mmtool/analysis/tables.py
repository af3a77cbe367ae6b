"""Helpers shared by the Markdown result tables (`make table20`, `make laziness`, `make methods`)."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from mmtool.runs import atomic_write_text


def mean_std(values: list[float]) -> str:
    """``"mean ± std"`` with one decimal (std 0 for one value, a dash for none)."""
    if not values:
        return "—"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {std:.1f}"


def table_main(argv: list[str] | None, module: str, build: Callable[[Path], str]) -> None:
    """``python -m <module> RUNS_ROOT OUT.md``: build the table from a runs folder, write it and print it."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        raise SystemExit(f"usage: python -m {module} RUNS_ROOT OUT.md")
    text = build(Path(args[0]))
    atomic_write_text(Path(args[1]), text)
    print(text)
