"""Where ``data/`` and ``runs/`` are, wherever a command is started from.

A recipe names them relatively (``data.root: data``, ``runs_root: runs``, or ``data/smoke`` for fixture
caches). Such a path is resolved against the *project root*: the nearest of the current directory and
its parents that holds an ``.mmtool`` marker (a file or folder a user may create) or a ``recipes/``
folder, as git finds its ``.git``; without one, the current directory. So `mmtool probe` started from
``runs/train/`` of a checkout still finds ``data/`` and writes into ``runs/`` of the checkout, instead of
making new ones there. ``MMTOOL_DATA`` and ``MMTOOL_RUNS`` move the two folders anywhere (a scratch disk,
a shared dataset store): a relative root that starts with ``data`` (``runs``) is re-rooted there, so
``data/smoke`` becomes ``$MMTOOL_DATA/smoke``. Absolute paths are left as they are. Paths a user types
for a run (``--run``, ``--teachers``, ``--run-dir``) stay relative to the current directory, as a
shell's paths are.
"""

from __future__ import annotations

import os
from pathlib import Path

MARKERS = (".mmtool", "recipes")


def project_root(start: Path | None = None) -> Path:
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / m).exists() for m in MARKERS):
            return folder
    return here


def _resolve(value: str | Path, default: str, env_var: str) -> Path:
    path = Path(value)
    if path.is_absolute():
        return path
    moved = os.environ.get(env_var)
    if moved and path.parts and path.parts[0] == default:
        return Path(moved).joinpath(*path.parts[1:])
    root = project_root()
    return path if root == Path.cwd().resolve() else root / path  # keep relative paths relative when we can


def data_root(value: str | Path = "data") -> Path:
    """Where the dataset caches of ``data.root`` live (see the module docstring)."""
    return _resolve(value, "data", "MMTOOL_DATA")


def runs_root(value: str | Path = "runs") -> Path:
    """Where run folders of ``runs_root`` are created (see the module docstring)."""
    return _resolve(value, "runs", "MMTOOL_RUNS")
