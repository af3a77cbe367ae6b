"""Laziness table (paper 000, Tables 1 and 7) from finished runs.

Expects ``<root>/<dataset>/seed<k>/probe-<run>/results.json`` for runs ``unimodal``, ``naive`` and
``umt`` (what ``mmtool reproduce laziness`` makes) and reports, per dataset and modality, the linear-probe test
accuracy of each encoder (mean ± std over seeds), the laziness gap (uni-modal − naive) and the share of
that gap UMT closes, plus the test accuracy of each model.

Usage: python -m mmtool.analysis.laziness RUNS_ROOT OUT.md  (a tree <dataset>/seed<k>/<run>/)
"""

from __future__ import annotations

from mmtool.analysis.tables import Located, mean, mean_std, table_main
from mmtool.runs import results_of

RUNS = {"unimodal": "Uni-modal training", "naive": "Naive fusion (MM baseline)", "umt": "UMT"}


def collect(runs: Located) -> dict[str, dict]:
    """``{dataset: {"probe": {run: {m: [acc]}}, "test": {model: [acc]}, "seeds": k}}``."""
    out: dict[str, dict] = {}
    for ds in sorted(runs):
        seeds = list(runs[ds].values())
        probe: dict[str, dict[str, list[float]]] = {r: {} for r in RUNS}
        test: dict[str, list[float]] = {}
        for seed in seeds:
            for run in RUNS:
                for m, p in results_of(seed[f"probe-{run}"])["probes"].items():
                    probe[run].setdefault(m, []).append(p["test_accuracy"])
            for m, r in results_of(seed["unimodal"])["modalities"].items():
                test.setdefault(f"uni-modal {m}", []).append(r["test_accuracy"])
            for run in ("naive", "umt"):
                test.setdefault(RUNS[run], []).append(results_of(seed[run])["test_accuracy"])
        out[ds] = {"probe": probe, "test": test, "seeds": len(seeds)}
    return out


def render(data: dict[str, dict]) -> str:
    lines = [
        "# Modality laziness: linear probes of encoders (paper 000, Tables 1 and 7)",
        "",
        "Linear-probe test accuracy (%) of each encoder, mean ± std over seeds. Gap = uni-modal − naive;",
        "closed = (UMT − naive) / gap, from the seed means. digits-colored trains with Adam, lr 1e-3",
        "(recipes/_base/digits.yaml; before, plain full-batch SGD left its models on the starting plateau).",
        "",
    ]
    for ds, d in data.items():
        mods = sorted(d["probe"]["unimodal"])
        lines += [f"## {ds} ({d['seeds']} seeds)", "", "| encoder from | " + " | ".join(mods) + " |"]
        lines.append("|---" * (len(mods) + 1) + "|")
        for run, label in RUNS.items():
            lines.append(f"| {label} | " + " | ".join(mean_std(d["probe"][run].get(m, [])) for m in mods) + " |")
        gaps, closed = [], []
        for m in mods:
            uni, naive, umt = (mean(d["probe"][r][m]) for r in RUNS)
            gaps.append(f"{uni - naive:+.1f}")
            closed.append(f"{(umt - naive) / (uni - naive):.0%}" if uni - naive > 0 else "—")
        lines += ["| gap (uni − naive) | " + " | ".join(gaps) + " |", "| closed by UMT | " + " | ".join(closed) + " |"]
        lines += [
            "",
            "Test accuracy of the models: " + ", ".join(f"{k} {mean_std(v)}" for k, v in d["test"].items()),
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    table_main(argv, "mmtool.analysis.laziness", lambda runs: render(collect(runs)))


if __name__ == "__main__":
    main()
