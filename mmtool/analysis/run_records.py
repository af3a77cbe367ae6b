"""Finding runs on disk and reading each into a :class:`Run`: what `mmtool runs` and `mmtool report` know
about it (stage, dataset, method, seed, status, wall time, recipe, results).

A run folder is any folder holding config.yaml; the search does not descend into one, so a pretrain run's
per-modality sub-folders belong to their run. Only files are read here (no torch): listing is instant.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from mmtool.analysis.setups import _get
from mmtool.errors import UserError
from mmtool.runs import find_runs, listed, read_sessions, run_status

STAGE_ALIASES = {"pretrain-unimodal": "pretrain"}  # command names accepted for --stage


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


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
