"""What counts as one setup when runs are compared over seeds (`mmtool report`, `mmtool runs`).

A report pools runs over seeds only: its groups are (dataset, method) and the resolved recipe (config.yaml)
with these keys left out:

* the seeds: every key named ``seed`` (``train.seed``, ``data.seed``). ``data.seed`` is pooled too although
  it decides the synthetic sets' samples and the validation split: the result tables' seed folders vary
  both together (the Makefile passes ``data.seed=k train.seed=k``; Table 20 says "data and training seed
  together"), so a report pools the same runs a table does (``--group-by`` naming data.seed keeps data
  seeds apart, grouping by the named keys alone);
* paths to each seed's own earlier runs (:data:`RUN_PATHS`): the teachers of seed 1 are not those of seed
  2, yet both runs are one setup;
* settings that do not change results (:data:`NOT_SETUP`: where files live, logging, checkpointing).

Runs of one (dataset, method) that differ anywhere else are not repeats of one experiment
(:func:`recipe_differences`); `mmtool runs` shows the keys on which they differ beside the method.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

# Recipe keys that do not make two runs different setups (see the module docstring); a key is left out
# with everything under it. Seeds: every key whose last part is SEED.
SEED = "seed"
RUN_PATHS = ("teachers", "run", "method.teacher_run")  # each seed's own earlier runs
NOT_SETUP = ("description", "runs_root", "data.root", "train.workers", "train.log_every", "train.loggers",
             "train.eval_batch_size", "train.checkpoint_every", "train.checkpoint_every_steps",
             "train.checkpoint_every_minutes", "train.keep_last", "train.snapshot_every",
             "train.keep_optimizer")  # fmt: skip


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


def _get(config: dict[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


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


def _flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
