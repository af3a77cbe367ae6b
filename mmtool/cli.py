"""Command-line interface: one thin function per subcommand.

Each command resolves a recipe, applies ``key=value`` overrides, builds the command's one
:class:`~mmtool.engine.runtime.Runtime`, creates (or, with ``--resume``, reopens) its
:class:`~mmtool.runs.Run` and hands both to ``mmtool.stages.<stage>.run``; the run writes the results.
torch is imported only inside commands, so ``mmtool --help`` is instant.
A stage's results print as a table on a terminal and as JSON when stdout is piped (or with ``--json``), so
``decide | train --from-decision -`` works; listings (``runs``, ``recipes``, ``train --list``) stay tables
when piped, as ``gh`` and ``kubectl`` do, and print JSON with ``--json``. Logs and summaries go to stderr.
A user error prints one line and exits 2.

The commands live in :mod:`mmtool.commands`, grouped by what they work on; this module holds the Typer app,
registers them in the order ``mmtool --help`` lists them, and the console entry point :func:`main`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mmtool.commands.analyse import decide, ensemble, probe, utilization
from mmtool.commands.data import prep
from mmtool.commands.recipes import recipes, validate
from mmtool.commands.results import list_runs, report_runs, reproduce
from mmtool.commands.training import pretrain_unimodal, train
from mmtool.errors import Interrupted, PrepInterrupted, UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="mmtool: measure and fix modality laziness in multi-modal learning (UMT / UME).",
)


def _version(value: bool) -> None:
    if value:
        from mmtool import __version__

        typer.echo(f"mmtool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """mmtool: measure and fix modality laziness in multi-modal learning (UMT / UME)."""


<<<<<<< HEAD
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


@app.command()
def prep(
    dataset: Annotated[
        str, typer.Argument(metavar="DATASET", help="Dataset name (see `mmtool recipes`).", show_default=False)
    ],
    root: Annotated[
        str,
        typer.Option(
            metavar="DIR", help="Where prepared datasets live (default: data/ of the project, or $MMTOOL_DATA)."
        ),
    ] = "data",
    raw: Annotated[
        str | None,
        typer.Option("--raw", metavar="DIR", help="Folder with the dataset's published layout (real datasets)."),
    ] = None,
    workers: Annotated[
        int, typer.Option(metavar="N", help="Worker processes decoding in parallel (real datasets).")
    ] = 0,
    max_skip_frac: Annotated[
        float,
        typer.Option(
            "--max-skip-frac", metavar="FRACTION", help="Broken inputs allowed before prep fails, as a fraction."
        ),
    ] = 0.05,
    max_missing_frac: Annotated[
        float,
        typer.Option(
            "--max-missing-frac",
            metavar="FRACTION",
            help="Listed samples absent on disk allowed before prep fails, as a fraction (real datasets).",
        ),
    ] = 0.5,
    force: Annotated[bool, typer.Option(help="Rebuild even if a complete cache exists.")] = False,
    overrides: Overrides = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a dataset's loader-ready cache and manifest.

    Example: mmtool prep synth-gamma data.seed=1   (real data: mmtool prep ucf101 --raw DIR --workers 8)
    """
    from mmtool.config import build_recipe
    from mmtool.data import DATASETS, PrepOptions
    from mmtool.recipe_files import apply_overrides
    from mmtool.stages import prep as stage

    _check_prep_dataset(dataset, DATASETS.names(), overrides)
    data = {"name": dataset, "root": root, **({"raw": raw} if raw is not None else {})}
    raw_cfg = apply_overrides({"stage": "prep", "data": data}, overrides, "command line")
    options = PrepOptions(workers=workers, max_skip_frac=max_skip_frac, max_missing_frac=max_missing_frac)
    emit(stage.run(build_recipe(raw_cfg, "command line"), force=force, options=options), as_json)


def _check_prep_dataset(dataset: str, known: list[str], overrides: list[str] | None) -> None:
    """Refuse an unregistered dataset in one line with the closest names (and a key given twice)."""
    from mmtool.coercion import did_you_mean
    from mmtool.recipe_files import check_overrides

    if dataset not in known:
        raise UserError(f"unknown dataset {dataset!r}{did_you_mean(dataset, known)} (known: {', '.join(known)})")
    check_overrides(overrides)


@app.command("pretrain-unimodal")
def pretrain_unimodal(
    recipe: RecipeOpt = None,
    dataset: DatasetOpt = None,
    overrides: Overrides = None,
    run_dir: RunDirOpt = None,
    resume: ResumeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train one model per modality, with the same encoder as in fusion.

    Example: mmtool pretrain-unimodal --dataset synth-gamma train.seed=1
    """
    from mmtool.recipe_files import check_overrides

    check_overrides(overrides)
    if resume is not None:
        wanted = None
        if recipe or dataset is not None:  # the recipe named must be the run's own
            wanted = _load(recipe, dataset, "pretrain.yaml", overrides)
            _expect_stage(wanted, "pretrain")
        return _resume(resume, "pretrain", wanted, _given(recipe, dataset), overrides, None, run_dir, as_json)
    cfg = _load(recipe, dataset, "pretrain.yaml", overrides)
    _expect_stage(cfg, "pretrain")
    _start("pretrain", cfg, run_dir, as_json)


@app.command()
def train(
    method: Annotated[
        str | None,
        typer.Argument(
            metavar="METHOD", help="Method name (see --list), or a recipe of the dataset.", show_default=False
        ),
    ] = None,
    overrides: Overrides = None,
    recipe: RecipeOpt = None,
    dataset: DatasetOpt = None,
    teachers: TeachersOpt = None,
    from_decision: Annotated[
        str | None,
        typer.Option("--from-decision", metavar="FILE|-", help="JSON from `mmtool decide` (file, or - for stdin)."),
    ] = None,
    run_dir: RunDirOpt = None,
    resume: ResumeOpt = None,
    list_methods: Annotated[bool, typer.Option("--list", help="List the registered methods.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a multi-modal model with a registered method (umt, naive, ume, ...); with --recipe the
    METHOD may be left out (the recipe names it).

    Example: mmtool train umt --dataset synth-gamma --teachers runs/pretrain/synth-gamma-unimodal-...
    """
    from mmtool.recipe_files import check_overrides

    if list_methods:
        return _list_methods(as_json)
    if method is not None and "=" in method:
        overrides, method = [method, *(overrides or [])], None
    check_overrides(overrides)
    if resume is not None:
        wanted = None
        if recipe or dataset is not None or from_decision is not None:  # the recipe named must be the run's own
            wanted = _train_recipe(method, overrides, recipe, dataset, teachers, from_decision)
        elif teachers is not None:
            overrides = [f"teachers={teachers}", *(overrides or [])]
        given = _given(recipe, dataset, method) if from_decision is None else f"--from-decision {from_decision}"
        return _resume(resume, "train", wanted, given, overrides, method, run_dir, as_json)
    cfg = _train_recipe(method, overrides, recipe, dataset, teachers, from_decision)
    if cfg.teachers is None and _needs_teachers(cfg):  # before any run folder exists
        from mmtool.runs import require_run

        require_run(None, f"method {cfg.method.name!r}", "teachers")
    _start("train", cfg, run_dir, as_json)


def _train_recipe(method: str | None, overrides: list[str] | None, recipe: list[Path] | None, dataset: str | None,
                  teachers: Path | None, from_decision: str | None):  # fmt: skip
    """The training recipe a `mmtool train` command line names: a decision's, or ``-r``/``-d``/METHOD's."""
    if from_decision is not None:
        if dataset is not None:
            raise UserError("--from-decision names its own recipe; drop --dataset (-r adds fragments over it)")
        cfg = _from_decision(from_decision, method, overrides, teachers, recipe or [])
    else:
        if method is None and not recipe:
            raise UserError("give a METHOD (see `mmtool train --list`), --recipe, or --from-decision")
        if method is not None and dataset is not None:
            _check_method_recipe(method, dataset)
        cfg = _load(recipe, dataset, f"{method}.yaml", overrides, teachers=teachers)
        if method is not None and method != cfg.method.name and (dataset is None or _is_method(method)):
            raise UserError(f"{cfg.source}: the recipe trains method {cfg.method.name!r}, not {method!r}")
    _expect_stage(cfg, "train")
    return cfg


def _needs_teachers(cfg) -> bool:
    """Methods that start from, or distil, the uni-modal models of a `pretrain-unimodal` run."""
    return cfg.method.name in ("umt", "finetune") or (
        cfg.method.name == "ume" and cfg.method.params.get("from_teachers")
    )


def _is_method(name: str) -> bool:
    from mmtool.methods.params import METHOD_PARAMS

    return name in METHOD_PARAMS


def _check_method_recipe(name: str, dataset: str) -> None:
    """``train NAME -d DATASET`` reads recipes/DATASET/NAME.yaml, where NAME is a method or a variant of one
    (``naive_linear``, ``umt_m1``). A name that is neither is an unknown method, said as such with the list
    (and the closest name); a known method without a recipe for the dataset says which recipes it has."""
    import difflib

    from mmtool.methods.params import METHOD_PARAMS
    from mmtool.recipe_files import check_recipe_dataset, recipes_dir

    folder = recipes_dir() / dataset
    if (folder / f"{name}.yaml").is_file():
        return
    check_recipe_dataset(dataset)  # a mistyped dataset: the closest names
    variants = sorted(p.stem for p in folder.glob("*.yaml") if p.stem not in ("pretrain", "decide", "probe",
                      "ensemble", "utilization"))  # fmt: skip
    if name not in METHOD_PARAMS:
        close = difflib.get_close_matches(name, [*METHOD_PARAMS, *variants], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(
            f"unknown method {name!r}{hint} Methods: {', '.join(sorted(METHOD_PARAMS))} "
            f"(`mmtool train --list`); recipes for {dataset}: {', '.join(variants)}"
        )
    raise UserError(
        f"method {name!r} has no recipe for {dataset} ({folder / (name + '.yaml')}); recipes for {dataset}: "
        f"{', '.join(variants)}; or give -r RECIPE.yaml with method.name: {name}"
    )


def _from_decision(
    source: str, method: str | None, overrides: list[str] | None, teachers: Path | None, fragments: list[Path]
):
    """The training recipe a `decide` result names, with its teachers and data, then ``-r`` fragments and
    key=value overrides over it."""
    from mmtool.config import load_recipe

    text = sys.stdin.read() if source == "-" else _read(source)
    try:
        decision = json.loads(text)
    except json.JSONDecodeError:
        raise UserError(f"--from-decision {source}: not JSON from `mmtool decide`") from None
    if not isinstance(decision, dict) or "verdict" not in decision or "recipe" not in decision:
        raise UserError(f"--from-decision {source}: missing 'verdict'/'recipe' (is it `mmtool decide --json` output?)")
    if method is not None and method != decision["method"]:
        raise UserError(f"--from-decision says {decision['method']!r} but METHOD is {method!r}")
    typer.echo(f"decision: {decision['verdict']} -> {decision['recipe']}", err=True)
    base = [f"teachers={teachers or decision['teachers']}", *decision.get("data_overrides", [])]
    if decision["verdict"] == "UME":  # the paper's UME: average the teachers decide compared, train nothing
        base.append("method.from_teachers=true")
    return load_recipe([Path(decision["recipe"]), *fragments], [*base, *(overrides or [])])


def _read(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"file not found: {p}")
    return p.read_text()


def _list_methods(as_json: bool) -> None:
    from mmtool.methods import describe

    rows = describe()
    if as_json:  # a listing stays a table when piped; --json for scripts
        typer.echo(json.dumps([{"name": n, "summary": s, "reference": r} for n, s, r in rows], indent=2))
        return
    for name, summary, ref in rows:
        typer.echo(f"{name:<10} {summary}  [{ref}]")


@app.command()
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


@app.command()
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


@app.command()
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


@app.command()
def utilization(
    recipe: RecipeOpt = None,
    dataset: DatasetOpt = None,
    run: SourceOpt = None,
    overrides: Overrides = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Conditional utilization rates u(m1|m2), u(m2|m1) and d_util of a trained fusion model.

    Example: mmtool utilization --dataset synth-gamma --run runs/train/synth-gamma-naive-...
    """
    _analyse("utilization", recipe, dataset, overrides, run_dir, as_json, run=run)


@app.command()
def reproduce(
    table: Annotated[str, typer.Argument(metavar="TABLE", help="table1, table3, table4, table5, table7, table8, "
                                         "table9 or table10 (docs/tables.md).", show_default=False)],
    data: Annotated[
        list[str] | None,
        typer.Option("--data", metavar="[NAME=]DIR", help="Raw folder of a dataset (NAME: ucf101, vggsound, "
                     "kinetics400, modelnet40; without NAME the table's main dataset). Repeatable."),
    ] = None,
    seeds: Annotated[str, typer.Option(metavar="0,1,2", help="Seeds of the tables that average seeds.")] = "0,1,2",
    smoke: Annotated[bool, typer.Option("--smoke", help="Tiny fixture data and models, one seed.")] = False,
    executor: Annotated[str, typer.Option(metavar="local|slurm", help="Where the runs run.")] = "local",
    jobs: Annotated[int, typer.Option(metavar="N", help="Local: runs at a time.")] = 1,
    threads: Annotated[
        int | None, typer.Option(metavar="N", help="Local: threads per run (default: cores / jobs; 1 with --smoke).")
    ] = None,
    slurm: Annotated[
        list[str] | None,
        typer.Option("--slurm", metavar="KEY=VALUE", help="SLURM setting, e.g. partition=gpu gpus_per_run=1 "
                     "time_min=720 mode=afterok|wait (docs/tables.md). Repeatable."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be reused and run, and stop.")] = False,
) -> None:
    """Reproduce a paper table: prepare its data, run (or reuse) every run it reads, write results/TABLE.md.

    A finished run is reused when its recipe and inputs are unchanged (its folder name carries their hash);
    a failed run does not stop the others, and running the command again continues from there.

    Example: mmtool reproduce table9 --data /data/UCF101 --jobs 2   (or --smoke; --executor slurm --slurm partition=gpu)
    """
    from mmtool.analysis import paper_plans
    from mmtool.plans import executors

    opts = paper_plans.Options(
        table, paper_plans.parse_data(table, data or []), paper_plans.parse_seeds(seeds), smoke
    )
    run_on = None if dry_run else executors.make(executor, jobs, 1 if smoke and threads is None else threads,
                                                  slurm or [], opts.root)  # fmt: skip
    raise typer.Exit(paper_plans.reproduce(opts, run_on, dry_run))


@app.command("runs")
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
    from mmtool.analysis import report
    from mmtool.config import Recipe
    from mmtool.paths import runs_root

    folder = root if root is not None else runs_root(Recipe.runs_root)
    if not folder.is_dir():
        raise UserError(f"no runs in {folder}: no such folder" + ("" if root else " (--root DIR searches another)"))
    rows = report.listing(report.select(report.collect_runs([folder]), stage, dataset))
    if not rows:
        raise report.no_runs(str(folder), stage=stage, dataset=dataset)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    tty = sys.stdout.isatty()
    colour = tty and not os.environ.get("NO_COLOR")  # plain text when piped
    typer.echo(report.render_runs(rows, report.output_width(tty), colour), nl=False)


@app.command("report")
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
    from mmtool.analysis import report

    writers = {"md": lambda r: report.to_markdown(r, metric, group_by), "csv": report.to_csv, "json": report.to_json}
    if fmt not in writers:
        raise UserError(f"--format must be md, csv or json, not {fmt!r}")
    runs = report.collect_runs(paths)
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


@app.command()
def recipes(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of the table.")] = False,
) -> None:
    """List the shipped recipes with their first comment line.

    Example: mmtool recipes
    """
    from mmtool.recipe_files import recipes_dir

    root = recipes_dir()
    rows = []
    for path in sorted(root.rglob("*.yaml")):
        if "_base" in path.relative_to(root).parts:  # fragments that other recipes build on
            continue
        first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        rows.append((str(path.relative_to(root)), first))
    if as_json:  # a listing stays a table when piped; --json for scripts
        typer.echo(json.dumps([{"recipe": r, "about": a} for r, a in rows], indent=2))
        return
    for rel, about in rows:
        typer.echo(f"{rel:<34} {about}")


@app.command()
def validate(
    paths: Annotated[
        list[Path], typer.Argument(metavar="RECIPE...", help="Recipe files to check.", show_default=False)
    ],
    overrides: Annotated[
        list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="An override to apply (repeatable).")
    ] = None,
) -> None:
    """Check recipes: unknown keys, wrong types and missing files. Every file given is checked, with one
    line each (ok, or error and its problem); a fragment (under _base/, or a base of another file given)
    is checked key by key without needing a stage. Exits 2 if any file failed.

    Example: mmtool validate recipes/*/*.yaml recipes/_base/*.yaml
    """
    from mmtool.recipe_files import check_overrides, recipe_bases

    check_overrides(overrides)
    included = set().union(*(recipe_bases(p) for p in paths))
    if len(paths) == 1:  # one file: its problem is the command's error, as for any other command
        typer.echo(_validated(paths[0], overrides, included))
        return
    failed = 0
    for path in paths:
        try:
            line = _validated(path, overrides, included)
        except UserError as err:
            failed += 1
            message = str(err).removeprefix(f"{path}: ")
            line = f"error {path}: {message}"
        typer.echo(line)
    if failed:
        raise UserError(f"{failed} of {len(paths)} recipes failed validation")


def _validated(path: Path, overrides: list[str] | None, included: set[Path]) -> str:
    """The ``ok`` line of a recipe or fragment that validates (else its :class:`UserError`)."""
    from mmtool.config import load_recipe
    from mmtool.recipe_files import is_fragment

    if is_fragment(path, included):
        load_recipe(path, overrides, fragment=True)
        return f"ok  {path}  (fragment)"
    cfg = load_recipe(path, overrides)
    return f"ok  {path}  (stage {cfg.stage}, method {cfg.method.name})"
=======
app.command()(prep)
app.command("pretrain-unimodal")(pretrain_unimodal)
app.command()(train)
app.command()(probe)
app.command()(decide)
app.command()(ensemble)
app.command()(utilization)
app.command()(reproduce)
app.command("runs")(list_runs)
app.command("report")(report_runs)
app.command()(recipes)
app.command()(validate)
>>>>>>> split-cli


def _all_ranks_done() -> None:
    """Under torchrun, wait until every rank got here (a no-op in one process)."""
    if "WORLD_SIZE" not in os.environ:
        return
    from mmtool.engine.runtime import barrier_all

    barrier_all()


def _resume_command(run_dir: Path) -> str:
    """The command that continues ``run_dir`` (read from its config.yaml), as it was launched."""
    from mmtool.runs import run_stage

    stage = run_stage(run_dir)
    command = {"pretrain": "pretrain-unimodal", "train": "train"}.get(stage or "")
    if command is None:
        return f"run the command again (a {stage or 'this'} run does not resume)"
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    launcher = f"torchrun --nproc_per_node {world} -m mmtool" if world > 1 else "mmtool"
    return f"{launcher} {command} --resume {run_dir}"


def release_workers() -> None:
    """Stop the data loader worker processes a command left running (without importing torch for a
    command that never loaded data)."""
    source = sys.modules.get("mmtool.data.source")
    if source is not None:
        source.release_workers()


def main() -> None:
    """Console entry point: user errors print one line on stderr and exit 2."""
    try:
        try:
            app()
        finally:
            release_workers()
    except UserError as err:
        rank = os.environ.get("RANK", "0") if "WORLD_SIZE" in os.environ else "0"
        typer.echo(f"error{f' (rank {rank})' if rank != '0' else ''}: {err}", err=True)
        raise SystemExit(2) from None
    except Interrupted as err:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, one line for the whole job
            typer.echo(f"{err}; resume with: {_resume_command(err.run_dir())}", err=True)
        _all_ranks_done()  # torchrun stops every rank when one exits: none leaves before rank 0 has said it
        raise SystemExit(err.exit_code) from None
    except PrepInterrupted as err:
        typer.echo(f"{err}; run the same command again to continue", err=True)
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
