"""Paper 002's studies (Wu et al. 2022, Sec. 6.2-6.4 and App. B) as `mmtool reproduce` targets: ``greedy-fig2``
and ``greedy-fig7`` (learning-rate sweeps, two distinct or two identical modalities), ``greedy-fig3``,
``greedy-fig4``, ``greedy-fig8`` (L1 strength, one set of runs), ``greedy-fig5`` (vanilla, guided, random) and
``greedy-fig9`` (Q and alpha of balanced learning).

Every run is vanilla, guided or random training of the MMTM model (``recipes/<set>/balanced_vanilla.yaml``,
``balanced.yaml``, ``balanced_random.yaml``: vanilla logs d_speed, Def. 5.1, without re-balancing) followed by a
`utilization` run of it (``utilization-<run>``: d_util, Def. 4.1, on test). A sweep's value is a
``Run.overrides`` entry; the repeats ("copies") of one setting are runs with ``train.seed`` = 0, 1, ... on the
plan's seed folder (its ``data.seed``), so one seed folder holds a whole figure.

What the paper states (Sec. 6.2-6.4), and our choices where it is silent (also in the notes under each figure):

* Fig. 7, Colored-and-gray MNIST: "20 learning rates at random from the interval [1e-5, 1] on a logarithmic
  scale", 4 runs each, SGD momentum 0.9, batch 128 (the dataset's recipe). Fig. 2, ModelNet40: "nine learning
  rates from 1e-3 to 1", 3 copies, SGD without momentum, batch 8 -- ours: log-spaced (the paper does not say how
  the nine are spread); NVGesture: "20 learning rates [drawn] from the interval [1e-4, 10^-1.5] on a logarithmic
  scale", 3 each, batch 4, SGD momentum 0.9. The random rates were drawn once,
  ``np.random.default_rng(2022)``, ``10 ** uniform(lo, hi, 20)``, colored first, sorted, 4 significant digits,
  and are written below.
* Duplicated modality (``data.duplicate``, :mod:`mmtool.data.duplicate`): gray twice on Colored-and-gray MNIST
  (the paper's example), the front view twice on ModelNet40, RGB twice on NVGesture (ours: the paper does not say
  which).
* Figs. 3, 4, 8: ModelNet40 front and rear, "ten values of lambda from an interval [1e-9, 1e-3]" (ours:
  log-spaced), lr 0.1, SGD without momentum, batch 8 (the recipe), three repeats; ``optim.l1`` = lambda.
* Fig. 5: the learning-rate sweeps of Sec. 6.2 ("as described in §6.2") with distinct modalities, trained
  vanilla (Fig. 2's runs), guided and random; alpha 0.01 and Q 5 on ModelNet40, alpha 0.1 and Q 5 on NVGesture
  (Sec. 6.4; the recipes' values).
* Fig. 9: ModelNet40, lr 0.1, guided: Q in {1, 5, 10, 20, 50} with alpha 0.01 (Fig. 9a); Fig. 9b's alphas are
  not in the text: ours are {0.001, 0.003, 0.01, 0.03, 0.1} with Q 5 (around the paper's 0.01 and 0.1); three
  repeats each (ours: as Table 1's "three times").
* A run whose training loss stops being finite (the top of the sweeps) keeps the model selected on validation
  before it (``train.on_diverge: stop``; its results say ``diverged_at_epoch``) instead of failing the figure.
* SMOKE (``--smoke``): a few points of each figure on the fixture copies (:data:`SMOKE_LRS` and the others).
"""

from __future__ import annotations

from mmtool.analysis.paper_defs import Run, TablePlan

VANILLA, GUIDED, RANDOM = "balanced_vanilla", "balanced", "balanced_random"  # recipes in recipes/<set>/
# a sweep reaches rates where some models diverge: such a run keeps the model selected before (results say when)
DIVERGE = "train.on_diverge=stop"
ALGORITHMS = {"vanilla": VANILLA, "guided": GUIDED, "random": RANDOM}
# the learning rates of Sec. 6.2 (module docstring: how they were drawn)
LRS: dict[str, tuple[float, ...]] = {
    "colored-mnist": (1.642e-05, 2.011e-05, 2.917e-05, 3.584e-05, 0.0001628, 0.0001726, 0.0001927, 0.0004075,
                      0.001181, 0.00622, 0.01145, 0.02019, 0.04099, 0.05967, 0.2863, 0.4389, 0.5377, 0.7014,
                      0.8773, 0.9559),  # fmt: skip
    "modelnet40": (0.001, 0.002371, 0.005623, 0.01334, 0.03162, 0.07499, 0.1778, 0.4217, 1.0),  # logspace(-3, 0, 9)
    "nvgesture": (0.0001003, 0.000135, 0.0001431, 0.0001566, 0.0001616, 0.0001623, 0.0002218, 0.0002274,
                  0.000299, 0.0003259, 0.0003533, 0.0004203, 0.000523, 0.0005452, 0.0006371, 0.0007214,
                  0.002932, 0.004224, 0.02301, 0.02894),  # fmt: skip
}
COPIES = {"colored-mnist": 4, "modelnet40": 3, "nvgesture": 3}  # Sec. 6.2: models per learning rate
DUPLICATE = {"colored-mnist": "gray", "modelnet40": "front", "nvgesture": "rgb"}  # the modality fed twice
PAPER_E_UTIL = {"colored-mnist": 0.3, "modelnet40": 0.1, "nvgesture": 0.4}  # Sec. 6.2: |E[d_util]|, distinct
SMOKE_LRS = {"colored-mnist": (0.01145, 0.04099), "modelnet40": (0.01334,), "nvgesture": (0.002932,)}
SETTINGS = ("real", "dup")  # two distinct modalities / one duplicated
# (NVGesture's fixture's 4 test gestures often leave a branch at 0% in SMOKE, where d_util is undefined: null, left out)
TWO = ("modelnet40", "nvgesture")
SMOKE_SETS: dict[tuple[str, ...], tuple[str, ...]] = {}  # SMOKE runs every dataset of a figure

LAMBDAS = (1e-09, 4.642e-09, 2.154e-08, 1e-07, 4.642e-07, 2.154e-06, 1e-05, 4.642e-05, 0.0002154, 0.001)
L1_COPIES = 3
SMOKE_LAMBDAS = (1e-09, 0.001)

WINDOWS = (1, 5, 10, 20, 50)  # Fig. 9a, alpha 0.01
ALPHAS = (0.001, 0.003, 0.01, 0.03, 0.1)  # Fig. 9b, Q 5: ours (module docstring)
BASE_Q, BASE_ALPHA = 5, 0.01  # ModelNet40's guided recipe (Sec. 6.4)
SENS_COPIES = 3
SMOKE_SENS = (("window", 1), ("window", 5), ("alpha", 0.1))


def util(run: Run) -> Run:
    """The `utilization` run of ``run`` (its data settings: a duplicated modality stays duplicated)."""
    data = tuple(o for o in run.overrides if o.startswith("data."))
    return Run(f"utilization-{run.name}", "utilization", "utilization", (("run", run.name),), data)


def with_util(*runs: Run) -> tuple[Run, ...]:
    return tuple(r for run in runs for r in (run, util(run)))


# --------------------------------------------------------------------------------------------- Figs. 2, 5, 7
def sweep_name(algorithm: str, setting: str, lr: float, copy: int) -> str:
    """``vanilla-real-lr1.334e-02-c0``: the run's algorithm, modalities, learning rate and copy."""
    return f"{algorithm}-{setting}-lr{lr:.3e}-c{copy}"


def sweep_run(dataset: str, algorithm: str, setting: str, lr: float, copy: int) -> Run:
    overrides = (f"optim.lr={lr}", f"train.seed={copy}", DIVERGE)
    if setting == "dup":
        overrides = (f"data.duplicate={DUPLICATE[dataset]}", *overrides)
    return Run(sweep_name(algorithm, setting, lr, copy), "train", ALGORITHMS[algorithm], (), overrides)


def sweep_runs(dataset: str, algorithms: tuple[str, ...], settings: tuple[str, ...],
               lrs: tuple[float, ...] | None = None, copies: int | None = None) -> tuple[Run, ...]:  # fmt: skip
    """Every (algorithm, setting, learning rate, copy) of ``dataset``'s sweep, each with its utilization run."""
    runs = [sweep_run(dataset, a, s, lr, c) for a in algorithms for s in settings
            for lr in (lrs or LRS[dataset]) for c in range(COPIES[dataset] if copies is None else copies)]  # fmt: skip
    return with_util(*runs)


def _sweep_plan(datasets: tuple[str, ...], algorithms: tuple[str, ...], settings: tuple[str, ...]) -> TablePlan:
    """One plan over ``datasets``: each dataset's runs, the others' skipped there (their rates differ)."""
    own = {d: sweep_runs(d, algorithms, settings) for d in datasets}
    smoke = {d: sweep_runs(d, algorithms, settings, SMOKE_LRS[d], 1) for d in datasets}
    runs = tuple(r for d in datasets for r in own[d])
    skip = tuple((d, r.name) for d in datasets for r in runs if r not in own[d])
    return TablePlan(datasets, runs, datasets[0], skip=skip, smoke_datasets=SMOKE_SETS.get(datasets),
                     smoke=tuple(dict.fromkeys(r.name for d in datasets for r in smoke[d])))  # fmt: skip


# --------------------------------------------------------------------------------------------- Figs. 3, 4, 8
def l1_name(lam: float, copy: int) -> str:
    return f"l1-{lam:.3e}-c{copy}"


def l1_runs(lambdas: tuple[float, ...] = LAMBDAS, copies: int = L1_COPIES) -> tuple[Run, ...]:
    """Vanilla training with L' = L + lambda ||theta||_1 per lambda and copy, each with its utilization run."""
    runs = [Run(l1_name(lam, c), "train", VANILLA, (), (f"optim.l1={lam}", f"train.seed={c}", DIVERGE))
            for lam in lambdas for c in range(copies)]  # fmt: skip
    return with_util(*runs)


# --------------------------------------------------------------------------------------------- Fig. 9
def sens_name(what: str, value: float, copy: int) -> str:
    """``guided-c0`` at the recipe's Q 5 and alpha 0.01 (a point of both panels), else ``guided-q10-c0``,
    ``guided-alpha0.001-c0``."""
    if (what == "window" and value == BASE_Q) or (what == "alpha" and value == BASE_ALPHA):
        return f"guided-c{copy}"
    return f"guided-q{value}-c{copy}" if what == "window" else f"guided-alpha{value:g}-c{copy}"


def sens_runs(points: tuple[tuple[str, float], ...] | None = None, copies: int = SENS_COPIES) -> tuple[Run, ...]:
    """Guided training per Q (alpha 0.01) and per alpha (Q 5) and copy, each with its utilization run."""
    points = points or (*(("window", q) for q in WINDOWS), *(("alpha", a) for a in ALPHAS))
    runs: dict[str, Run] = {}
    for what, value in points:
        for c in range(copies):
            name = sens_name(what, value, c)
            value_over = () if name == f"guided-c{c}" else (f"method.{what}={value}",)  # the recipe's own: none
            runs.setdefault(name, Run(name, "train", GUIDED, (), (*value_over, f"train.seed={c}", DIVERGE)))
    return with_util(*runs.values())


_L1 = TablePlan(("modelnet40",), l1_runs(), "modelnet40", smoke=tuple(r.name for r in l1_runs(SMOKE_LAMBDAS, 1)))
TABLES: dict[str, TablePlan] = {
    "greedy-fig2": _sweep_plan(TWO, ("vanilla",), SETTINGS),
    "greedy-fig7": _sweep_plan(("colored-mnist",), ("vanilla",), SETTINGS),
    "greedy-fig3": _L1,
    "greedy-fig4": _L1,
    "greedy-fig8": _L1,
    "greedy-fig5": _sweep_plan(TWO, tuple(ALGORITHMS), ("real",)),
    "greedy-fig9": TablePlan(("modelnet40",), sens_runs(), "modelnet40",
                             smoke=tuple(r.name for r in sens_runs(SMOKE_SENS, 1))),  # fmt: skip
}


def _render():
    from mmtool.analysis import tables_greedy_render as r

    return r.RENDER


RENDER = {name: (lambda root, smoke, runs, _n=name: _render()[_n](root, smoke, runs)) for name in TABLES}
