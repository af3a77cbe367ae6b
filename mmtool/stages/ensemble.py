"""`mmtool ensemble`: UME, combining the predictions of separately trained uni-modal models.

With ``run=RUN_DIR`` (a `mmtool train` run on the same data) the result also compares per class the
members, the ensemble and that fusion model (paper 000, Tables 2, 16, 17), written to per_class.md.

``ensemble.combine: mean`` (default) averages softmax probabilities (paper 000, App. A.2), weighted by
``ensemble.weights`` when given (normalised to sum to one); ``entropy`` weights each sample's uni-modal
logits by their prediction entropy (MLA, paper 003 Eq. 6-8).
"""

from __future__ import annotations

from mmtool.analysis import plots
from mmtool.analysis.per_class import compare_classes, markdown, per_class_accuracy
from mmtool.config import Recipe
from mmtool.data import Dataset, load_dataset
from mmtool.data.views import views_report
from mmtool.engine.evaluate import accuracy, confusion_matrix
from mmtool.engine.inference import run_inference, unimodal_predictions
from mmtool.engine.models_io import fusion_model, teachers_of
from mmtool.engine.runtime import Runtime
from mmtool.engine.train import modalities_of
from mmtool.errors import UserError
from mmtool.files import atomic_write_text
from mmtool.models.heads import average_log_probs, entropy_weighted_logits
from mmtool.runs import Run


def run(recipe: Recipe, run: Run, runtime: Runtime) -> dict:
    data = load_dataset(recipe.data)
    models = teachers_of(recipe, modalities_of(recipe, data))
    modalities = list(models)
    weights = _weights(recipe, modalities)
    result = {"stage": "ensemble", "dataset": data.name, "members": modalities, "combine": recipe.ensemble.combine,
              **views_report(recipe.data.settings)}  # fmt: skip
    if recipe.ensemble.combine == "mean":
        result["weights"] = weights
    for split in ("val", "test"):
        target = data.splits[split].targets()
        logits = unimodal_predictions(models, data.splits[split], runtime)
        fused = _combine(recipe, list(logits.values()), weights, _masks(data.splits[split], logits))
        result[f"{split}_member_accuracy"] = {m: accuracy(z, target) for m, z in logits.items()}
        result[f"{split}_accuracy"] = accuracy(fused, target)
        if split == "test":
            result["test_confusion"] = confusion_matrix(fused, target, data.num_classes)
    if recipe.run is not None:
        result["per_class"] = _per_class(recipe, data, runtime, models, run)
    plots.confusion(result["test_confusion"], run.plot("confusion.png"), f"UME on {data.name}, test")
    members = ", ".join(f"{m} {a:.2f}%" for m, a in result["test_member_accuracy"].items())
    result["summary"] = [f"UME on {data.name}: test {result['test_accuracy']:.2f}%  (members: {members})"]
    return result


def _per_class(recipe: Recipe, data: Dataset, runtime: Runtime, models: dict, run: Run) -> dict:
    fusion, source = fusion_model(recipe)
    test = data.splits["test"]
    target = test.targets()
    members = unimodal_predictions(models, test, runtime)
    fused = run_inference(runtime.prepare_model(fusion), test.select(fusion.modalities), runtime, want=("logits",))
    rows = {f"uni-modal {m}": per_class_accuracy(z, target, data.num_classes) for m, z in members.items()}
    combined = _combine(recipe, list(members.values()), _weights(recipe, list(members)), _masks(test, members))
    rows["ensemble"] = per_class_accuracy(combined, target, data.num_classes)
    rows["fusion"] = per_class_accuracy(fused["logits"], target, data.num_classes)
    found = compare_classes(rows, [f"uni-modal {m}" for m in members], "fusion", "ensemble")
    text = "# Per-class test accuracy (%)\n\n" + markdown(rows)
    for title, key in (("Fusion beats the sum of the uni-modal models", "fusion_beats_sum_of_unimodal"),
                       ("The ensemble beats fusion", "average_beats_fusion")):  # fmt: skip
        text += f"\n## {title}: {len(found[key])} classes\n\n" + (
            markdown(rows, found[key]) if found[key] else "none\n"
        )
    atomic_write_text(run.file("per_class.md"), text)
    return {"fusion_run": str(source.path), "accuracy": rows, **found}


def _masks(split, members: dict) -> list | None:
    """Missing modalities (mmtool.data.missing): each member's presence mask, so that a sample's prediction
    combines the members whose modality it has (weights renormalised over them)."""
    return None if split.present is None else [split.present[m] for m in members]


def _combine(recipe: Recipe, logits: list, weights: list[float], present: list | None = None):
    if recipe.ensemble.combine == "mean":
        return average_log_probs(logits, weights, present)
    if recipe.ensemble.combine == "entropy":
        return entropy_weighted_logits(logits, present)
    raise UserError(f"{recipe.source}: key 'ensemble.combine' must be mean or entropy, got {recipe.ensemble.combine!r}")


def _weights(recipe: Recipe, modalities: list[str]) -> list[float]:
    w = list(recipe.ensemble.weights) or [1.0] * len(modalities)
    if len(w) != len(modalities) or any(x < 0 for x in w) or sum(w) <= 0:
        raise UserError(
            f"{recipe.source}: key 'ensemble.weights' needs {len(modalities)} non-negative numbers, got {w}"
        )
    return [x / sum(w) for x in w]
