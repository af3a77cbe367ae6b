"""The runs behind mmtool's studies on the CPU datasets, as data: ``mmtool reproduce NAME`` for
``table20`` (paper 000, Tables 20-21), ``laziness``, ``methods``, ``probes`` and ``greedy`` (paper 002).

A study is a list of groups (a dataset, or ``<encoder>/<algorithm>`` for greedy); each group runs, per seed,
its steps in one seed folder: a step is (name, command, recipe files, overrides, inputs), where an input
names an earlier step of the same seed folder and the recipe key that receives its folder (``teachers``,
``run``, ``method.teacher_run``). :func:`build` makes a :class:`~mmtool.plans.graph.Plan` of it: one prep
node per (dataset, data settings, seed) — the synthetic sets are drawn from ``data.seed`` — then every step
with ``data.seed`` and ``train.seed`` set to the seed. Runs live in
``runs/<study>/<group>/seed<k>/<name>-<id12>/`` (``probes`` adds its probes to the ``methods`` runs and
reuses those); the table reads them by group, seed and name (:data:`~mmtool.analysis.tables.Located`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmtool.analysis.tables import Located
from mmtool.errors import UserError
from mmtool.plans.graph import Input, Node, Plan

SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Step:
    """One run per group and seed; ``inputs``: (recipe key, name of a step in the same seed folder)."""

    name: str
    command: str
    recipes: tuple[str, ...]
    overrides: tuple[str, ...] = ()
    inputs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Group:
    """A seed folder's worth of steps on one dataset; ``data``: data settings of prep and every step."""

    path: str
    dataset: str
    steps: tuple[Step, ...]
    data: tuple[str, ...] = ()


@dataclass(frozen=True)
class Study:
    groups: tuple[Group, ...]
    write: Callable[[Located, Path], str]  # writes the table (and its figures), returns its text
    runs: str  # the folder under runs/
    note: tuple[str, ...] = ()  # printed at the start (what the study leaves out, and where it is)


# --------------------------------------------------------------------------------------------- table20
def _table20_groups() -> tuple[Group, ...]:
    groups = []
    for name in ("synth-gamma", "synth-gamma+balanced", "synth-alpha", "synth-beta"):  # the slowest first
        dataset, _, option = name.partition("+")
        steps = (
            Step("unimodal", "pretrain-unimodal", ("recipes/table20/unimodal.yaml",), (f"data.name={dataset}",)),
            Step("multimodal", "train", ("recipes/table20/multimodal.yaml",), (f"data.name={dataset}",)),
        )
        groups.append(Group(name, dataset, steps, (f"data.{option}=true",) if option else ()))
    return tuple(groups)


# --------------------------------------------------------------------------------------------- laziness
def _laziness_groups() -> tuple[Group, ...]:
    def steps(ds: str) -> tuple[Step, ...]:
        r = f"recipes/{ds}"
        trained = (
            Step("unimodal", "pretrain-unimodal", (f"{r}/pretrain.yaml",)),
            Step("naive", "train", (f"{r}/naive.yaml",)),
            Step("umt", "train", (f"{r}/umt.yaml",), inputs=(("teachers", "unimodal"),)),
        )
        probe = (f"{r}/probe.yaml",)
        return trained + tuple(Step(f"probe-{s.name}", "probe", probe, inputs=(("run", s.name),)) for s in trained)

    return tuple(Group(ds, ds, steps(ds)) for ds in ("synth-lazy", "digits-colored"))


# --------------------------------------------------------------------------------------------- methods
# The method recipes are written for synth-gamma; recipes/_base/<set>.yaml, merged after them, moves each one
# to another set with that set's own settings (a dataset fragment).
METHOD_SETS = ("synth-lazy", "digits-colored", "digits-twoview")
PLAIN_METHODS = ("naive", "naive_linear", "naive_attention", "aux_ce", "gblending", "ogm_ge", "dropout",
                 "modality_dropout", "mla", "ume", "qmf", "rubi")  # fmt: skip
TEACHER_METHODS = ("umt", "umt_m1", "umt_m2", "finetune")  # they read the uni-modal models
# registered methods that `methods` leaves out, and where they are reproduced instead
METHODS_ELSEWHERE = {
    "balanced": "mmtool reproduce greedy (it needs MMTM fusion; paper 002 on colored-and-gray digits)",
    "unimodal": "mmtool pretrain-unimodal (one model per modality, the first stage of every table)",
}
PROBED = ("unimodal", *PLAIN_METHODS, *TEACHER_METHODS, "self_distill")


def _method_steps(ds: str) -> tuple[Step, ...]:
    def on(recipe: str) -> tuple[str, ...]:
        return (f"recipes/synth-gamma/{recipe}.yaml", f"recipes/_base/{ds}.yaml")

    teachers = (("teachers", "unimodal"),)
    return (
        Step("unimodal", "pretrain-unimodal", on("pretrain")),
        *(Step(m, "train", on(m)) for m in PLAIN_METHODS),
        *(Step(m, "train", on(m), inputs=teachers) for m in TEACHER_METHODS),
        Step("self_distill", "train", on("self_distill"), inputs=(("method.teacher_run", "naive"),)),
        Step("ume_ensemble", "ensemble", on("ensemble"), inputs=teachers),
    )


def _methods_groups() -> tuple[Group, ...]:
    return tuple(Group(ds, ds, _method_steps(ds)) for ds in METHOD_SETS)


def _probes_groups() -> tuple[Group, ...]:
    def probes(ds: str) -> tuple[Step, ...]:
        recipes = ("recipes/synth-gamma/probe.yaml", f"recipes/_base/{ds}.yaml")
        return tuple(Step(f"probe-{r}", "probe", recipes, inputs=(("run", r),)) for r in PROBED)

    return tuple(Group(ds, ds, (*_method_steps(ds), *probes(ds))) for ds in METHOD_SETS)


# --------------------------------------------------------------------------------------------- greedy
GREEDY_MODES = ("vanilla", "guided", "random")
GREEDY_RECIPES = {"mlp": "balanced.yaml", "cnn": "balanced_cnn.yaml"}


def _greedy_groups() -> tuple[Group, ...]:
    groups = []
    for encoder, recipe in GREEDY_RECIPES.items():
        for mode in GREEDY_MODES:
            steps = (
                Step("train", "train", (f"recipes/digits-colored/{recipe}",), (f"method.mode={mode}",)),
                Step("utilization", "utilization", ("recipes/digits-colored/utilization.yaml",),
                     inputs=(("run", "train"),)),  # fmt: skip
            )
            groups.append(Group(f"{encoder}/{mode}", "digits-colored", steps))
    return tuple(groups)


# --------------------------------------------------------------------------------------------- the studies
def _render(name: str) -> Callable[[Located, Path], str]:
    """The table writer of study ``name``: it writes the table (greedy: and a figure per encoder beside it)
    and returns its text. The table modules are imported when the table is written."""

    def write(runs: Located, out: Path) -> str:
        from mmtool.analysis import greedy, laziness, methods_table, probe_table, table20
        from mmtool.files import atomic_write_text

        if name == "greedy":
            return greedy.write(runs, out)
        renders = {
            "table20": lambda: table20.render(table20.collect(runs)),
            "laziness": lambda: laziness.render(laziness.collect(runs)),
            "methods": lambda: methods_table.render(*methods_table.collect(runs)),
            "probes": lambda: probe_table.render(*probe_table.collect(runs)),
        }
        text = renders[name]()
        atomic_write_text(out, text)
        return text

    return write


def studies() -> dict[str, Study]:
    elsewhere = tuple(f"not in this table: {m}, see {where}" for m, where in METHODS_ELSEWHERE.items())
    return {
        "table20": Study(_table20_groups(), _render("table20"), "table20"),
        "laziness": Study(_laziness_groups(), _render("laziness"), "laziness"),
        "methods": Study(_methods_groups(), _render("methods"), "methods", elsewhere),
        "probes": Study(_probes_groups(), _render("probes"), "methods"),
        "greedy": Study(_greedy_groups(), _render("greedy"), "greedy"),
    }


NAMES = ("table20", "laziness", "methods", "probes", "greedy")


@dataclass(frozen=True)
class Options:
    """What the command line asked for."""

    study: str
    seeds: tuple[int, ...] = SEEDS
    overrides: tuple[str, ...] = ()  # key=value for prep and every run
    groups: tuple[str, ...] = ()  # only these groups (default: all)
    out: Path | None = None  # the table (default results/<study>.md)
    runs: Path | None = None  # the study's runs folder (default runs/<study's folder>)

    @property
    def table(self) -> Path:
        return self.out if self.out is not None else Path("results") / f"{self.study}.md"

    @property
    def root(self) -> Path:
        return self.runs if self.runs is not None else Path("runs") / study(self.study).runs


def study(name: str) -> Study:
    found = studies()
    if name not in found:
        raise UserError(f"unknown study {name!r} (known: {', '.join(found)})")
    return found[name]


def build(opts: Options) -> Plan:
    """The plan of ``opts.study``: per group and seed, its dataset's prep (once per dataset, data settings
    and seed), then its steps (module docstring)."""
    spec = study(opts.study)
    root = opts.root
    plan = Plan(opts.study, root)
    for group in _chosen(spec, opts.groups, opts.study):
        for seed in opts.seeds:
            prep = _prep_node(plan, root, group, seed, opts.overrides)
            for step in group.steps:
                plan.add(_step_node(root, group, seed, step, prep, opts.overrides))
    return plan


def _chosen(spec: Study, names: tuple[str, ...], study_name: str) -> tuple[Group, ...]:
    known = [g.path for g in spec.groups]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"--groups {','.join(unknown)}: {study_name} has no such group "
                        f"(its groups: {', '.join(known)})")  # fmt: skip
    if not names:
        return spec.groups
    return tuple(g for g in spec.groups if g.path in names)


def _prep_node(plan: Plan, root: Path, group: Group, seed: int, overrides: tuple[str, ...]) -> str:
    what = "+".join((group.dataset, *(d.removeprefix("data.") for d in group.data)))
    key = f"prep/{what}/seed{seed}"
    if key not in plan.nodes:
        plan.add(Node(key=key, command="prep", args=(group.dataset,),
                      overrides=(f"data.seed={seed}", *group.data, *overrides),
                      folder=str(root / ".prep" / what / f"seed{seed}"), name="prep", estimate="seconds"))  # fmt: skip
    return key


def _step_node(root: Path, group: Group, seed: int, step: Step, prep: str, overrides: tuple[str, ...]) -> Node:
    where = f"{group.path}/seed{seed}"
    inputs = (Input("", prep), *(Input(key, f"{where}/{name}") for key, name in step.inputs))
    return Node(
        key=f"{where}/{step.name}",
        command=step.command,
        recipes=step.recipes,
        overrides=(f"data.seed={seed}", f"train.seed={seed}", *group.data, *step.overrides, *overrides),
        inputs=inputs,
        folder=str(root / where),
        name=step.name,
        estimate="a few min",
    )


def located(plan: Plan, paths: dict[str, Path]) -> dict[str, dict[int, dict[str, Path]]]:
    """group -> seed -> step name -> run folder, for the table (:data:`~mmtool.analysis.tables.Located`)."""
    out: dict[str, dict[int, dict[str, Path]]] = {}
    for node in plan.nodes.values():
        if node.is_prep or node.key not in paths:
            continue
        group, seed, name = node.key.rsplit("/", 2)
        out.setdefault(group, {}).setdefault(int(seed.removeprefix("seed")), {})[name] = paths[node.key]
    return out


def reproduce(opts: Options, executor, dry_run: bool = False) -> int:
    """Build the plan of ``opts.study``, run what did not finish before and write its table; the exit
    status (1 when a run failed: the table is then not written)."""
    from mmtool.plans.driver import carry_out, say

    spec = study(opts.study)
    for line in spec.note:
        say(f"{opts.study}: {line}")
    plan = build(opts)
    return carry_out(plan, executor, dry_run, opts.table, lambda paths: spec.write(located(plan, paths), opts.table))
