"""`mmtool runs`: one JSON-ready row per run (accuracies, the settings that tell runs of a method apart,
wall time) and the table that prints them in the terminal's width."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from mmtool.analysis.run_records import Run, _number
from mmtool.analysis.setups import recipe_differences, setup, show
from mmtool.errors import UserError


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
