"""`mmtool utilization`: conditional utilization rates of a trained fusion model (see
:mod:`mmtool.analysis.utilization` for the late-fusion adaptation of Wu et al. 2022, Def. 4.1)."""

from __future__ import annotations

from pathlib import Path

from mmtool.analysis import plots
from mmtool.analysis.utilization import utilization_rates
from mmtool.config import Recipe
from mmtool.data import load_dataset
from mmtool.engine.checkpoint import load_model
from mmtool.engine.runtime import Runtime
from mmtool.errors import UserError
from mmtool.stages.common import check_same_data, expect_run, finish


def run(recipe: Recipe, run_dir: Path) -> dict:
    source = expect_run(recipe.run, "run", ("train",)).path
    check_same_data(recipe, source, "run")
    data = load_dataset(recipe.data)
    runtime = Runtime.from_config(recipe.train)
    model, _ = load_model(source)
    if len(model.modalities) != 2:
        raise UserError(f"run: utilization rates need a two-modality model, {source} has {model.modalities}")
    runtime.prepare_model(model)
    splits = {k: s.select(model.modalities) for k, s in data.splits.items()}
    rates = utilization_rates(model, splits["train"], splits["test"], runtime)
    a, b = rates["modalities"]
    figure = plots.utilization(rates, run_dir / "plots" / "utilization.png", f"{source} on {data.name}, test")
    summary = [
        f"A(f) {rates['accuracy']:.2f}%  only {a} {rates[f'accuracy_only_{a}']:.2f}%  "
        f"only {b} {rates[f'accuracy_only_{b}']:.2f}%",
        f"u({b}|{a}) {rates[f'u({b}|{a})']:.3f}  u({a}|{b}) {rates[f'u({a}|{b})']:.3f}  d_util {rates['d_util']:+.3f}",
        f"plot: {figure}",
    ]
    return finish(
        run_dir, {"stage": "utilization", "dataset": data.name, "source": str(source), **rates, "summary": summary}
    )
