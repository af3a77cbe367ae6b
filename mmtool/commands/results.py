"""`mmtool reproduce`, `mmtool runs` and `mmtool report`: paper tables from their runs, and the runs on disk
listed and compared over seeds."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mmtool.errors import UserError

TABLES_HELP = ("Paper tables on real data: table1 ... table18, table22 and fig2 of paper 000, ws-table1, ws-table2 "
               "and ws-fig2 of paper 001; studies on the CPU datasets: table20, laziness, methods, probes, greedy "
               "(docs/tables.md).")  # fmt: skip


DataOpt = Annotated[
    list[str] | None,
    typer.Option("--data", metavar="[NAME=]DIR", help="Raw folder of a dataset (NAME: ucf101, vggsound, "
                 "kinetics400, modelnet40; without NAME the table's main dataset). Repeatable."),
]  # fmt: skip
SeedsOpt = Annotated[str, typer.Option(metavar="0,1,2", help="Seeds of the tables that average seeds.")]
SmokeOpt = Annotated[bool, typer.Option("--smoke", help="Tiny fixture data and models, one seed.")]
QuickOpt = Annotated[bool, typer.Option("--quick", help="Paper tables: the given data and the real recipes, but only "
                                        "the runs --smoke runs (a sweep's few points) and one seed: a CPU-sized first "
                                        "look (results/quick/); the full plan reuses them.")]
ExecutorOpt = Annotated[str, typer.Option(metavar="local|slurm", help="Where the runs run.")]
JobsOpt = Annotated[int, typer.Option(metavar="N", help="Local: runs at a time.")]
ThreadsOpt = Annotated[
    int | None, typer.Option(metavar="N", help="Local: threads per run (default: cores / jobs; 1 with --smoke).")
]
SlurmOpt = Annotated[
    list[str] | None,
    typer.Option("--slurm", metavar="KEY=VALUE", help="SLURM setting, e.g. partition=gpu gpus_per_run=1 "
                 "time_min=720 mode=afterok|wait (docs/tables.md). Repeatable."),
]  # fmt: skip
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE", help="Studies: a recipe value for prep and every run "
                 "(e.g. train.epochs=20; part of each run's identity). Repeatable."),
]  # fmt: skip
GroupsOpt = Annotated[
    str | None, typer.Option(metavar="A,B", help="Studies: only these groups (datasets; greedy: mlp/guided, ...).")
]
RunsOpt = Annotated[Path | None, typer.Option(metavar="DIR", help="Studies: the runs folder (default runs/NAME).")]
OutOpt = Annotated[Path | None, typer.Option(metavar="FILE", help="Studies: the table (default results/NAME.md).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print what would be reused and run, and stop.")]
RecipeOpt = Annotated[list[str] | None, typer.Option(
    "--recipe", "-r", metavar="NAME=FILE",
    help="Paper tables: a recipe fragment merged last into dataset NAME's runs (e.g. a variant). Repeatable.")]


def reproduce(
    table: Annotated[str, typer.Argument(metavar="TABLE", help=TABLES_HELP, show_default=False)],
    data: DataOpt = None,
    seeds: SeedsOpt = "0,1,2",
    smoke: SmokeOpt = False,
    quick: QuickOpt = False,
    executor: ExecutorOpt = "local",
    jobs: JobsOpt = 1,
    threads: ThreadsOpt = None,
    slurm: SlurmOpt = None,
    sets: SetOpt = None,
    groups: GroupsOpt = None,
    runs: RunsOpt = None,
    out: OutOpt = None,
    recipe: RecipeOpt = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Reproduce a table: prepare its data, run (or reuse) every run it reads, write results/TABLE.md.

    A finished run is reused when its recipe and inputs are unchanged (its folder name carries their hash);
    a failed run does not stop the others, and running the command again continues from there.

    Example: mmtool reproduce table9 --data /data/UCF101 --jobs 2   (or --smoke; --executor slurm --slurm partition=gpu)
    """
    from mmtool.analysis import paper_plans, study_plans
    from mmtool.plans import executors

    if table in study_plans.NAMES:
        opts = study_plans.Options(table, paper_plans.parse_seeds(seeds), tuple(sets or ()), _names(groups), out, runs)
        _only_for("a paper table", data=data, smoke=smoke, recipe=recipe, quick=quick)
        run_on = None if dry_run else executors.make(executor, jobs, threads, slurm or [], opts.root)
        raise typer.Exit(study_plans.reproduce(opts, run_on, dry_run))
    _only_for("a study", set=sets, groups=groups, runs=runs, out=out)
    if quick and smoke:
        raise UserError("--quick runs the given data, --smoke the fixtures: choose one")
    opts = paper_plans.Options(table, paper_plans.parse_data(table, data or []), paper_plans.parse_seeds(seeds), smoke,
                               paper_plans.parse_recipes(table, recipe or []), quick)  # fmt: skip
    run_on = None if dry_run else executors.make(executor, jobs, 1 if smoke and threads is None else threads,
                                                  slurm or [], opts.root)  # fmt: skip
    raise typer.Exit(paper_plans.reproduce(opts, run_on, dry_run))


def _names(text: str | None) -> tuple[str, ...]:
    return tuple((text or "").replace(",", " ").split())


def _only_for(what: str, **given: object) -> None:
    """Refuse options that only ``what`` takes, naming the first one given."""
    for name, value in given.items():
        if value:
            raise UserError(f"--{name} is an option of {what} only")


def list_runs(
    stage: Annotated[
        str | None, typer.Option("--stage", metavar="STAGE", help="Only runs of this stage (train, pretrain...).")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", metavar="NAME", help="Only runs on this dataset.")
    ] = None,
    root: Annotated[
        Path | None, typer.Option("--root", metavar="DIR", help="Folder to search (default: runs/).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of the table.")] = False,
) -> None:
    """List the runs under the runs folder, by start time: stage, dataset, method (with the settings that
    tell it apart from other runs of that method, e.g. head=mlp), seed, status (running, complete, failed,
    interrupted), best-validation and test accuracy, wall time, path. A table, also when piped (--json for
    JSON), that fits the terminal (80 columns when piped, or COLUMNS) by shortening paths.

    Example: mmtool runs --stage train -d synth-gamma
    """
    from mmtool.analysis import run_records, runs_table
    from mmtool.config import Recipe
    from mmtool.paths import runs_root

    folder = root if root is not None else runs_root(Recipe.runs_root)
    if not folder.is_dir():
        raise UserError(f"no runs in {folder}: no such folder" + ("" if root else " (--root DIR searches another)"))
    rows = runs_table.listing(run_records.select(run_records.collect_runs([folder]), stage, dataset))
    if not rows:
        raise runs_table.no_runs(str(folder), stage=stage, dataset=dataset)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    tty = sys.stdout.isatty()
    colour = tty and not os.environ.get("NO_COLOR")  # plain text when piped
    typer.echo(runs_table.render_runs(rows, runs_table.output_width(tty), colour), nl=False)


def report_runs(
    paths: Annotated[
        list[Path],
        typer.Argument(metavar="RUN_OR_DIR...", help="Run folders, or folders searched for runs.", show_default=False),
    ],
    fmt: Annotated[str, typer.Option("--format", metavar="md|csv|json", help="Output format.")] = "md",
    metric: Annotated[
        str, typer.Option("--metric", metavar="FIELD", help="The results.json field to compare.")
    ] = "test_accuracy",
    group_by: Annotated[
        list[str] | None,
        typer.Option(
            "--group-by",
            metavar="KEY",
            help="Pool the runs that agree on this recipe key (repeatable) instead of on the whole recipe.",
        ),
    ] = None,
) -> None:
    """Mean ± std over seeds of finished runs, per (dataset, method) and setup: train runs by method,
    pretrain runs per modality, ensemble runs. Runs pool only when their recipes (config.yaml) agree up to
    the seeds; where runs of one method differ (e.g. model.head), each setup is a row with that key as a
    column. --group-by KEY pools by the given keys alone; a note names what then differs.

    Example: mmtool report runs/train --format csv
    """
    from mmtool.analysis import report, run_records

    writers = {"md": lambda r: report.to_markdown(r, metric, group_by), "csv": report.to_csv, "json": report.to_json}
    if fmt not in writers:
        raise UserError(f"--format must be md, csv or json, not {fmt!r}")
    runs = run_records.collect_runs(paths)
    if group_by:
        report.check_group_by(runs, group_by)
    rows = report.report_rows(runs, metric, group_by)
    where = ", ".join(str(p) for p in paths)
    if not rows:
        raise UserError(
            f"no finished train, pretrain-unimodal or ensemble run with {metric} in {where} ({len(runs)} runs found)"
        )
    used = sum(len(row["runs"]) for row in rows)
    typer.echo(f"report: {len(rows)} groups from {where}; {len(runs)} runs found, {used} values used", err=True)
    typer.echo(writers[fmt](rows), nl=False)
