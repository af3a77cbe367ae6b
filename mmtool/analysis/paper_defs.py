"""What a paper table is made of, shared by the modules that declare tables: a table as the paper prints it
(:class:`PaperTable`), where each of our cells comes from (:class:`Source`), and the runs a table reads
(:class:`Run`, :class:`TablePlan`).

:mod:`mmtool.analysis.paper_tables` renders and :mod:`mmtool.analysis.paper_plans` plans every table; the
tables themselves are declared there (Tables 1-10) and in modules beside them that add tables of their own
(``TABLES``, ``PAPER``, ``OURS`` and, for tables whose rows depend on the runs, ``RENDER``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

Cell = float | str | None  # a paper cell: a number, a number with the paper's mark ("50.6*") or a word
# The run folders of each (dataset, run name), one per seed, where a plan names them (`mmtool reproduce`:
# <seed dir>/<run>-<id12>); without one, <root>/<dataset>/seed*/<run> as the Makefile used to write them.
Located = Mapping[tuple[str, str], Sequence[Path]]
SMOKE_BANNER = "> SMOKE mode: generated fixture data, tiny models — not comparable with the paper"


@dataclass(frozen=True)
class PaperTable:
    """One table as printed: caption, column names (dataset first where a table spans several)."""

    caption: str
    row_header: str  # the paper's name of the first column
    columns: tuple[str, ...]
    rows: dict[str, tuple[Cell, ...]]
    digits: int = 1  # decimals the paper prints
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Source:
    """Where our value of a cell comes from: ``<root>/<dataset>/seed*/<run>/results.json`` at ``key``."""

    dataset: str
    run: str
    key: tuple[str, ...]



@dataclass(frozen=True)
class Best:
    """The best of several cells by their mean over seeds, shown with its own spread (paper 002's "uni-modal (best)":
    the better of the uni-modal models)."""

    sources: tuple[Source, ...]


@dataclass(frozen=True)
class Run:
    """One run per dataset and seed; ``inputs``: (recipe key, name of the run in the same seed folder)."""

    name: str
    command: str
    recipe: str
    inputs: tuple[tuple[str, str], ...] = ()
    overrides: tuple[str, ...] = ()  # KEY=VALUE on top of the recipe (a sweep's value), part of the run's identity


@dataclass(frozen=True)
class TablePlan:
    """The datasets a table spans (in the order they are prepared) and the runs it reads."""

    datasets: tuple[str, ...]
    runs: tuple[Run, ...]
    primary: str | None  # the dataset a bare --data DIR names (None: give NAME=DIR)
    all_seeds: bool = False  # the paper gives mean ± std: every seed (else the first)
    smoke: tuple[str, ...] | None = None  # --smoke runs only these runs (a sweep's one point); None: every run
    # (dataset, recipe fragment) merged into every run and the prep of that dataset, after the run's own recipe and
    # before --recipe's: the table's own settings of a dataset (another backbone, a paper's data settings)
    fragments: tuple[tuple[str, str], ...] = ()
    smoke_fragments: tuple[tuple[str, str], ...] = ()  # likewise, merged after the SMOKE fragment with --smoke
    smoke_datasets: tuple[str, ...] | None = None  # --smoke runs only these datasets; None: every dataset
    skip: tuple[tuple[str, str], ...] = ()  # (dataset, run name) not run: a method undefined there (the table says)


# --------------------------------------------------------------------------------------------- our cells
def test_acc(dataset: str, run: str) -> Source:
    """Test accuracy of a `train` or `ensemble` run."""
    return Source(dataset, run, ("test_accuracy",))


def probe(dataset: str, run: str, modality: str) -> Source:
    """Linear-probe test accuracy of ``run``'s ``modality`` encoder (the run ``probe-<run>``)."""
    return Source(dataset, f"probe-{run}", ("probes", modality, "test_accuracy"))


def decided(dataset: str, *key: str) -> Source:
    """A field of the `decide` run."""
    return Source(dataset, "decide", key)


