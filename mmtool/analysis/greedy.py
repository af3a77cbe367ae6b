"""Greedy-learning table (paper 002, Sec. 6.4: Fig. 5 and Table 1) from finished runs.

Reads, per ``<encoder>/<algorithm>`` and seed, a ``train`` run (`mmtool train balanced`) and its
``utilization`` run, as ``mmtool reproduce greedy`` makes them, with algorithms ``vanilla``, ``guided``
and ``random``; one section per encoder (the branches' architecture, e.g. ``mlp`` and ``cnn``). Per
algorithm, mean ± std over seeds of: the test accuracy of the fused prediction and of each branch, d_util
and |d_util| on test, d_speed at the selected (best-validation) epoch as paper 002 reports it, and the
share of re-balancing steps. The last lines compare guided with vanilla; a PNG per encoder beside the
table shows d_speed over training and d_util per run.

Usage: python -m mmtool.analysis.greedy RUNS_ROOT OUT.md  (a tree <encoder>/<algorithm>/seed<k>/{train,utilization};
       PNGs: OUT's name + _<encoder>.png)
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

from mmtool.analysis import plots
from mmtool.analysis.tables import Located, mean, mean_std, walk
from mmtool.files import atomic_write_text
from mmtool.runs import metrics_of, results_of

ORDER = ("vanilla", "guided", "random")


def _metrics(run: Path) -> list[dict]:
    """The run's metrics.jsonl records, ``null`` (a number that was not finite) read as NaN."""
    records = metrics_of(run)
    return [{k: math.nan if v is None else v for k, v in r.items()} for r in records]


def collect(runs: Located) -> dict[str, dict]:
    """``{algorithm: {"values": {column: [per seed]}, "curves": [(epochs, d_speed)], "modalities": [a, b]}}``
    for the algorithms of one encoder (``runs``: algorithm -> seed -> run name -> folder)."""
    out: dict[str, dict] = {}
    for name in sorted(runs, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        values: dict[str, list[float]] = {}
        curves = []
        modalities: list[str] = []
        for seed in runs[name].values():
            train, util = results_of(seed["train"]), results_of(seed["utilization"])
            records = _metrics(seed["train"])
            at_best = next(r for r in records if r["epoch"] == train["best_epoch"])
            modalities = util["modalities"]
            row = {
                "test": train["test_accuracy"],
                **{f"branch {m}": util[f"accuracy_branch_{m}"] for m in modalities},
                "d_util": math.nan if util.get("d_util") is None else util["d_util"],  # null: undefined
                "abs(d_util)": math.nan if util.get("d_util") is None else abs(util["d_util"]),
                "d_speed": at_best["d_speed"],
                **{
                    f"re-balancing {m} (%)": 100 * statistics.mean(r.get(f"rebalance_{m}_share", 0.0) for r in records)
                    for m in modalities
                },
            }
            for k, v in row.items():
                values.setdefault(k, []).append(v)
            speed = [r for r in records if "d_speed" in r]
            curves.append(([r["epoch"] for r in speed], [r["d_speed"] for r in speed]))
        out[name] = {"values": values, "curves": curves, "modalities": modalities}
    return out


def _fmt(column: str, values: list[float]) -> str:
    """Accuracies with one decimal; d_util and d_speed with three, signed."""
    if "d_" not in column:
        return mean_std(values)
    return mean_std(values, digits=3, sign="+" if column.startswith("d_") else "")


def render(sections: dict[str, dict[str, dict]], plots_by_encoder: dict[str, str]) -> str:
    lines = [
        "# Greedy learning: vanilla vs balanced multi-modal learning (paper 002, Sec. 6.4)",
        "",
        "MMTM fusion on digits-colored (m1 colored, m2 gray), mean ± std over seeds. Accuracies (%) on test,",
        "of the fused prediction and of each branch's own classifier; d_util = u(b|a) − u(a|b) on test",
        "(Def. 4.1); d_speed = s(b|a) − s(a|b) at the epoch selected on validation (Def. 5.1); re-balancing =",
        "share of an epoch's training steps that accelerated that modality, averaged over the logged epochs.",
        "",
        "Variant `paper` of method balanced (recipes/digits-colored/balanced*.yaml). What changed in it: guided",
        "re-balancing compares |d_speed| with α in the authors' log10 units (a threshold 2.3x looser than the bare α",
        "on a natural-log d_speed it used before); docs/fidelity.md lists what variant `code` changes.",
    ]
    for encoder, data in sections.items():
        seeds = max((len(d["curves"]) for d in data.values()), default=0)
        columns = list(next(iter(data.values()))["values"]) if data else []
        lines += [
            "",
            f"## {encoder} branches ({seeds} seeds; plot: {plots_by_encoder.get(encoder, '—')})",
            "",
            "| algorithm | " + " | ".join(columns) + " |",
            "|---" * (len(columns) + 1) + "|",
        ]
        for name, d in data.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(c, d["values"][c]) for c in columns) + " |")
        if "vanilla" in data and "guided" in data:
            van, gui = data["vanilla"]["values"], data["guided"]["values"]
            du_v, du_g = mean(van["abs(d_util)"]), mean(gui["abs(d_util)"])
            acc_v, acc_g = mean(van["test"]), mean(gui["test"])
            lines += [
                "",
                f"- guided vs vanilla, mean |d_util|: {du_g:.3f} vs {du_v:.3f} "
                f"({'lower' if du_g < du_v else 'not lower'})",
                f"- guided vs vanilla, mean test accuracy: {acc_g:.2f} vs {acc_v:.2f} "
                f"({'higher' if acc_g > acc_v else 'not higher'})",
            ]
    return "\n".join(lines) + "\n"


def by_encoder(runs: Located) -> dict[str, dict[str, dict]]:
    """``runs`` keyed ``<encoder>/<algorithm>`` -> one :func:`collect` section per encoder."""
    encoders: dict[str, dict] = {}
    for group, seeds in runs.items():
        encoder, _, algorithm = group.partition("/")
        encoders.setdefault(encoder, {})[algorithm] = seeds
    return {encoder: collect(algorithms) for encoder, algorithms in sorted(encoders.items())}


def write(runs: Located, out: Path) -> str:
    """The table (``out``) and one PNG per encoder beside it; the table's text."""
    sections = by_encoder(runs)
    pngs = {}
    for encoder, data in sections.items():
        png = out.with_name(f"{out.stem}_{encoder}.png")
        curves = {n: d["curves"] for n, d in data.items()}
        plots.greedy_summary(curves, {n: d["values"]["d_util"] for n, d in data.items()}, png, f"{encoder} branches")
        pngs[encoder] = png.name
    text = render(sections, pngs)
    atomic_write_text(out, text)
    return text


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        raise SystemExit("usage: python -m mmtool.analysis.greedy RUNS_ROOT OUT.md")
    print(write(walk(Path(args[0]), depth=2), Path(args[1])))


if __name__ == "__main__":
    main()
