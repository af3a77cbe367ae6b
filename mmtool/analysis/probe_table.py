"""Linear probes of every method's encoders (paper 000, Tables 1 and 7, across all methods).

Reads, per dataset and seed, the runs named ``probe-<run>`` (what ``mmtool reproduce probes`` makes over
the runs of ``methods``). One row per probed run, one column per (dataset, modality): the linear-probe test
accuracy of that run's encoder, mean ± std over seeds, and in brackets its difference from the encoder
trained uni-modally (the ``unimodal`` run) — a negative number is modality laziness. Rows whose
difference reaches ``LAZY`` points or more below the uni-modal encoder in some column are counted in the
last line.

Usage: python -m mmtool.analysis.probe_table RUNS_ROOT OUT.md  (a tree <dataset>/seed<k>/probe-<run>/)
"""

from __future__ import annotations

from mmtool.analysis.tables import Located, mean, mean_std, table_main
from mmtool.runs import is_finished, results_of

PREFIX = "probe-"
REFERENCE = "unimodal"
LAZY = 5.0  # points below the uni-modal encoder that count as lazy (the laziness acceptance threshold)


def collect(runs: Located) -> tuple[list[tuple[str, str]], dict[str, dict[tuple[str, str], list[float]]]]:
    """(columns ``[(dataset, modality)]``, ``{run: {(dataset, modality): [test accuracy per seed]}}``)."""
    columns: list[tuple[str, str]] = []
    rows: dict[str, dict[tuple[str, str], list[float]]] = {}
    for ds in sorted(runs):
        for named in runs[ds].values():
            for name, probe in sorted(named.items()):
                if not name.startswith(PREFIX) or not is_finished(probe):
                    continue
                run = name[len(PREFIX) :]
                for m, p in results_of(probe)["probes"].items():
                    key = (ds, m)
                    if key not in columns:
                        columns.append(key)
                    rows.setdefault(run, {}).setdefault(key, []).append(p["test_accuracy"])
    return columns, rows


def render(columns: list[tuple[str, str]], rows: dict[str, dict[tuple[str, str], list[float]]]) -> str:
    seeds = max((len(v) for r in rows.values() for v in r.values()), default=0)
    reference = rows.get(REFERENCE, {})
    lines = [
        "# Linear probes of every method's encoders (paper 000, Tables 1 and 7)",
        "",
        f"Linear-probe test accuracy (%) of each encoder, mean ± std over {seeds} seeds; in brackets the",
        f"difference from the same encoder trained uni-modally (`{REFERENCE}`). Negative: the fusion method",
        "left that modality's encoder under-trained (modality laziness).",
        "",
        "| encoder from | " + " | ".join(f"{ds} {m}" for ds, m in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    lazy = []
    for run in sorted(rows, key=lambda r: (r != REFERENCE, r)):
        cells = []
        for key in columns:
            values = rows[run].get(key, [])
            cell = mean_std(values)
            if values and run != REFERENCE and reference.get(key):
                delta = mean(values) - mean(reference[key])
                cell += f" ({delta:+.1f})"
                if delta <= -LAZY:
                    lazy.append(f"{run} on {key[0]} {key[1]}")
            cells.append(cell)
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    lines += ["", f"Encoders {LAZY:.0f}+ points below uni-modal: " + (", ".join(lazy) if lazy else "none") + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    table_main(argv, "mmtool.analysis.probe_table", lambda runs: render(*collect(runs)))


if __name__ == "__main__":
    main()
