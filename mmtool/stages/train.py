"""`mmtool train METHOD`: train a multi-modal model with a registered method through the shared loop."""

from __future__ import annotations

from pathlib import Path

from mmtool.analysis import plots
from mmtool.config import Recipe
from mmtool.data import load_dataset
from mmtool.engine.checkpoint import load_model
from mmtool.engine.evaluate import accuracy, confusion_matrix, predict, resolve_device
from mmtool.engine.loop import fit
from mmtool.methods import MethodContext, build_method
from mmtool.models import build_model, model_spec
from mmtool.stages.common import check_same_data, finish, load_unimodal_models, modalities_of, seed_everything


def run(recipe: Recipe, run_dir: Path, resume: bool = False) -> dict:
    data = load_dataset(recipe.data)
    device = resolve_device(recipe.train.device)
    modalities = modalities_of(recipe, data)
    teachers = {}
    if recipe.teachers:
        check_same_data(recipe, recipe.teachers, "teachers")
        teachers = {m: t.to(device) for m, t in load_unimodal_models(recipe.teachers).items() if m in modalities}
    seed_everything(recipe.train.seed)
    spec = model_spec(recipe.model, data.input_dims, data.num_classes, modalities)
    model = build_model(spec)
    context = MethodContext(teachers=teachers, num_classes=data.num_classes, modalities=tuple(modalities))
    method = build_method(recipe.method.name, recipe.method.params, context)
    splits = {k: s.select(modalities) for k, s in data.splits.items()}
    fitted = fit(
        model,
        method,
        splits["train"],
        splits["val"],
        spec,
        run_dir,
        recipe.optim,
        recipe.schedule,
        recipe.train,
        device,
        resume=resume,
        label=f"train {recipe.method.name}",
    )
    best, _ = load_model(run_dir)
    title = f"{recipe.method.name} on {data.name}"
    plots.training_curves(run_dir / "metrics.jsonl", run_dir / "plots" / "curves.png", title)
    result = {"stage": "train", "dataset": data.name, "method": recipe.method.name, "best_epoch": fitted.best_epoch}
    result.update(evaluate_splits(best.to(device), splits, data.num_classes, device))
    plots.confusion(result["test_confusion"], run_dir / "plots" / "confusion.png", f"{title}, test")
    summary = [
        f"{recipe.method.name} on {data.name}: test {result['test_accuracy']:.2f}%  "
        f"(val {result['val_accuracy']:.2f}%, best epoch {fitted.best_epoch})"
    ]
    return finish(run_dir, result | {"summary": summary})


def evaluate_splits(model, splits, num_classes: int, device) -> dict:
    """Fused accuracy on every split; per-modality head accuracy where the head has one; test confusion."""
    out: dict = {}
    for name, split in splits.items():
        pred = predict(model, split, device)
        out[f"{name}_accuracy"] = accuracy(pred["logits"], pred["target"])
        for m, z in pred.get("unimodal_logits", {}).items():
            out.setdefault("unimodal_head_accuracy", {}).setdefault(m, {})[name] = accuracy(z, pred["target"])
        if name == "test":
            out["test_confusion"] = confusion_matrix(pred["logits"], pred["target"], num_classes)
    return out
