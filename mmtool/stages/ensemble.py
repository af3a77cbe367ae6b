"""`mmtool ensemble`: UME, combining the predictions of separately trained uni-modal models.

Plain average of softmax probabilities by default (paper 000, App. A.2); ``ensemble.weights`` gives a
weighted average (weights are normalised to sum to one).
"""

from __future__ import annotations

from pathlib import Path

from mmtool.analysis import plots
from mmtool.config import Recipe
from mmtool.engine.evaluate import accuracy, confusion_matrix
from mmtool.errors import UserError
from mmtool.models.heads import average_log_probs
from mmtool.stages.common import finish, teachers_and_data, unimodal_predictions


def run(recipe: Recipe, run_dir: Path) -> dict:
    data, device, models = teachers_and_data(recipe)
    modalities = list(models)
    weights = _weights(recipe, modalities)
    result = {"stage": "ensemble", "dataset": data.name, "members": modalities, "weights": weights}
    for split in ("val", "test"):
        target = data.splits[split].target
        logits = unimodal_predictions(models, data.splits[split], device)
        fused = average_log_probs(list(logits.values()), weights)
        result[f"{split}_member_accuracy"] = {m: accuracy(z, target) for m, z in logits.items()}
        result[f"{split}_accuracy"] = accuracy(fused, target)
        if split == "test":
            result["test_confusion"] = confusion_matrix(fused, target, data.num_classes)
    plots.confusion(result["test_confusion"], run_dir / "plots" / "confusion.png", f"UME on {data.name}, test")
    members = ", ".join(f"{m} {a:.2f}%" for m, a in result["test_member_accuracy"].items())
    result["summary"] = [f"UME on {data.name}: test {result['test_accuracy']:.2f}%  (members: {members})"]
    return finish(run_dir, result)


def _weights(recipe: Recipe, modalities: list[str]) -> list[float]:
    w = list(recipe.ensemble.weights) or [1.0] * len(modalities)
    if len(w) != len(modalities) or any(x < 0 for x in w) or sum(w) <= 0:
        raise UserError(
            f"{recipe.source}: key 'ensemble.weights' needs {len(modalities)} non-negative numbers, got {w}"
        )
    return [x / sum(w) for x in w]
