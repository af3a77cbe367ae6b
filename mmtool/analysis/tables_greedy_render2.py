"""Rendering of paper 002's Figs. 3, 4, 8 (L1 strength), 5 (vanilla, guided, random) and 9 (Q and alpha): the
tables, claims and figures as :mod:`mmtool.analysis.tables_greedy_render` does for Figs. 2 and 7."""

from __future__ import annotations

import math
from pathlib import Path

from mmtool.analysis import tables_greedy_plots as figs
from mmtool.analysis import tables_greedy_studies as plan
from mmtool.analysis.paper_defs import Located
from mmtool.analysis.tables import mean_std
from mmtool.analysis.tables_greedy_render import Point, _f, _head, _holds, _out, finite, mean, pearson, points

DATASET = "modelnet40"
ABS = ("abs(d_util)", "abs(d_speed)")


def _abs(p: Point, key: str) -> float:
    return abs(p[key.removeprefix("abs(").removesuffix(")")])


def _ms(values: list[float], digits: int = 3) -> str:
    return mean_std(finite(values), digits=digits) if finite(values) else "—"


# --------------------------------------------------------------------------------------------- Figs. 3, 4, 8
def l1_points(root: Path, runs: Located | None) -> dict[float, list[Point]]:
    return {lam: points(root, runs, DATASET, [plan.l1_name(lam, c) for c in range(plan.L1_COPIES)])
            for lam in plan.LAMBDAS}  # fmt: skip


def _l1_table(got: dict[float, list[Point]]) -> list[str]:
    lines = ["| lambda | runs | R(f) | abs(d_util) | abs(d_speed) | test accuracy |", "|---" * 6 + "|"]
    for lam, pts in got.items():
        lines.append(f"| {lam:.2e} | {len(pts)} | {_ms([p['sparsity_r'] for p in pts], 4)} | "
                     f"{_ms([_abs(p, ABS[0]) for p in pts])} | {_ms([_abs(p, ABS[1]) for p in pts])} | "
                     f"{_ms([p['test'] for p in pts], 1)} |")  # fmt: skip
    return lines


def l1_claims(got: dict[float, list[Point]]) -> list[str]:
    """Fig. 3: R(f) grows with lambda; Fig. 4: |d_util|, |d_speed| grow with R(f); Fig. 8: above 1e-5 they grow."""
    pts = [(lam, p) for lam, ps in got.items() for p in ps]
    if not pts:
        return ["No runs yet."]
    logs, rs = [math.log10(lam) for lam, _ in pts], [p["sparsity_r"] for _, p in pts]
    r_lam = pearson(logs, rs)
    lines = [f"Fig. 3, \"the larger the lambda, the higher the R(f)\": Pearson r(log10 lambda, R(f)) {_f(r_lam, 2)}: "
             f"{_holds(r_lam > 0)} (r > 0)."]  # fmt: skip
    for key in ABS:
        r = pearson(rs, [_abs(p, key) for _, p in pts])
        lines.append(f"Fig. 4, \"{key} is positively correlated with R(f)\": Pearson r {_f(r, 2)}: {_holds(r > 0)}.")
    strong = [_abs(p, ABS[0]) for lam, p in pts if lam >= 1e-5]
    weak = [_abs(p, ABS[0]) for lam, p in pts if lam < 1e-5]
    if strong and weak:
        lines.append(f"Fig. 8, \"when lambda >= 1e-5, |d_util| increases significantly\": mean abs(d_util) "
                     f"{mean(strong):.3f} at lambda >= 1e-5 vs {mean(weak):.3f} below: "
                     f"{_holds(mean(strong) > mean(weak))} (higher).")  # fmt: skip
    return lines


_L1_CAPTIONS = {
    3: "Paper 002, Figure 3. The mean and standard deviation of R(f) for models trained with different weights "
       "(lambda) on the L1 regularizer.",
    4: "Paper 002, Figure 4. The observed |d_util| and |d_speed| for models trained with different weights "
       "(lambda) on the L1 regularizer, against R(f).",
    8: "Paper 002, Figure 8. |d_util| and |d_speed| against the weight (lambda) on the L1 regularizer.",
}  # fmt: skip


def _l1_figure(n: int, got: dict[float, list[Point]], out: Path) -> Path:
    pts = [(lam, p) for lam, ps in got.items() for p in ps]
    if n == 3:
        return figs.points({"R(f)": {"models": [(lam, p["sparsity_r"]) for lam, p in pts]}}, out,
                           _L1_CAPTIONS[n][:22], "lambda", logx=True)  # fmt: skip
    x = "sparsity_r" if n == 4 else None
    panels = {key: {"models": [(p[x] if x else lam, _abs(p, key)) for lam, p in pts]} for key in ABS}
    return figs.points(panels, out, _L1_CAPTIONS[n][:22], "R(f)" if x else "lambda", logx=x is None)


def _render_l1(n: int, root: Path, smoke: bool, runs: Located | None) -> str:
    got = l1_points(root, runs)
    lines = [*_head(smoke, _L1_CAPTIONS[n]), *_l1_table(got), "", *l1_claims(got)]
    if any(got.values()):
        lines.append(f"Figure: {_l1_figure(n, got, _out(f'greedy-fig{n}', smoke))}")
    lines += ["", "Ours: ModelNet40 front and rear, vanilla MMTM training with optim.l1 = lambda (L' = L + lambda "
              "||theta||_1 over every trainable parameter), lr 0.1, SGD without momentum, batch 8; ten lambdas "
              "log-spaced in [1e-9, 1e-3] (ours: the paper gives the interval), three repeats (train.seed 0-2). "
              "R(f): share of parameters with |theta| < 1e-7 in the model selected on validation. Figs. 3, 4 "
              "and 8 read the same runs.", "How the runs are made: docs/tables.md."]  # fmt: skip
    return "\n".join(lines) + "\n"


def render_fig3(root: Path, smoke: bool, runs: Located | None) -> str:
    return _render_l1(3, root, smoke, runs)


def render_fig4(root: Path, smoke: bool, runs: Located | None) -> str:
    return _render_l1(4, root, smoke, runs)


def render_fig8(root: Path, smoke: bool, runs: Located | None) -> str:
    return _render_l1(8, root, smoke, runs)


# --------------------------------------------------------------------------------------------- Fig. 5
# Sec. 6.4: "On NVGesture, we obtain E[d_util] of approximately 0.3 and 0.4 for ... guided and ... vanilla. On
# ModelNet40 ... approximately -0.0, and -0.1"; random: "approximately 0.1 and -0.0 ... NVGesture and ModelNet40"
PAPER_FIG5 = {"modelnet40": {"vanilla": -0.1, "guided": -0.0, "random": -0.0},
              "nvgesture": {"vanilla": 0.4, "guided": 0.3, "random": 0.1}}  # fmt: skip
FIG5_CAPTION = ("Paper 002, Figure 5. Histograms and estimated density functions of d_util of models trained using "
                "the vanilla, the guided and the random algorithm on (a) ModelNet40 and (b) NVGesture.")  # fmt: skip


def fig5_claims(dataset: str, got: dict[str, list[Point]]) -> list[str]:
    """"Models trained with the guided algorithm have lower |d_util| compared to the vanilla algorithm" (and random)."""
    m = {a: mean([abs(p["d_util"]) for p in got[a]]) for a in got}
    if not got["vanilla"]:
        return [f"{dataset}: no vanilla runs yet."]
    return [f"{dataset}: \"{a} has lower |d_util| than vanilla\": mean abs(d_util) {m[a]:.3f} vs {m['vanilla']:.3f}: "
            f"{_holds(m[a] < m['vanilla'])}." for a in ("guided", "random") if got[a]]  # fmt: skip


def render_fig5(root: Path, smoke: bool, runs: Located | None) -> str:
    from mmtool.analysis.tables_greedy_render import sweep_points

    lines = [*_head(smoke, FIG5_CAPTION), "| Dataset | algorithm | runs | E[d_util]: paper | E[d_util] | "
             "mean abs(d_util) |", "|---" * 6 + "|"]  # fmt: skip
    got = {d: {a: sweep_points(root, runs, d, a, "real") for a in plan.ALGORITHMS} for d in plan.TWO}
    for d, by in got.items():
        for a, pts in by.items():
            du = [p["d_util"] for p in pts]
            lines.append(f"| {d} | {a} | {len(pts)} | ≈ {PAPER_FIG5[d][a]:+.1f} | {_f(mean(du))} | "
                         f"{_f(mean([abs(v) for v in du]), sign='')} |")  # fmt: skip
    lines.append("")
    for d in plan.TWO:
        lines += fig5_claims(d, got[d])
    if any(pts for by in got.values() for pts in by.values()):
        panels = {d: {a: [p["d_util"] for p in pts] for a, pts in by.items()} for d, by in got.items()}
        lines.append(f"Figure: {figs.histograms(panels, _out('greedy-fig5', smoke), 'Paper 002, Figure 5')}")
    lines += ["", "Ours: the learning-rate sweeps of Figure 2 with distinct modalities (its vanilla runs), also "
              "trained guided and random (recipes/<set>/balanced.yaml, balanced_random.yaml): alpha 0.01 and Q 5 on "
              "ModelNet40, alpha 0.1 and Q 5 on NVGesture (Sec. 6.4).", "How the runs are made: docs/tables.md."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- Fig. 9
FIG9_CAPTION = ("Paper 002, Figure 9. Models' behavior when using different values for the imbalance tolerance "
                "parameter alpha and the re-balancing window size Q in the balanced multi-modal training "
                "algorithm (ModelNet40 front and rear views, learning rate 0.1).")  # fmt: skip


def fig9_points(root: Path, runs: Located | None) -> dict[tuple[str, float], list[Point]]:
    values = [*(("window", q) for q in plan.WINDOWS), *(("alpha", a) for a in plan.ALPHAS)]
    return {(w, v): points(root, runs, DATASET, [plan.sens_name(w, v, c) for c in range(plan.SENS_COPIES)])
            for w, v in values}  # fmt: skip


def _fig9_figure(got: dict[tuple[str, float], list[Point]], out: Path) -> Path:
    keys = {"abs(d_util)": lambda p: abs(p["d_util"]), "test accuracy": lambda p: p["test"]}
    panels = {name: {w: [(v, f(p)) for (ww, v), pts in got.items() if ww == w for p in pts]
                     for w in ("window", "alpha")} for name, f in keys.items()}  # fmt: skip
    return figs.points(panels, out, "Paper 002, Figure 9", "Q or alpha", logx=True)


def render_fig9(root: Path, smoke: bool, runs: Located | None) -> str:
    got = fig9_points(root, runs)
    lines = [*_head(smoke, FIG9_CAPTION), "| panel | value | runs | abs(d_util) | test accuracy |", "|---" * 5 + "|"]
    for (what, value), pts in got.items():
        label = "(a) Q, alpha 0.01" if what == "window" else "(b) alpha, Q 5"
        lines.append(f"| {label} | {value:g} | {len(pts)} | {_ms([abs(p['d_util']) for p in pts])} | "
                     f"{_ms([p['test'] for p in pts], 1)} |")  # fmt: skip
    acc = {v: mean([p["test"] for p in pts]) for (w, v), pts in got.items() if w == "window" and pts}
    lines.append("")
    if acc:
        best = max(acc, key=lambda v: acc[v] if math.isfinite(acc[v]) else -math.inf)
        lines.append(f"\"According to the models' generalization performance, we choose Q = 5\": our best Q by mean "
                     f"test accuracy is {best:g}: {_holds(best == plan.BASE_Q)} on ours.")  # fmt: skip
        lines.append(f"Figure: {_fig9_figure(got, _out('greedy-fig9', smoke))}")
    else:
        lines.append("No runs yet.")
    lines += ["", "Ours: guided training (recipes/modelnet40/balanced.yaml) at lr 0.1 with method.window = Q "
              "(alpha 0.01) and method.alpha (Q 5); Fig. 9b's alphas are not in the paper's text: ours are "
              f"{', '.join(f'{a:g}' for a in plan.ALPHAS)}; three repeats each (train.seed 0-2).",
              "How the runs are made: docs/tables.md."]  # fmt: skip
    return "\n".join(lines) + "\n"
