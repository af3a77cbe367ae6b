"""`mmtool utilization`: conditional utilization rates of a trained fusion model, one per modality (see
:mod:`mmtool.analysis.utilization` for the late-fusion adaptation of Wu et al. 2022, Def. 4.1, and its
generalisation to more than two modalities)."""

from __future__ import annotations

from mmtool.analysis import plots
from mmtool.analysis.utilization import utilization_rates
from mmtool.config import Recipe
from mmtool.data import load_dataset
from mmtool.engine.models_io import fusion_model
from mmtool.engine.runtime import Runtime
from mmtool.errors import UserError
from mmtool.runs import Run


def run(recipe: Recipe, run: Run, runtime: Runtime) -> dict:
    model, source_run = fusion_model(recipe)
    source = source_run.path
    data = load_dataset(recipe.data)
    if any(s.present is not None for s in data.splits.values()):  # rates replace modalities of complete samples
        raise UserError("utilization: data.missing_rate > 0; the rates are defined on complete data (set it to 0)")
    if len(model.modalities) < 2:
        raise UserError(f"run: utilization rates need two or more modalities, {source} has {model.modalities}")
    runtime.prepare_model(model)
    splits = {k: s.select(model.modalities) for k, s in data.splits.items()}
    rates = utilization_rates(model, splits["train"], splits["test"], runtime)
    figure = plots.utilization(rates, run.plot("utilization.png"), f"{source} on {data.name}, test")
    mods = rates["modalities"]
    summary = [
        f"A(f) {rates['accuracy']:.2f}%  " + "  ".join(f"only {m} {rates[f'accuracy_only_{m}']:.2f}%" for m in mods),
        "  ".join(f"{key} {_shown(u, '.3f')}" for key, u in _rate_keys(rates))
        + (f"  d_util {_shown(rates['d_util'], '+.3f')}" if "d_util" in rates else ""),
        f"plot: {figure}",
    ]
    return {"stage": "utilization", "dataset": data.name, "source": str(source), **rates, "summary": summary}


def _rate_keys(rates: dict) -> list[tuple[str, float]]:
    """``(u(m|others), rate)`` per modality, in the order of the modalities."""
    return [(k, v) for k, v in rates.items() if k.startswith("u(")]


def _shown(value: float | None, fmt: str) -> str:
    """A rate as printed; None (its accuracy was 0: undefined) as "undefined"."""
    return "undefined" if value is None else format(value, fmt)
