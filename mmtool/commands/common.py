"""What the commands share: their options, the recipe a command line names (``-r``/``-d`` and ``key=value``
overrides), and running a stage in a new run or a resumed one with the command's one
:class:`~mmtool.engine.runtime.Runtime`, the results printed by :func:`emit` (a table on a terminal, JSON
when piped)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mmtool.errors import UserError

RecipeOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--recipe", "-r", metavar="FILE", help="Recipe YAML (see `mmtool recipes`); repeat to merge fragments in order."
    ),
]
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", "-d", metavar="NAME", help="Shortcut for recipes/<dataset>/<stage>.yaml.")
]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(metavar="KEY=VALUE", help="Recipe overrides, e.g. optim.lr=1e-3", show_default=False),
]
RunDirOpt = Annotated[
    Path | None, typer.Option("--run-dir", metavar="DIR", help="Write the run here instead of runs/<stage>/...")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON even on a terminal.")]
ResumeOpt = Annotated[
    Path | None, typer.Option("--resume", metavar="RUN_DIR", help="Continue a killed run from its last checkpoint.")
]
TeachersOpt = Annotated[
    Path | None, typer.Option("--teachers", metavar="RUN_DIR", help="A `mmtool pretrain-unimodal` run directory.")
]
SourceOpt = Annotated[Path | None, typer.Option("--run", metavar="RUN_DIR", help="The run directory to analyse.")]


def _load(recipe: list[Path] | None, dataset: str | None, stage_file: str, overrides: list[str] | None, **extra):
    """The recipe that ``-r``/``-d`` name, with the options in ``extra`` (``teachers=...``) and then the
    command line's ``key=value`` overrides applied; a key the command line gives twice is refused."""
    from mmtool.config import load_recipe
    from mmtool.recipe_files import check_overrides, resolve_recipe

    check_overrides(overrides)
    extra_overrides = [f"{k}={v}" for k, v in extra.items() if v is not None]
    return load_recipe(resolve_recipe(recipe, dataset, stage_file), [*extra_overrides, *(overrides or [])])


def _given(recipe: list[Path] | None, dataset: str | None, method: str | None = None) -> str:
    """How the command line named its recipe, for messages: ``-r a.yaml -d tiny naive``."""
    parts = ([method] if method is not None else []) + [f"-r {r}" for r in recipe or []]
    return " ".join(parts + ([f"-d {dataset}"] if dataset is not None else [])) or "the command line"


def _resume(resume: Path, stage: str, wanted, given: str, overrides: list[str] | None, method: str | None,
            run_dir: Path | None, as_json: bool) -> None:  # fmt: skip
    """Continue the run ``resume`` as it is. ``wanted``: the recipe the command line also named (``-r``, ``-d``,
    ``--from-decision``), refused unless it is the run's own; without one, ``overrides`` and ``method`` are
    checked against the run's recipe. Either way a resume never runs other settings than it says."""
    import importlib

    from mmtool.engine.runtime import Runtime
    from mmtool.runs import Run

    if run_dir is not None and Path(run_dir).resolve() != Path(resume).resolve():
        raise UserError(f"--run-dir {run_dir} and --resume {resume} name two runs; --resume continues its own folder")
    saved = Run.open(resume, key="--resume", what="--resume")
    saved.check_resume(stage, overrides, method, wanted, given)
    runtime = Runtime.from_config(saved.config.train)  # the command's one runtime, as the run was made
    module = importlib.import_module(f"mmtool.stages.{stage}")
    with saved.resume(runtime) as run:
        emit(run.finish(module.run(run.config, run, runtime, resume=True)), as_json)


def _start(stage: str, cfg, run_dir: Path | None, as_json: bool) -> None:
    """Run a stage in a new run: the command's one :class:`Runtime` (an impossible device or precision
    stops here, before any folder exists), the run created, the stage's results written by the run."""
    import importlib

    from mmtool.engine.runtime import Runtime
    from mmtool.paths import runs_root
    from mmtool.runs import Run

    module = importlib.import_module(f"mmtool.stages.{stage}")
    runtime = Runtime.from_config(cfg.train)
    with Run.create(runs_root(cfg.runs_root), stage, cfg, runtime, run_dir) as run:
        emit(run.finish(module.run(cfg, run, runtime)), as_json)


def _expect_stage(cfg, *stages: str) -> None:
    if cfg.stage not in stages:
        raise UserError(f"{cfg.source}: key 'stage' is {cfg.stage!r}, this command needs {' or '.join(stages)}")


def emit(result: dict, as_json: bool) -> None:
    """JSON on stdout when piped or asked; otherwise a readable summary and the run directory. Under
    torchrun only rank 0 prints (every rank holds the same result)."""
    if os.environ.get("RANK", "0") != "0":
        return
    summary = result.get("summary", [])
    if as_json or not sys.stdout.isatty():
        for line in summary:
            typer.echo(line, err=True)
        typer.echo(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(show_header=False, box=None)
    for line in summary:
        table.add_row(line)
    console.print(table)  # the run folder was announced on stderr (`run: PATH`)
