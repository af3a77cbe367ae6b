"""Rendering of paper 002's studies (the plans: :mod:`mmtool.analysis.tables_greedy_studies`): per figure a
Markdown table of our numbers beside what the paper states, the paper's claims checked on ours as printed lines,
and the figure in ``results/[smoke/]<target>.png``.

A run's point: d_util from its `utilization` run (``d_util`` on test, Def. 4.1), d_speed from its training
metrics at the epoch selected on validation (Def. 5.1, as :mod:`mmtool.analysis.greedy` reads it), the test
accuracy and R(f) (``sparsity_r``) from its results. Runs not (yet) found are left out; a figure without runs
says so.

Thresholds of ours where a claim is qualitative (printed with each verdict): a model "has high |d_util|" above
:data:`HIGH`; E[d_util] is "approximately 0" within :data:`ZERO`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from mmtool.analysis import tables_greedy_plots as figs
from mmtool.analysis import tables_greedy_studies as plan
from mmtool.analysis.paper_defs import SMOKE_BANNER, Located

HIGH = 0.1  # ours: the smallest |E[d_util]| the paper reports (ModelNet40)
ZERO = 0.05  # ours: half of it
Point = dict[str, float]


# --------------------------------------------------------------------------------------------- reading runs
def point(root: Path, runs: Located | None, dataset: str, name: str) -> Point | None:
    """d_util, d_speed, test accuracy and R(f) of run ``name`` on ``dataset`` (first seed); None until both it
    and its utilization run are finished."""
    from mmtool.analysis.greedy import _metrics
    from mmtool.analysis.paper_tables import run_dirs
    from mmtool.runs import is_finished, results_of

    train = [f for f in run_dirs(root, dataset, name, runs) if is_finished(f)]
    util = [f for f in run_dirs(root, dataset, f"utilization-{name}", runs) if is_finished(f)]
    if not train or not util:
        return None
    res = results_of(train[0])
    at_best = [r for r in _metrics(train[0]) if r.get("epoch") == res.get("best_epoch")]
    d_util = results_of(util[0]).get("d_util")  # null: a branch at 0% test accuracy (undefined)
    return {"d_util": math.nan if d_util is None else float(d_util),
            "d_speed": float(at_best[0].get("d_speed", math.nan)) if at_best else math.nan,
            "test": float(res["test_accuracy"]), "sparsity_r": float(res.get("sparsity_r", math.nan))}  # fmt: skip


def points(root: Path, runs: Located | None, dataset: str, names: list[str]) -> list[Point]:
    return [p for p in (point(root, runs, dataset, n) for n in names) if p is not None]


def finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def mean(values: list[float]) -> float:
    values = finite(values)
    return sum(values) / len(values) if values else math.nan


def pearson(xs: list[float], ys: list[float]) -> float:
    """Pearson's r over the pairs where both are finite; NaN for fewer than three or a constant series."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(x) and math.isfinite(y)]
    if len(pairs) < 3:
        return math.nan
    mx, my = mean([x for x, _ in pairs]), mean([y for _, y in pairs])
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    sxx, syy = sum((x - mx) ** 2 for x, _ in pairs), sum((y - my) ** 2 for _, y in pairs)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def _f(value: float, digits: int = 3, sign: str = "+") -> str:
    return "—" if not math.isfinite(value) else f"{value:{sign}.{digits}f}"


def _holds(ok: bool) -> str:
    return "holds" if ok else "does not hold"


def _out(name: str, smoke: bool) -> Path:
    return Path("results/smoke" if smoke else "results") / f"{name}.png"


def _head(smoke: bool, caption: str) -> list[str]:
    return [*([SMOKE_BANNER, ""] if smoke else []), f"# {caption}", ""]


# --------------------------------------------------------------------------------------------- Figs. 2 and 7
def sweep_points(root: Path, runs: Located | None, dataset: str, algorithm: str, setting: str) -> list[Point]:
    names = [plan.sweep_name(algorithm, setting, lr, c) for lr in plan.LRS[dataset]
             for c in range(plan.COPIES[dataset])]  # fmt: skip
    return points(root, runs, dataset, names)


def _sweep_row(dataset: str, setting: str, pts: list[Point]) -> str:
    du, ds = [p["d_util"] for p in pts], [p["d_speed"] for p in pts]
    paper = f"≈ {plan.PAPER_E_UTIL[dataset]:g} (abs)" if setting == "real" else "≈ 0"
    what = "distinct" if setting == "real" else f"duplicated ({plan.DUPLICATE[dataset]} twice)"
    return (f"| {dataset} | {what} | {len(pts)} | {paper} | {_f(mean(du))} | {_f(mean(ds))} | "
            f"{_f(mean([abs(v) for v in du]), sign='')} | {_f(mean([abs(v) for v in ds]), sign='')} |")  # fmt: skip


def sweep_claims(dataset: str, real: list[Point], dup: list[Point]) -> list[str]:
    """The three observations of Sec. 6.2 on one dataset's runs, each with its verdict on ours (runs whose d_util is
    undefined, a branch at 0% test accuracy, are left out and counted)."""
    undefined = sum(not math.isfinite(p["d_util"]) for p in real + dup)
    left_out = [f"{dataset}: {undefined} run(s) left out: d_util undefined (a branch at 0% test accuracy)."]
    real, dup = [p for p in real if math.isfinite(p["d_util"])], [p for p in dup if math.isfinite(p["d_util"])]
    if not real:
        return [f"{dataset}: no runs with distinct modalities and a defined d_util yet.", *left_out[:undefined]]
    du = [p["d_util"] for p in real]
    high = sum(abs(v) > HIGH for v in du)
    e_real, e_dup = abs(mean(du)), abs(mean([p["d_util"] for p in dup])) if dup else math.nan
    both = real + dup
    r = pearson([p["d_util"] for p in both], [p["d_speed"] for p in both])
    agree = [math.copysign(1, p["d_util"]) == math.copysign(1, p["d_speed"]) for p in both
             if math.isfinite(p["d_speed"])]  # fmt: skip
    lines = [f"{dataset}: \"many models have high |d_util|\": {high} of {len(du)} runs have |d_util| > {HIGH:g} "
             f"(ours): {_holds(2 * high >= len(du))} (at least half)."]  # fmt: skip
    if dup:
        lines.append(f"{dataset}: |E[d_util]| {e_real:.3f} with distinct modalities (paper ≈ "
                     f"{plan.PAPER_E_UTIL[dataset]:g}) and {e_dup:.3f} with the duplicated one (paper ≈ 0): "
                     f"\"E[d_util] ≈ 0 for identical inputs\" (within {ZERO:g}) {_holds(e_dup <= ZERO)}; "
                     f"distinct further from 0 than duplicated {_holds(e_real > e_dup)}.")  # fmt: skip
    share = f"{sum(agree)} of {len(agree)}" if agree else "no"
    lines.append(f"{dataset}: \"d_speed replicates d_util\": Pearson r {_f(r, 2)} over {len(both)} runs, same sign "
                 f"in {share} runs: {_holds(r > 0)} (r > 0).")  # fmt: skip
    return lines + left_out[:undefined]


def render_sweep(name: str, datasets: tuple[str, ...], caption: str) -> Callable:
    def render(root: Path, smoke: bool, runs: Located | None) -> str:
        lines = _head(smoke, caption)
        lines += ["| Dataset | modalities | runs | E[d_util]: paper | E[d_util] | E[d_speed] | mean abs(d_util) | "
                  "mean abs(d_speed) |", "|---" * 8 + "|"]  # fmt: skip
        got = {(d, s): sweep_points(root, runs, d, "vanilla", s) for d in datasets for s in plan.SETTINGS}
        lines += [_sweep_row(d, s, got[d, s]) for d in datasets for s in plan.SETTINGS]
        lines.append("")
        for d in datasets:
            lines += sweep_claims(d, got[d, "real"], got[d, "dup"])
        panels = {f"{d} {k}": {("distinct" if s == "real" else "duplicated"): [p[k] for p in got[d, s]]
                               for s in plan.SETTINGS} for d in datasets for k in ("d_util", "d_speed")}  # fmt: skip
        if any(got.values()):
            lines.append(f"Figure: {figs.histograms(panels, _out(name, smoke), caption.split('.')[0])}")
        lines += ["", *_sweep_notes(datasets)]
        return "\n".join(lines) + "\n"

    return render


def _sweep_notes(datasets: tuple[str, ...]) -> list[str]:
    rates = "; ".join(f"{d}: {len(plan.LRS[d])} learning rates × {plan.COPIES[d]} copies" for d in datasets)
    return [f"Ours: vanilla MMTM training (recipes/<set>/balanced_vanilla.yaml: d_speed logged, no re-balancing) "
            f"and its utilization run; {rates}, each with two distinct modalities and with one duplicated "
            "(data.duplicate). d_util on test; d_speed at the epoch selected on validation. E[.] over every run "
            "found; the paper states |E[d_util]| only.",
            "How the runs are made: docs/tables.md; rates and choices: mmtool/analysis/tables_greedy_studies.py."]


# --------------------------------------------------------------------------------------------- RENDER
def _lazy(module: str, name: str) -> Callable:
    def render(root: Path, smoke: bool, runs: Located | None) -> str:
        import importlib

        return getattr(importlib.import_module(f"mmtool.analysis.{module}"), name)(root, smoke, runs)

    return render


RENDER = {
    "greedy-fig2": render_sweep("greedy-fig2", plan.TWO, "Paper 002, Figure 2. Histograms and estimated density "
                                "functions of d_util and d_speed of models trained using different modalities or "
                                "duplicated single modality in (a) ModelNet40 or (b) NVGesture."),  # fmt: skip
    "greedy-fig7": render_sweep("greedy-fig7", ("colored-mnist",), "Paper 002, Figure 7. Histograms and "
                                "estimated density functions of d_util and d_speed on Colored-and-gray-MNIST, "
                                "distinct or duplicated modalities."),  # fmt: skip
    **{f"greedy-fig{n}": _lazy("tables_greedy_render2", f"render_fig{n}") for n in (3, 4, 5, 8, 9)},
}
