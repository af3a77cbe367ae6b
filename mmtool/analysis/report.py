"""Finding runs on disk and comparing them over seeds (`mmtool runs`, `mmtool report`), and the one
mean ± std over seeds that every result table uses (:func:`summarise`).

A run folder is any folder holding config.yaml; the search does not descend into one, so a pretrain run's
per-modality sub-folders belong to their run. Only files are read here (no torch): listing is instant.

What counts as one setup. A report pools runs over seeds only: its groups are (dataset, method) and the
resolved recipe (config.yaml) with these keys left out:

* the seeds: every key named ``seed`` (``train.seed``, ``data.seed``). ``data.seed`` is pooled too although
  it decides the synthetic sets' samples and the validation split: the result tables' seed folders vary
  both together (the Makefile passes ``data.seed=k train.seed=k``; Table 20 says "data and training seed
  together"), so a report pools the same runs a table does (``--group-by`` naming data.seed keeps data
  seeds apart, grouping by the named keys alone);
* paths to each seed's own earlier runs (:data:`RUN_PATHS`): the teachers of seed 1 are not those of seed
  2, yet both runs are one setup;
* settings that do not change results (:data:`NOT_SETUP`: where files live, logging, checkpointing).

Runs of one (dataset, method) that differ anywhere else are separate rows, each showing the keys on which
they differ (three ``naive`` runs with ``model.head`` linear, mlp and attention are three rows).
``--group-by KEY`` groups by the given keys alone (pooling deliberately); a row whose runs then differ
elsewhere names those keys in its note. `mmtool runs` shows the same differing keys beside the method.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from mmtool.errors import UserError
from mmtool.runs import find_runs, listed, read_sessions, run_status

STAGE_ALIASES = {"pretrain-unimodal": "pretrain"}  # command names accepted for --stage

# Recipe keys that do not make two runs different setups (see the module docstring); a key is left out
# with everything under it. Seeds: every key whose last part is SEED.
SEED = "seed"
RUN_PATHS = ("teachers", "run", "method.teacher_run")  # each seed's own earlier runs
NOT_SETUP = ("description", "runs_root", "data.root", "train.workers", "train.log_every", "train.loggers",
             "train.eval_batch_size", "train.checkpoint_every", "train.checkpoint_every_steps",
             "train.checkpoint_every_minutes", "train.keep_last", "train.snapshot_every",
             "train.keep_optimizer")  # fmt: skip
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


def read_run(path: Path) -> Run:
    """One run folder as :class:`Run` (a config.yaml that is not a mapping gives a run of stage ``?``)."""
    path = Path(path)
    found = listed(path)
    try:
        config = yaml.safe_load(found["config"] or "")
    except yaml.YAMLError:
        config = None
    config = config if isinstance(config, dict) else {}
    stage = str(config.get("stage") or "?")
    status = run_status(path)
    sessions = read_sessions(path)
    started = _started(found, sessions)
    wall, lower = _wall(path, found, status, sessions, started)
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
        results=found["results"],
        error=found["error"] if status == "failed" else None,
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


def _parse_time(stamp: Any) -> float | None:
    """Seconds since the epoch of an ISO time with offset (sessions.json, env.json); None if unreadable."""
    try:
        return datetime.fromisoformat(str(stamp)).timestamp()
    except ValueError:
        return None


def _started(found: dict[str, Any], sessions: list[dict[str, Any]]) -> float | None:
    """The first session's start; for runs made before sessions were recorded, env.json's time."""
    for stamp in ((sessions[0].get("started") if sessions else None), found["env"].get("time")):
        if stamp and (t := _parse_time(stamp)) is not None:
            return t
    return found["created"]


def _wall(path: Path, found: dict[str, Any], status: str, sessions: list[dict[str, Any]],
          started: float | None) -> tuple[float | None, bool]:  # fmt: skip
    """Seconds the run's commands worked on it, summed over sessions (a pause before a resume is not
    counted). A session killed outright recorded no end: the last one counts up to the run's last file
    write (or now, while it runs); an earlier one is left out and the sum marked as a lower bound. A run
    without sessions.json (made before they were recorded) counts from env.json's time to results.json."""
    if not sessions:
        if status == "complete" and started is not None and found["finished"] is not None:
            return max(0.0, found["finished"] - started), False
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


# --------------------------------------------------------------------------------------------- setups
def is_setup_key(key: str) -> bool:
    """Whether the dotted recipe key ``key`` can make two runs different setups: not a seed, not a path to
    an earlier run, not a setting that leaves results unchanged (see the module docstring)."""
    if key.rsplit(".", 1)[-1] == SEED:
        return False
    return not any(key == k or key.startswith(k + ".") for k in (*RUN_PATHS, *NOT_SETUP))


def setup(config: dict[str, Any]) -> dict[str, Any]:
    """The run's setup: its flattened recipe (``{"model.head": "mlp", ...}``) without the keys that
    :func:`is_setup_key` leaves out."""
    return {k: v for k, v in _flatten(config).items() if is_setup_key(k)}


def recipe_differences(configs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """``{key: [distinct values]}`` for every setup key on which the configs differ (a key one config
    lacks counts as None): runs that differ there are not repeats of one experiment."""
    flat = [setup(c) for c in configs]
    out = {}
    for key in sorted({k for f in flat for k in f}):
        distinct: list[Any] = []
        for f in flat:
            value = f.get(key)
            if value not in distinct:
                distinct.append(value)
        if len(distinct) > 1:
            out[key] = distinct
    return out


def show(value: Any) -> str:
    """A setting as it reads on a command line: ``mlp``, ``0.01``, ``true``, ``null``, ``[64,64]``."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def _order(setting: dict[str, Any]) -> list[tuple[int, Any]]:
    """Sort key of a row's settings: numbers by value, before anything else by its text."""
    return [(0, v) if isinstance(v, (int, float)) else (1, show(v)) for v in setting.values()]


def _has(config: dict[str, Any], dotted: str) -> bool:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return True


def _seed_values(config: dict[str, Any]) -> str:
    """Every seed of a run together: two runs repeat a seed only when all of them agree."""
    return json.dumps({k: v for k, v in _flatten(config).items() if k.rsplit(".", 1)[-1] == SEED}, sort_keys=True)


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


def distinguishing(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """For each run, the settings on which the listed runs of its stage, dataset and method differ (the
    run's value of each); ``{}`` where they agree on everything but the seeds."""
    families: dict[tuple[str, str | None, str | None], list[int]] = {}
    for i, run in enumerate(runs):
        families.setdefault((run.stage, run.dataset, run.method), []).append(i)
    out: list[dict[str, Any]] = [{} for _ in runs]
    for members in families.values():
        keys = recipe_differences([runs[i].config for i in members])
        for i in members:
            flat = setup(runs[i].config)
            out[i] = {k: flat.get(k) for k in keys}
    return out


def listing(runs: Iterable[Run]) -> list[dict[str, Any]]:
    """One JSON-ready object per run: what `mmtool runs` prints (``setup``: see :func:`distinguishing`)."""
    runs = list(runs)
    rows = []
    for run, differs in zip(runs, distinguishing(runs), strict=True):
        rows.append(
            {
                "stage": run.stage,
                "dataset": run.dataset,
                "method": run.method,
                "setup": differs,
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


RUN_COLUMNS = ("stage", "dataset", "method", "seed", "status", "val", "test", "wall", "path")
RIGHT_ALIGNED = ("seed", "val", "test", "wall")
COLOURS = {"complete": "32", "running": "33", "failed": "31", "interrupted": "35"}  # ANSI green, yellow, ...
SETTINGS_WIDTH = 24  # settings shown beside a method before the rest are counted ("+2 more")
MIN_PATH = 10  # a path is never cut below this (the table is wider than asked instead)


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Each dotted key's shortest tail that no other key ends with: ``model.head`` -> ``head``, but
    ``train.epochs`` and ``probe.epochs`` stay whole."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if not any(other != key and (other == tail or other.endswith("." + tail)) for other in keys):
                break
        out[key] = tail
    return out


def settings_cell(settings: dict[str, Any], width: int = SETTINGS_WIDTH) -> str:
    """``head=mlp lr=0.1``: the settings that fit in ``width`` characters (one at least), then ``+N more``."""
    names = short_keys(list(settings))
    parts = [f"{names[k]}={show(v)}" for k, v in settings.items()]
    shown: list[str] = []
    for part in parts:
        if shown and len(" ".join([*shown, part])) > width:
            break
        shown.append(part)
    rest = len(parts) - len(shown)
    return " ".join(shown) + (f" +{rest} more" if rest else "")


def _accuracy(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def table_cells(rows: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The cells of `mmtool runs`' table, one line per run, or per modality for a run that holds one model
    per modality (``uni-modal m1`` for pretrain, ``probe m1``); the method cell carries the settings on
    which the run differs from the others of its method (``naive head=mlp``)."""
    lines = []
    for row in rows:
        settings = settings_cell(row.get("setup") or {})
        base = {
            "stage": row["stage"],
            "dataset": row["dataset"] or "—",
            "seed": "—" if row["seed"] is None else str(row["seed"]),
            "status": row["status"],
            "wall": duration(row["wall_s"], row["wall_lower_bound"]),
            "path": row["path"],
        }
        per = row.get("modalities") or {}
        if per and row.get("val_accuracy") is None and row.get("test_accuracy") is None:
            kind = "uni-modal" if row["stage"] == "pretrain" else row["stage"]
            models = [(f"{kind} {m}", v.get("val_accuracy"), v.get("test_accuracy")) for m, v in per.items()]
        else:
            models = [(row["method"] or ("" if settings else "—"), row.get("val_accuracy"), row.get("test_accuracy"))]
        for name, val, test in models:
            method = " ".join(p for p in (name, settings) if p)
            lines.append({**base, "method": method, "val": _accuracy(val), "test": _accuracy(test)})
    return lines


def shorten_paths(paths: Sequence[str], width: int) -> list[str]:
    """Paths in ``width`` characters, keeping what tells runs apart, their own folder names: first the
    folders every path starts with become "…" (``…/seed0/naive_mlp``); a path still too long keeps its own
    folder name only (``…/naive_mlp-9868efa5caee``), and where even that is too long, the name's beginning
    (``naive_mlp-98…``: the name says what the run is, an identity suffix rarely matters at a glance)."""
    parts = [p.split("/") for p in paths]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    if common and max(len(p) for p in paths) > width:
        paths = ["…/" + "/".join(p[common:]) for p in parts]
    return [_fit(p, width) for p in paths]


def _fit(path: str, width: int) -> str:
    if len(path) <= width:
        return path
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if len(name) + 2 <= width:
        return "…/" + name
    return name[: max(width - 1, 1)] + "…"


def render_runs(rows: Sequence[dict[str, Any]], width: int = 80, colour: bool = False) -> str:
    """`mmtool runs`' table in ``width`` columns: paths too long to fit are shortened (:func:`shorten_paths`;
    never below :data:`MIN_PATH`), no other column is cut; ``colour`` paints the status with ANSI colours."""
    lines = table_cells(rows)
    widths = {c: max(len(c), *(len(line[c]) for line in lines)) for c in RUN_COLUMNS}
    others = sum(widths[c] for c in RUN_COLUMNS if c != "path") + len(RUN_COLUMNS) - 1
    room = max(width - others, MIN_PATH)
    if widths["path"] > room:
        for line, path in zip(lines, shorten_paths([line["path"] for line in lines], room), strict=True):
            line["path"] = path
        widths["path"] = max(len("path"), *(len(line["path"]) for line in lines))
    out = [_line(dict(zip(RUN_COLUMNS, RUN_COLUMNS, strict=True)), widths, False)]
    out += [_line(line, widths, colour) for line in lines]
    return "\n".join(out) + "\n"


def _line(cells: dict[str, str], widths: dict[str, int], colour: bool) -> str:
    parts = []
    for column in RUN_COLUMNS:
        cell = cells[column]
        if column == RUN_COLUMNS[-1]:
            parts.append(cell)  # no trailing spaces
            continue
        text = cell.rjust(widths[column]) if column in RIGHT_ALIGNED else cell.ljust(widths[column])
        if colour and column == "status" and cell in COLOURS:
            text = f"\x1b[{COLOURS[cell]}m{text}\x1b[0m"
        parts.append(text)
    return " ".join(parts)


def output_width(tty: bool) -> int:
    """Columns a table may use: the terminal's width on a terminal; when piped, ``COLUMNS`` if set, else 80."""
    if tty:
        return shutil.get_terminal_size().columns
    try:
        return max(int(os.environ.get("COLUMNS", "")), 20)
    except ValueError:
        return 80


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
