"""Comparing finished runs over seeds (`mmtool report`): one row per (dataset, method) and setup, as Markdown,
CSV or JSON; and the one mean ± std over seeds that every result table uses (:func:`summarise`).

Runs pool only when they are one setup (:mod:`mmtool.analysis.setups`): runs of one (dataset, method)
that differ anywhere else are separate rows, each showing the keys on which they differ (three ``naive``
runs with ``model.head`` linear, mlp and attention are three rows). ``--group-by KEY`` groups by the given
keys alone (pooling deliberately); a row whose runs then differ elsewhere names those keys in its note.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mmtool.analysis.run_records import Run, _number
from mmtool.analysis.setups import _get, _has, _order, _seed_values, recipe_differences, setup, show
from mmtool.errors import UserError

REPORTED = ("train", "pretrain", "ensemble")  # stages whose results.json holds a model's accuracy


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float | None  # sample standard deviation (ddof=1); None for a single value


def summarise(values: Sequence[float]) -> Summary:
    """Mean and sample standard deviation (n − 1) over seeds: the one aggregation of `mmtool report` and
    of the result tables (`make table20`, ...), so a number means the same wherever it is printed."""
    if not values:
        raise ValueError("summarise needs at least one value")
    std = statistics.stdev(values) if len(values) > 1 else None
    return Summary(len(values), statistics.mean(values), std)


def measurements(run: Run, metric: str) -> list[tuple[str, float]]:
    """``(method, value)`` pairs a finished run contributes: a train run its method's ``metric``, an
    ensemble run ``ensemble``'s, a pretrain run one ``uni-modal <m>`` per modality; other stages none."""
    if run.status != "complete" or run.stage not in REPORTED:
        return []
    results = run.results or {}
    if run.stage == "pretrain":
        per = results.get("modalities")
        pairs = [(f"uni-modal {m}", _number(v.get(metric))) for m, v in per.items() if isinstance(v, dict)] \
            if isinstance(per, dict) else []  # fmt: skip
    else:
        name = (run.method or "?") if run.stage == "train" else run.stage
        pairs = [(name, _number(results.get(metric)))]
    return [(name, value) for name, value in pairs if value is not None]


Members = list[tuple[Run, float]]


def group(runs: Iterable[Run], metric: str) -> dict[tuple[str, str], Members]:
    """``{(dataset, method): [(run, value)]}`` over the runs' :func:`measurements`, sorted by key."""
    groups: dict[tuple[str, str], Members] = {}
    for run in runs:
        for method, value in measurements(run, metric):
            groups.setdefault((str(run.dataset), method), []).append((run, value))
    return dict(sorted(groups.items()))


def split_setups(members: Members, by: Sequence[str] | None = None) -> list[tuple[dict[str, Any], Members]]:
    """The runs of one (dataset, method) split into setups, each with the settings that tell it apart:
    by default runs pool when their :func:`setup` is the same, and the settings shown are the keys on which
    the setups differ; with ``by``, runs pool when those keys agree, and all of them are shown."""
    parts: dict[str, Members] = {}
    for run, value in members:
        same = [_get(run.config, k) for k in by] if by else setup(run.config)
        parts.setdefault(json.dumps(same, sort_keys=True, default=str), []).append((run, value))
    groups = list(parts.values())
    if by:
        shown = [{k: _get(g[0][0].config, k) for k in by} for g in groups]
    else:
        keys = recipe_differences([g[0][0].config for g in groups])
        shown = [{k: setup(g[0][0].config).get(k) for k in keys} for g in groups]
    return sorted(zip(shown, groups, strict=True), key=lambda pair: _order(pair[0]))


def check_group_by(runs: Iterable[Run], by: Sequence[str]) -> None:
    """A ``--group-by`` key that no run's config.yaml holds is a typo: say so rather than pool everything."""
    configs = [r.config for r in runs]
    for key in by:
        if not any(_has(c, key) for c in configs):
            raise UserError(f"--group-by {key}: no run's config.yaml has this key (a recipe key, e.g. model.head)")


def summarise_group(dataset: str, method: str, members: Members, metric: str,
                    settings: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """One report row: mean ± sample std over the group's runs, their seeds, the ``settings`` that tell
    the group apart from others of its (dataset, method), and a note when the runs are not repeats of one
    setup (keys that differ beyond the seed, possible only with ``--group-by``) or repeat a seed."""
    s = summarise([v for _, v in members])
    seeds = [r.seed for r, _ in members]
    differs = recipe_differences([r.config for r, _ in members])
    notes = []
    if differs:
        notes.append("recipes differ beyond the seed: " + ", ".join(differs))
    ids = [_seed_values(r.config) for r, _ in members]
    repeated = sorted({seeds[i] for i, x in enumerate(ids) if ids.count(x) > 1}, key=str)
    if repeated:
        notes.append("seed repeated: " + ", ".join(map(str, repeated)))
    return {
        "dataset": dataset,
        "method": method,
        "setup": dict(settings or {}),
        "metric": metric,
        "n": s.n,
        "mean": s.mean,
        "std": s.std,
        "seeds": seeds,
        "note": "; ".join(notes),
        "differs": differs,
        "runs": [str(r.path) for r, _ in members],
    }


def report_rows(runs: Iterable[Run], metric: str, by: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The report: one row per (dataset, method) and setup (:func:`split_setups`), in that order."""
    rows = []
    for (dataset, method), members in group(runs, metric).items():
        for settings, part in split_setups(members, by):
            rows.append(summarise_group(dataset, method, part, metric, settings))
    return rows


def setup_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The setting columns of a report: every key some row is told apart by, in order of first use."""
    return list(dict.fromkeys(k for row in rows for k in row.get("setup", {})))


def _setting(row: dict[str, Any], key: str) -> str:
    """A row's value of a setting column; empty where the key does not tell the row's runs apart."""
    return show(row["setup"][key]) if key in row.get("setup", {}) else ""


def to_markdown(rows: Sequence[dict[str, Any]], metric: str, by: Sequence[str] | None = None) -> str:
    """The report as a Markdown table, with a column per setting that tells rows of one method apart."""
    keys = setup_columns(rows)
    header = ["dataset", "method", *keys, metric, "n", "seeds", "note"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row in rows:
        std = "—" if row["std"] is None else f"{row['std']:.2f}"
        cells = [row["dataset"], row["method"], *(_setting(row, k) for k in keys), f"{row['mean']:.2f} ± {std}",
                 str(row["n"]), ", ".join(str(s) for s in row["seeds"]), row["note"]]  # fmt: skip
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    spread = f"{metric}: mean ± sample standard deviation (n − 1) over the runs of each row"
    if by:
        lines += ["", f"{spread}: one dataset, method and value of {', '.join(by)} (other differences: note)."]
    else:
        lines += ["", f"{spread}: one dataset, method and recipe, seeds aside."]
        if keys:
            lines.append(f"{', '.join(keys)}: where runs of one method differ (empty: no difference there).")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The report as CSV, the setting columns after ``method`` (empty where they do not apply)."""
    keys = setup_columns(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["dataset", "method", *keys, "metric", "n", "mean", "std", "seeds", "note"])
    for row in rows:
        std = "" if row["std"] is None else row["std"]
        seeds = " ".join(str(s) for s in row["seeds"])
        writer.writerow([row["dataset"], row["method"], *(_setting(row, k) for k in keys), row["metric"], row["n"],
                         row["mean"], std, seeds, row["note"]])  # fmt: skip
    return out.getvalue()


def to_json(rows: Sequence[dict[str, Any]]) -> str:
    return json.dumps(list(rows), indent=2) + "\n"
