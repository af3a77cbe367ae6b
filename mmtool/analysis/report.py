"""Finding runs on disk and comparing them over seeds (`mmtool runs`, `mmtool report`), and the one
mean ± std over seeds that every result table uses (:func:`summarise`).

A run folder is any folder holding config.yaml; the search does not descend into one, so a pretrain run's
per-modality sub-folders belong to their run. Only files are read here (no torch): listing is instant.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from mmtool.errors import UserError
from mmtool.runs import FAILED, RESULTS, read_sessions, run_status

CONFIG = "config.yaml"
STAGE_ALIASES = {"pretrain-unimodal": "pretrain"}  # command names accepted for --stage

# Keys a report ignores when it checks that the runs of a group share one recipe: the seeds, where files
# live (each seed has its own teachers / analysed run) and settings that do not change results.
SEED_KEYS = ("train.seed", "data.seed")
NOT_RECIPE = ("description", "runs_root", "data.root", "teachers", "run", "method.teacher_run", "train.workers",
              "train.log_every")  # fmt: skip
REPORTED = ("train", "pretrain", "ensemble")  # stages whose results.json holds a model's accuracy


# --------------------------------------------------------------------------------------------- aggregation
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


# --------------------------------------------------------------------------------------------- runs on disk
@dataclass(frozen=True)
class Run:
    """What `mmtool runs` and `mmtool report` know about one run folder."""

    path: Path
    stage: str
    dataset: str | None
    method: str | None  # a train run's method; None for the other stages
    seed: int | None  # train.seed
    status: str  # running | complete | failed | interrupted (mmtool.runs.run_status)
    started: float | None  # seconds since the epoch
    wall_s: float | None
    wall_lower_bound: bool  # an earlier session was killed outright: its time is unknown and left out
    config: dict[str, Any]
    results: dict[str, Any] | None
    error: str | None  # failed.json's one-line error


def find_runs(root: Path) -> list[Path]:
    """Every run folder at or under ``root`` (hidden folders skipped, runs not descended into)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if CONFIG in filenames:
            found.append(Path(dirpath))
            dirnames.clear()
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return found


def read_run(path: Path) -> Run:
    """One run folder as :class:`Run` (a config.yaml that is not a mapping gives a run of stage ``?``)."""
    path = Path(path)
    try:
        config = yaml.safe_load((path / CONFIG).read_text())
    except (OSError, yaml.YAMLError):
        config = None
    config = config if isinstance(config, dict) else {}
    stage = str(config.get("stage") or "?")
    status = run_status(path)
    sessions = read_sessions(path)
    started = _started(path, sessions)
    wall, lower = _wall(path, status, sessions, started)
    method = _get(config, "method.name") if stage == "train" else None
    seed = _get(config, "train.seed")
    return Run(
        path=path,
        stage=stage,
        dataset=_get(config, "data.name"),
        method=method,
        seed=seed if isinstance(seed, int) else None,
        status=status,
        started=started,
        wall_s=wall,
        wall_lower_bound=lower,
        config=config,
        results=_json(path / RESULTS),
        error=(_json(path / FAILED) or {}).get("error") if status == "failed" else None,
    )


def collect_runs(paths: Iterable[str | Path]) -> list[Run]:
    """The runs named by ``paths`` (a run folder, or a folder searched for runs), each once, by start time."""
    seen: dict[Path, Run] = {}
    for p in paths:
        p = Path(p)
        if not p.is_dir():
            what = "not a folder" if p.exists() else "no such folder"
            raise UserError(f"{p}: {what} (give run folders or folders of runs)")
        for run_dir in find_runs(p):
            key = run_dir.resolve()
            if key not in seen:
                seen[key] = read_run(run_dir)
    return sorted(seen.values(), key=lambda r: (r.started or 0.0, str(r.path)))


def select(runs: Iterable[Run], stage: str | None = None, dataset: str | None = None) -> list[Run]:
    stage = STAGE_ALIASES.get(stage, stage) if stage else None
    return [r for r in runs if (stage is None or r.stage == stage) and (dataset is None or r.dataset == dataset)]


def _get(config: dict[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _json(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _parse_time(stamp: Any) -> float | None:
    """Seconds since the epoch of an ISO time with offset (sessions.json, env.json); None if unreadable."""
    try:
        return datetime.fromisoformat(str(stamp)).timestamp()
    except ValueError:
        return None


def _started(path: Path, sessions: list[dict[str, Any]]) -> float | None:
    """The first session's start; for runs made before sessions were recorded, env.json's time."""
    for stamp in ((sessions[0].get("started") if sessions else None), (_json(path / "env.json") or {}).get("time")):
        if stamp and (t := _parse_time(stamp)) is not None:
            return t
    try:
        return (path / CONFIG).stat().st_mtime
    except OSError:
        return None


def _wall(path: Path, status: str, sessions: list[dict[str, Any]], started: float | None) -> tuple[float | None, bool]:
    """Seconds the run's commands worked on it, summed over sessions (a pause before a resume is not
    counted). A session killed outright recorded no end: the last one counts up to the run's last file
    write (or now, while it runs); an earlier one is left out and the sum marked as a lower bound. A run
    without sessions.json (made before they were recorded) counts from env.json's time to results.json."""
    if not sessions:
        if status == "complete" and started is not None:
            return max(0.0, (path / RESULTS).stat().st_mtime - started), False
        return None, False
    total, lower = 0.0, False
    for i, session in enumerate(sessions):
        if isinstance(session.get("seconds"), (int, float)):
            total += session["seconds"]
            continue
        start = _parse_time(session.get("started"))
        if start is None or i < len(sessions) - 1:
            lower = True
        elif status == "running":
            total += max(0.0, time.time() - start)
        else:
            total += max(0.0, _last_write(path) - start)
    return total, lower


def _last_write(path: Path) -> float:
    return max((p.stat().st_mtime for p in path.rglob("*") if p.is_file()), default=0.0)


# --------------------------------------------------------------------------------------------- mmtool runs
def accuracies(run: Run) -> dict[str, Any]:
    """The run's best-validation and test accuracy (the selected checkpoint's). Pretrain and probe runs hold
    one model (or probe) per modality: their numbers are per modality, under ``modalities``, and the
    top-level ones are None, since a mean of separate models' accuracies is no model's accuracy."""
    results = run.results or {}
    out: dict[str, Any] = {k: _number(results.get(k)) for k in ("val_accuracy", "test_accuracy")}
    per = results.get("modalities" if run.stage == "pretrain" else "probes" if run.stage == "probe" else "")
    if isinstance(per, dict):
        out["modalities"] = {
            m: {k: _number(v.get(k)) for k in ("val_accuracy", "test_accuracy")}
            for m, v in per.items()
            if isinstance(v, dict)
        }
    return out


def listing(runs: Iterable[Run]) -> list[dict[str, Any]]:
    """One JSON-ready object per run: what `mmtool runs` prints."""
    rows = []
    for run in runs:
        rows.append(
            {
                "stage": run.stage,
                "dataset": run.dataset,
                "method": run.method,
                "seed": run.seed,
                "status": run.status,
                **accuracies(run),
                "wall_s": None if run.wall_s is None else round(run.wall_s, 2),
                "wall_lower_bound": run.wall_lower_bound,
                "started": _stamp(run.started),
                "path": str(run.path),
                **({"error": run.error} if run.error else {}),
            }
        )
    return rows


def _stamp(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def accuracy_cell(row: dict[str, Any], key: str) -> str:
    """A table cell: the accuracy, or ``m1 71.2 · m2 65.0`` per modality, or a dash."""
    if row.get(key) is not None:
        return f"{row[key]:.1f}"
    per = row.get("modalities") or {}
    cells = [f"{m} {v[key]:.1f}" for m, v in per.items() if v.get(key) is not None]
    return " · ".join(cells) or "—"


def duration(seconds: float | None, lower_bound: bool = False) -> str:
    """``42s``, ``3m05s``, ``2h07m`` (``≥`` when a killed session's time is unknown)."""
    if seconds is None:
        return "—"
    s = int(round(seconds))
    text = f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"
    return ("≥" if lower_bound else "") + text


def no_runs(where: str, **filters: str | None) -> UserError:
    """The one-line error for an empty selection, naming where it looked and the filters."""
    given = ", ".join(f"{k} {v}" for k, v in filters.items() if v is not None)
    return UserError(f"no runs in {where}" + (f" with {given}" if given else ""))


# --------------------------------------------------------------------------------------------- mmtool report
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


def group(runs: Iterable[Run], metric: str) -> dict[tuple[str, str], list[tuple[Run, float]]]:
    """``{(dataset, method): [(run, value)]}`` over the runs' :func:`measurements`, sorted by key."""
    groups: dict[tuple[str, str], list[tuple[Run, float]]] = {}
    for run in runs:
        for method, value in measurements(run, metric):
            groups.setdefault((str(run.dataset), method), []).append((run, value))
    return dict(sorted(groups.items()))


def recipe_differences(configs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """``{key: [distinct values]}`` for every recipe key on which the configs differ, the seeds and
    :data:`NOT_RECIPE` aside: runs that differ there are not repeats of one experiment."""
    flat = [_flatten(c) for c in configs]
    out = {}
    for key in sorted({k for f in flat for k in f}):
        if key in SEED_KEYS or any(key == k or key.startswith(k + ".") for k in NOT_RECIPE):
            continue
        distinct: list[Any] = []
        for f in flat:
            value = f.get(key)
            if value not in distinct:
                distinct.append(value)
        if len(distinct) > 1:
            out[key] = distinct
    return out


def summarise_group(dataset: str, method: str, members: Sequence[tuple[Run, float]], metric: str) -> dict[str, Any]:
    """One report row: mean ± sample std over the group's runs, their seeds, and a note when the runs are
    not repeats of one recipe (keys that differ beyond the seed) or repeat a seed."""
    s = summarise([v for _, v in members])
    seeds = [r.seed for r, _ in members]
    differs = recipe_differences([r.config for r, _ in members])
    notes = []
    if differs:
        notes.append("recipes differ beyond the seed: " + ", ".join(differs))
    repeated = sorted({x for x in seeds if seeds.count(x) > 1}, key=str)
    if repeated:
        notes.append("seed repeated: " + ", ".join(map(str, repeated)))
    return {
        "dataset": dataset,
        "method": method,
        "metric": metric,
        "n": s.n,
        "mean": s.mean,
        "std": s.std,
        "seeds": seeds,
        "note": "; ".join(notes),
        "differs": differs,
        "runs": [str(r.path) for r, _ in members],
    }


def report_rows(runs: Iterable[Run], metric: str) -> list[dict[str, Any]]:
    return [summarise_group(ds, m, members, metric) for (ds, m), members in group(runs, metric).items()]


def to_markdown(rows: Sequence[dict[str, Any]], metric: str) -> str:
    lines = [
        f"| dataset | method | {metric} | n | seeds | note |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        std = "—" if row["std"] is None else f"{row['std']:.2f}"
        cells = [row["dataset"], row["method"], f"{row['mean']:.2f} ± {std}", str(row["n"]),
                 ", ".join(str(s) for s in row["seeds"]), row["note"]]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"{metric}: mean ± sample standard deviation (n − 1) over the runs of each (dataset, method)."]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["dataset", "method", "metric", "n", "mean", "std", "seeds", "note"])
    for row in rows:
        std = "" if row["std"] is None else row["std"]
        seeds = " ".join(str(s) for s in row["seeds"])
        writer.writerow([row["dataset"], row["method"], row["metric"], row["n"], row["mean"], std, seeds, row["note"]])
    return out.getvalue()


def to_json(rows: Sequence[dict[str, Any]]) -> str:
    return json.dumps(list(rows), indent=2) + "\n"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
