"""The runs behind each of paper 000's tables (:mod:`mmtool.analysis.paper_tables`), as data.

A table names its datasets and, per dataset and seed, its runs: a run is (name, command, recipe, inputs),
where an input names another run of the same seed folder and the recipe key that receives its folder
(``teachers`` for the uni-modal models, ``run`` for what a probe reads, ``method.teacher_run`` for
self-distillation). :func:`build` turns that into a :class:`~mmtool.plans.graph.Plan`: per dataset a prep
node (with ``--smoke`` the fixture copy is written first), then each run on ``recipes/<dataset>/<recipe>.yaml``
(and ``recipes/_base/smoke/<dataset>.yaml`` merged last with ``--smoke``) with ``data.seed`` and
``train.seed`` set to the seed. Runs live in ``runs/paper/<dataset>/seed<k>/<name>-<id12>/``
(``runs/smoke/paper/...`` with ``--smoke``); the table goes to ``results/tableN.md`` (``results/smoke/``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from mmtool.analysis.paper_defs import Run, TablePlan
from mmtool.analysis.paper_extra import EXTRA
from mmtool.errors import UserError
from mmtool.plans.graph import Input, Node, Plan

UNIMODAL = Run("unimodal", "pretrain-unimodal", "pretrain")
DECIDE = Run("decide", "decide", "decide", (("teachers", "unimodal"),))
# which earlier run a training recipe reads: UMT distils the uni-modal models, self-distillation the naive run
TEACHER = {
    "umt": (("teachers", "unimodal"),),
    "ume": (("teachers", "unimodal"),),
    "self_distill": (("method.teacher_run", "naive"),),
    "self_distill_feature": (("method.teacher_run", "naive"),),
}
JOINT = ("naive", "naive_mlp", "naive_attention", "aux_ce", "gblending", "ogm_ge")
PROBED_T1 = ("naive", "naive_mlp", "naive_attention", "gblending", "ogm_ge")


def train(*names: str) -> tuple[Run, ...]:
    return tuple(Run(n, "train", n, TEACHER.get(n, ())) for n in names)


def probe(*names: str) -> tuple[Run, ...]:
    return tuple(Run(f"probe-{n}", "probe", "probe", (("run", n),)) for n in names)


UME_ENSEMBLE = Run("ume", "ensemble", "ensemble", (("teachers", "unimodal"), ("run", "naive")))
VGG_K400 = ("vggsound", "kinetics400")
TABLES: dict[str, TablePlan] = {
    "table1": TablePlan(("vggsound", "ucf101"), (UNIMODAL, *train(*PROBED_T1), *probe("unimodal", *PROBED_T1)), None),
    "table3": TablePlan((*VGG_K400, "ucf101", "modelnet40"), (UNIMODAL, DECIDE), "ucf101"),
    "table4": TablePlan(("ucf101",), (UNIMODAL, DECIDE), "ucf101"),
    "table5": TablePlan(VGG_K400, (UNIMODAL, *train(*JOINT, "umt")), "vggsound", all_seeds=True),
    "table7": TablePlan(VGG_K400, (UNIMODAL, *train("naive", "umt"), *probe("unimodal", "naive", "umt")), "vggsound"),
    "table8": TablePlan(
        ("vggsound",), (UNIMODAL, *train("naive", "self_distill", "self_distill_feature", "umt")), "vggsound", True
    ),
    "table9": TablePlan(("ucf101",), (UNIMODAL, *train(*JOINT), UME_ENSEMBLE), "ucf101"),
    "table10": TablePlan(
        ("modelnet40",), (UNIMODAL, *train("ume", "mmtm", "rubi", "balanced_random", "balanced")), "modelnet40", True
    ),
}
# Tables declared in modules of their own (their TABLES dicts) join these.
for _module in EXTRA:
    TABLES.update(_module.TABLES)

# The prep settings read from the recipes the stages load, so prep builds the cache they look for.
PREP_KEYS = ("store_size", "clip_frames", "audio_seconds", "sample_rate", "flow_stack", "rgb_source", "front_view",
             "rear_view", "side_view", "tokenizer", "max_tokens", "merge_excited", "classes", "max_frames",
             "color_var", "train_correlation", "test_correlation", "color_seed")  # fmt: skip
# Rough durations per run (docs/tables.md): one A100/H100-class GPU, 8 loader workers; SMOKE on one CPU thread.
ESTIMATES = {"ucf101": "15-30 min", "vggsound": "10-20 GPU-h", "kinetics400": "10-20 GPU-h", "modelnet40": "5-15 min",
             "cremad": "~1 GPU-h", "iemocap": "~1 GPU-h", "food101": "5-10 GPU-h", "mvsa": "~1 GPU-h",
             "kinetics-sounds": "~2 GPU-h", "colored-mnist": "~10 GPU-min", "nvgesture": "~2 GPU-h"}  # fmt: skip
# SMOKE prep options: the CREMA-D fixture holds 24 of the 7,442 clips the published lists name (prep reads the lists)
# and IEMOCAP's fixture holds broken utterances on purpose (4 of about 30) for prep's tests
SMOKE_PREP_ARGS = {"cremad": ("--max-missing-frac", "1"), "iemocap": ("--max-skip-frac", "0.5"),
                   "food101": ("--max-skip-frac", "0.5"), "mvsa": ("--max-skip-frac", "0.5")}  # fmt: skip
LIGHT = {"probe": "a few min", "decide": "a few min", "ensemble": "a few min"}  # frozen features, no training


@dataclass(frozen=True)
class Options:
    """What the command line asked for."""

    table: str
    data: dict[str, str]  # dataset -> raw folder
    seeds: tuple[int, ...]
    smoke: bool = False
    recipes: tuple[tuple[str, str], ...] = ()  # (dataset, fragment): merged last into that dataset's runs and prep
    quick: bool = False  # the real data and recipes, but only the runs SMOKE runs (a sweep's few points), one seed

    @property
    def root(self) -> Path:
        return Path("runs/smoke/paper" if self.smoke else "runs/paper")

    @property
    def out(self) -> Path:
        folder = "results/smoke" if self.smoke else "results/quick" if self.quick else "results"
        return Path(folder) / f"{self.table}.md"


def table_plan(name: str) -> TablePlan:
    if name not in TABLES:
        raise UserError(f"unknown table {name!r} (known: {', '.join(TABLES)})")
    return TABLES[name]


def parse_data(name: str, given: list[str]) -> dict[str, str]:
    """``--data DIR`` (the table's primary dataset) and ``--data NAME=DIR``; each dataset once."""
    table = table_plan(name)
    data: dict[str, str] = {}
    for item in given:
        dataset, _, folder = item.rpartition("=") if "=" in item else (table.primary, "", item)
        if dataset is None:
            raise UserError(f"--data {item}: {name} spans {' and '.join(table.datasets)}; give NAME=DIR")
        if dataset not in table.datasets:
            known = ", ".join(table.datasets)
            raise UserError(f"--data {item}: {name} has no {dataset} column (its datasets: {known})")
        if dataset in data:
            raise UserError(f"--data names {dataset} twice ({data[dataset]} and {folder})")
        data[dataset] = folder
    return data


def parse_seeds(text: str) -> tuple[int, ...]:
    parts = text.replace(",", " ").split()
    if not parts or not all(p.isdigit() for p in parts):
        raise UserError(f"--seeds {text!r}: expected seeds like 0,1,2")
    return tuple(int(p) for p in parts)


def build(opts: Options) -> Plan:
    """The plan of ``opts.table``: prep, then each run per dataset and seed (module docstring)."""
    table = table_plan(opts.table)
    given = tuple(d for d in table.datasets if d in opts.data)
    datasets = (table.smoke_datasets or table.datasets) if opts.smoke else given
    if not datasets:
        raise UserError(f"{opts.table}: no data given; pass --data DIR{_data_hint(opts.table)}, or --smoke")
    few = opts.smoke or opts.quick
    seeds = opts.seeds if (table.all_seeds and not few) else opts.seeds[:1]
    runs = [r for r in table.runs if not few or table.smoke is None or r.name in table.smoke]
    plan = Plan(opts.table, opts.root)
    for dataset in datasets:
        prep = plan.add(_prep_node(opts, dataset))
        for seed in seeds:
            for run in (r for r in runs if (dataset, r.name) not in table.skip):
                plan.add(_run_node(opts, dataset, seed, run, prep.key))
    return plan


def _data_hint(table: str) -> str:
    names = TABLES[table].datasets
    return f" or --data NAME=DIR (NAME: {', '.join(names)})"


def _fragments(opts: Options, dataset: str, recipe: str) -> tuple[str, ...]:
    """The recipe files of one run, merged in this order: the run's recipe, the table's fragments of the dataset,
    ``--recipe``'s, and with ``--smoke`` the SMOKE fragment and the table's SMOKE fragments of the dataset."""
    table = table_plan(opts.table)
    files = (f"recipes/{dataset}/{recipe}.yaml", *(f for d, f in table.fragments if d == dataset),
             *(f for d, f in opts.recipes if d == dataset))  # fmt: skip
    if not opts.smoke:
        return files
    return (*files, f"recipes/_base/smoke/{dataset}.yaml", *(f for d, f in table.smoke_fragments if d == dataset))


def parse_recipes(name: str, given: list[str]) -> tuple[tuple[str, str], ...]:
    """``--recipe NAME=FILE`` (e.g. kinetics400=recipes/_base/kinetics400_r3d18.yaml): a fragment merged last
    into every run of dataset NAME (and its prep), before the SMOKE fragment; part of each run's identity."""
    table, out = table_plan(name), []
    for item in given:
        dataset, _, fragment = item.partition("=")
        if not fragment or dataset not in table.datasets:
            raise UserError(f"--recipe {item}: expected NAME=FILE with NAME one of {', '.join(table.datasets)}")
        if not Path(fragment).is_file():
            raise UserError(f"--recipe {item}: no such file {fragment}")
        out.append((dataset, fragment))
    return tuple(out)


def _prep_node(opts: Options, dataset: str) -> Node:
    """Prep of ``dataset`` with the data settings of its recipes (``--smoke``: from the fixture copy)."""
    from mmtool.config import load_recipe

    data = load_recipe([Path(f) for f in _fragments(opts, dataset, "pretrain")]).data
    raw = f"data/smoke/raw/{dataset}" if opts.smoke else opts.data[dataset]
    workers = 0 if opts.smoke else min(8, os.cpu_count() or 1)
    setup = (("python", "-m", "tests.fixtures.smoke", dataset, raw),) if opts.smoke else ()
    return Node(
        key=f"{dataset}/prep",
        command="prep",
        args=(dataset, "--raw", raw, "--workers", str(workers), "--root", data.root,
              *(SMOKE_PREP_ARGS.get(dataset, ()) if opts.smoke else ())),
        overrides=tuple(f"data.{k}={_value(v)}" for k, v in data.flat().items() if k in PREP_KEYS),  # the dataset's own
        setup=tuple((_python(), *argv[1:]) for argv in setup),
        folder=str(opts.root / dataset),
        name="prep",
        estimate="seconds" if opts.smoke else "minutes (cached) to hours (first time)",
    )


def _value(value: object) -> str:
    """An override's value as YAML reads it back: a list (Kinetics-Sounds' class names) as a JSON list."""
    if value is None:
        return "null"  # YAML's null (str(None) would be the text "None")
    return json.dumps(list(value)) if isinstance(value, (list, tuple)) else str(value)


def _run_node(opts: Options, dataset: str, seed: int, run: Run, prep: str) -> Node:
    where = f"{dataset}/seed{seed}"
    inputs = (Input("", prep), *(Input(key, f"{where}/{name}") for key, name in run.inputs))
    light = LIGHT.get(run.command)
    return Node(
        key=f"{where}/{run.name}",
        command=run.command,
        recipes=_fragments(opts, dataset, run.recipe),
        overrides=(*_seeds(seed, run.overrides), *run.overrides),
        inputs=inputs,
        folder=str(opts.root / where),
        name=run.name,
        estimate="~10 s" if opts.smoke else (light or ESTIMATES[dataset]),
    )


def _seeds(seed: int, overrides: tuple[str, ...]) -> tuple[str, ...]:
    """``data.seed`` and ``train.seed`` set to the seed folder's, but where a run sets one itself (the repeats of one
    setting in a seed folder: paper 002's sweeps, train.seed = the copy)."""
    own = {o.partition("=")[0] for o in overrides}
    return tuple(f"{key}={seed}" for key in ("data.seed", "train.seed") if key not in own)


def _python() -> str:
    import sys

    return sys.executable


def located(plan: Plan, paths: dict[str, Path]) -> dict[tuple[str, str], list[Path]]:
    """(dataset, run name) -> the finished run folders, one per seed, for the table builder."""
    out: dict[tuple[str, str], list[Path]] = {}
    for node in plan.nodes.values():
        if not node.is_prep and node.key in paths:
            out.setdefault((node.key.split("/")[0], node.name), []).append(paths[node.key])
    return out


def reproduce(opts: Options, executor, dry_run: bool = False) -> int:
    """Build the plan of ``opts.table``, run what did not finish before and write the table; the exit status
    (1 when a run failed: the table is then not written)."""
    from mmtool.plans.driver import carry_out

    plan = build(opts)
    return carry_out(plan, executor, dry_run, opts.out, lambda paths: _write(opts, plan, paths))


def _write(opts: Options, plan: Plan, paths: dict[str, Path]) -> str:
    from mmtool.analysis import paper_tables
    from mmtool.files import atomic_write_text

    text = paper_tables.render(opts.table, opts.root, opts.smoke, located(plan, paths))
    atomic_write_text(opts.out, text)
    return text
