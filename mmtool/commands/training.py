"""`mmtool pretrain-unimodal` and `mmtool train`: the recipe a command line names (a method, ``-r``/``-d``, or
``--from-decision``), checked before any run folder exists, then a new run or ``--resume`` of one."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mmtool.commands.common import (
    DatasetOpt,
    JsonOpt,
    Overrides,
    RecipeOpt,
    ResumeOpt,
    RunDirOpt,
    TeachersOpt,
    _expect_stage,
    _given,
    _load,
    _resume,
    _start,
)
from mmtool.errors import UserError


def pretrain_unimodal(
    recipe: RecipeOpt = None,
    dataset: DatasetOpt = None,
    overrides: Overrides = None,
    teachers: TeachersOpt = None,
    run_dir: RunDirOpt = None,
    resume: ResumeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train one model per modality, with the same encoder as in fusion; with method umt and --teachers,
    each modality's model is distilled from that modality's teacher (CE + weight x feature MSE).

    Example: mmtool pretrain-unimodal --dataset synth-gamma train.seed=1
    """
    from mmtool.recipe_files import check_overrides

    check_overrides(overrides)
    if resume is not None:
        wanted = None
        if recipe or dataset is not None:  # the recipe named must be the run's own
            wanted = _load(recipe, dataset, "pretrain.yaml", overrides, teachers=teachers)
            _expect_stage(wanted, "pretrain")
        elif teachers is not None:
            overrides = [f"teachers={teachers}", *(overrides or [])]
        return _resume(resume, "pretrain", wanted, _given(recipe, dataset), overrides, None, run_dir, as_json)
    cfg = _load(recipe, dataset, "pretrain.yaml", overrides, teachers=teachers)
    _expect_stage(cfg, "pretrain")
    check_one_modality_method(cfg)
    _start("pretrain", cfg, run_dir, as_json)


def check_one_modality_method(cfg) -> None:
    """Before any run folder exists: a method that trains a one-modality model, teachers exactly when it
    distils, and no ``method.modalities`` (each modality's model has its own teacher)."""
    from mmtool.methods.params import ONE_MODALITY_METHODS
    from mmtool.runs import require_run

    name = cfg.method.name
    if name not in ONE_MODALITY_METHODS:
        raise UserError(
            f"{cfg.source}: key 'method.name': {name!r} needs a multi-modal model; pretrain-unimodal trains one "
            f"model per modality with {', '.join(ONE_MODALITY_METHODS)}"
        )
    if name == "umt":
        require_run(cfg.teachers, "pretrain-unimodal with method 'umt'", "teachers")
        if cfg.method.params.get("modalities"):
            raise UserError(
                f"{cfg.source}: key 'method.modalities': pretrain-unimodal distils every model from its own "
                "modality's teacher; choose the models with the key 'modalities'"
            )
    elif cfg.teachers is not None:
        raise UserError(f"{cfg.source}: key 'teachers': method {name!r} distils nothing; use method.name=umt")


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
    check_two_modality_only(cfg)
    _start("train", cfg, run_dir, as_json)


def check_two_modality_only(cfg) -> None:
    """Before any run folder exists: a method option defined for exactly two modalities (``TWO_MODALITY_OPTIONS``:
    method ``balanced``'s ``bug_compatible``) on a recipe that trains another number of them is refused in one
    line. The dataset is read only when the recipe sets such an option and names no ``modalities``."""
    from mmtool.methods.params import TWO_MODALITY_OPTIONS

    hits = [(f"method {m!r} with method.{o}", why) for (m, o), why in TWO_MODALITY_OPTIONS.items()
            if cfg.method.name == m and cfg.method.params.get(o)]  # fmt: skip
    if not hits:
        return
    what, why = hits[0]
    if cfg.modalities:
        modalities = list(cfg.modalities)
    else:
        from mmtool.data import load_dataset

        modalities = list(load_dataset(cfg.data).modalities)
    if len(modalities) != 2:
        raise UserError(
            f"{cfg.source}: {what} is defined for two modalities only ({why}); this recipe trains "
            f"{len(modalities)}, {modalities}: choose two with modalities=[a,b]"
        )


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
