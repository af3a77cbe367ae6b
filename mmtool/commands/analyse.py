"""`mmtool probe`, `decide`, `ensemble` and `utilization`: the commands that read earlier runs (``--run``,
``--teachers``) and write one new run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmtool.commands.common import (
    DatasetOpt,
    JsonOpt,
    Overrides,
    RecipeOpt,
    RunDirOpt,
    SourceOpt,
    TeachersOpt,
    _expect_stage,
    _load,
    _start,
)

NEEDS = {"probe": ("run",), "utilization": ("run",), "decide": ("teachers",), "ensemble": ("teachers",)}


def _analyse(stage: str, recipe, dataset, overrides, run_dir, as_json: bool, **extra) -> None:
    """Shared body of the commands that read earlier runs and write one new run (no training resume)."""
    from mmtool.runs import require_run

    cfg = _load(recipe, dataset, f"{stage}.yaml", overrides, **extra)
    _expect_stage(cfg, stage)
    for key in NEEDS.get(stage, ()):  # before any run folder exists
        if getattr(cfg, key) is None:
            require_run(None, f"mmtool {stage.replace('pretrain', 'pretrain-unimodal')}", key)
    _start(stage, cfg, run_dir, as_json)


def probe(
    recipe: RecipeOpt = None,
    dataset: DatasetOpt = None,
    run: SourceOpt = None,
    teachers: Annotated[
        Path | None,
        typer.Option(
            "--teachers", metavar="RUN_DIR", help="Uni-modal run drawn as the reference (with over_training)."
        ),
    ] = None,
    overrides: Overrides = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Linear evaluation of frozen encoders from a uni-modal or a fusion run (probe.over_training=true:
    every snapshot, plotted beside a uni-modal reference).

    Example: mmtool probe --dataset synth-gamma --run runs/train/synth-gamma-umt-...
    """
    _analyse("probe", recipe, dataset, overrides, run_dir, as_json, run=run, teachers=teachers)


def decide(
    recipe: RecipeOpt = None,
    dataset: DatasetOpt = None,
    teachers: TeachersOpt = None,
    overrides: Overrides = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pick UMT or UME: multi-modal linear classifier on frozen uni-modal encoders vs. averaged predictions.

    Example: mmtool decide --dataset synth-gamma --teachers RUN | mmtool train --from-decision -
    """
    _analyse("decide", recipe, dataset, overrides, run_dir, as_json, teachers=teachers)


def ensemble(
    recipe: RecipeOpt = None,
    dataset: DatasetOpt = None,
    teachers: TeachersOpt = None,
    run: Annotated[
        Path | None, typer.Option("--run", metavar="RUN_DIR", help="A fusion run to compare with per class.")
    ] = None,
    overrides: Overrides = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """UME: combine the predictions of the uni-modal models of a pretrain run (--run FUSION: per-class
    comparison with a fusion model).

    Example: mmtool ensemble --dataset synth-gamma --teachers runs/pretrain/synth-gamma-unimodal-...
    """
    _analyse("ensemble", recipe, dataset, overrides, run_dir, as_json, teachers=teachers, run=run)


def utilization(
    recipe: RecipeOpt = None,
    dataset: DatasetOpt = None,
    run: SourceOpt = None,
    overrides: Overrides = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Conditional utilization rate of each modality given the others (u(m1|m2), u(m2|m1) and d_util for two).

    Example: mmtool utilization --dataset synth-gamma --run runs/train/synth-gamma-naive-...
    """
    _analyse("utilization", recipe, dataset, overrides, run_dir, as_json, run=run)
