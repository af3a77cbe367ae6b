"""Helpers shared by the Markdown result tables of the studies (``mmtool reproduce table20``, ``laziness``,
``methods``, ``probes``, ``greedy``).

A table reads its runs as :data:`Located`: group (a dataset, or ``encoder/algorithm``) -> seed -> run name ->
run folder. ``mmtool reproduce`` hands over where its plan put each run (folders named after their identity);
:func:`walk` reads a tree laid out by hand as ``<group>/seed<k>/<name>/``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
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


Located = Mapping[str, Mapping[int, Mapping[str, Path]]]  # group -> seed -> run name -> run folder
SEED_FOLDER = re.compile(r"seed(\d+)")


def walk(root: Path, depth: int = 1) -> dict[str, dict[int, dict[str, Path]]]:
    """The runs of a tree ``<group>/seed<k>/<name>/``, ``group`` being ``depth`` folders deep, as
    :data:`Located`; groups and names in sorted order, seeds in numeric order."""
    out: dict[str, dict[int, dict[str, Path]]] = {}
    for seed_dir in sorted(root.glob("/".join(["*"] * depth) + "/seed*")):
        match = SEED_FOLDER.fullmatch(seed_dir.name)
        if match is None or not seed_dir.is_dir():
            continue
        group = seed_dir.parent.relative_to(root).as_posix()
        runs = {p.name: p for p in sorted(seed_dir.iterdir()) if p.is_dir()}
        out.setdefault(group, {})[int(match.group(1))] = runs
    return {g: dict(sorted(seeds.items())) for g, seeds in sorted(out.items())}


def table_main(argv: list[str] | None, module: str, build: Callable[[Located], str], depth: int = 1) -> None:
    """``python -m <module> RUNS_ROOT OUT.md``: build the table from a tree laid out as :func:`walk` reads
    it, write it and print it."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        raise SystemExit(f"usage: python -m {module} RUNS_ROOT OUT.md")
    text = build(walk(Path(args[0]), depth))
    atomic_write_text(Path(args[1]), text)
    print(text)
