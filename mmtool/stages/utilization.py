"""`mmtool utilization`: conditional utilization rates of a trained fusion model (see
:mod:`mmtool.analysis.utilization` for the late-fusion adaptation of Wu et al. 2022, Def. 4.1)."""

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
    if len(model.modalities) != 2:
        raise UserError(f"run: utilization rates need a two-modality model, {source} has {model.modalities}")
    runtime.prepare_model(model)
    splits = {k: s.select(model.modalities) for k, s in data.splits.items()}
    rates = utilization_rates(model, splits["train"], splits["test"], runtime)
    a, b = rates["modalities"]
    figure = plots.utilization(rates, run.plot("utilization.png"), f"{source} on {data.name}, test")
    summary = [
        f"A(f) {rates['accuracy']:.2f}%  only {a} {rates[f'accuracy_only_{a}']:.2f}%  "
        f"only {b} {rates[f'accuracy_only_{b}']:.2f}%",
        f"u({b}|{a}) {rates[f'u({b}|{a})']:.3f}  u({a}|{b}) {rates[f'u({a}|{b})']:.3f}  d_util {rates['d_util']:+.3f}",
        f"plot: {figure}",
    ]
    return {"stage": "utilization", "dataset": data.name, "source": str(source), **rates, "summary": summary}
