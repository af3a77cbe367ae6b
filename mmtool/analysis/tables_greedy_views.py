"""Paper 002's three-view ModelNet40 experiment (Sec. 7) as the target ``greedy-3view``.

The paper extends balanced multi-modal learning to more than two modalities in one paragraph and reports one
result: "We experiment with three views in ModelNet40 and find that the guided algorithm outperforms the vanilla
one as it improves the accuracy from 91.21% to 92.45%." It gives no table, no std, no seed count and does not
name the views. Our runs per seed on ModelNet40 with ``data.side_view`` (recipes/_base/modelnet40_3view.yaml:
front v001, rear v007 and side v004, our choice):

* ``vanilla_3view``: three ResNet-18 linked by three-input MMTMs, the sum of the branch losses
  (recipes/modelnet40/mmtm_3view.yaml; paper 002's "vanilla", as Table 1's);
* ``guided_3view``: balanced multi-modal learning, guided (recipes/modelnet40/balanced_3view.yaml): d_speed from
  the two most different conditional learning speeds, the slower of them accelerated (docs/methods.md);
* ``util-<run>``: `mmtool utilization` of each (recipes/modelnet40/utilization_3view.yaml): one conditional
  utilization rate per view, u(rest|m), branch m with the training means of the two other views at every MMTM.

The rendering prints the paper's two numbers beside our mean ± std over the seeds (test accuracy), then every
run's per-view rates and d_util (largest minus smallest rate).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from mmtool.analysis.paper_defs import SMOKE_BANNER, Located, Run, TablePlan

DATASET = "modelnet40"
VIEWS = ("front", "rear", "side")
FRAGMENT = "recipes/_base/modelnet40_3view.yaml"  # the third view, for prep (PREP_KEYS: side_view) and every run
# row label -> (our training run, its utilization run, the paper's test accuracy in %)
ROWS = {
    "vanilla": ("vanilla_3view", "util-vanilla_3view", 91.21),
    "guided": ("guided_3view", "util-guided_3view", 92.45),
}
RUNS = (
    Run("vanilla_3view", "train", "mmtm_3view"),
    Run("guided_3view", "train", "balanced_3view"),
    *(Run(util, "utilization", "utilization_3view", (("run", train),)) for train, util, _ in ROWS.values()),
)
TABLES = {
    "greedy-3view": TablePlan((DATASET,), RUNS, DATASET, all_seeds=True, fragments=((DATASET, FRAGMENT),)),
}
CAPTION = (
    "# Paper 002, Sec. 7: three views of ModelNet40, vanilla vs guided balanced multi-modal learning (test accuracy)"
)


def finished(root: Path, run: str, runs: Located | None) -> list[tuple[Path, dict]]:
    """(folder, results) of every finished folder of ``run``, one per seed, in seed order."""
    from mmtool.analysis.paper_tables import run_dirs
    from mmtool.runs import is_finished, results_of

    return [(f, results_of(f)) for f in run_dirs(root, DATASET, run, runs) if is_finished(f)]


def mean_std(values: list[float]) -> str:
    """``mean ± std`` (sample std; a single value without it; none: —)."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _accuracy_lines(root: Path, runs: Located | None) -> list[str]:
    lines = ["| method | paper 002 (Sec. 7) | ours (mean ± std) | seeds |", "|---|---|---|---|"]
    for label, (train, _, paper) in ROWS.items():
        values = [float(r["test_accuracy"]) for _, r in finished(root, train, runs)]
        lines.append(f"| {label} | {paper:.2f} | {mean_std(values)} | {len(values)} |")
    return lines


def _utilization_lines(root: Path, runs: Located | None) -> list[str]:
    head = " | ".join(f"u(rest\\|{v})" for v in VIEWS)
    lines = [f"| method | seed | {head} | d_util (views) |", "|---|---|" + "---|" * len(VIEWS) + "---|"]
    for label, (_, util, _) in ROWS.items():
        for folder, r in finished(root, util, runs):
            rates = r.get("utilization", {})
            cells = " | ".join(f"{rates[v]:+.3f}" if v in rates else "—" for v in VIEWS)
            pair = "/".join(r.get("d_util_pair", ()))
            d_util = f"{r['d_util']:+.3f} ({pair})" if "d_util" in r else "—"
            lines.append(f"| {label} | {folder.parent.name} | {cells} | {d_util} |")
    if len(lines) == 2:
        lines.append("| (no finished utilization run) |  |" + " |" * len(VIEWS) + "  |")
    return lines


def render(root: Path, smoke: bool = False, runs: Located | None = None) -> str:
    """The paper's two accuracies beside ours, then each run's per-view utilization rates."""
    lines = [SMOKE_BANNER, ""] if smoke else []
    lines += [CAPTION, "", *_accuracy_lines(root, runs), ""]
    lines += [
        "Paper: one sentence, no std, no seed count, the views not named. Ours: views front (v001), rear (v007) and "
        "side (v004); MMTM with three inputs; guided: d_speed from the two most different conditional learning "
        "speeds, the slower accelerated (alpha 0.01, Q 5 as on two views).",
        "",
        "Conditional utilization rate per view, u(rest|m) = (A(f_m) - A(f_m')) / A(f_m), f_m' = branch m with the "
        "training means of the two other views at every MMTM; d_util = largest minus smallest rate:",
        "",
        *_utilization_lines(root, runs),
        "",
        f"Runs in {root}; how they are made: docs/tables.md.",
    ]
    return "\n".join(lines) + "\n"


RENDER = {"greedy-3view": render}
