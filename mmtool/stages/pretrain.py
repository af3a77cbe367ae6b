"""`mmtool pretrain-unimodal`: one model per modality, with the same encoder as in fusion.

Each modality trains in its own sub-folder of the run (``<run>/<modality>/``) through the shared loop;
the run's results.json lists the modalities, which is what `decide`, `ensemble` and UMT read.
"""

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
from mmtool.stages.common import finish, modalities_of, seed_everything


def run(recipe: Recipe, run_dir: Path, resume: bool = False) -> dict:
    data = load_dataset(recipe.data)
    device = resolve_device(recipe.train.device)
    per_modality = {}
    for m in modalities_of(recipe, data):
        out = run_dir / m
        seed_everything(recipe.train.seed)
        spec = model_spec(recipe.model, data.input_dims, data.num_classes, [m])
        model = build_model(spec)
        context = MethodContext(num_classes=data.num_classes, modalities=(m,))
        method = build_method(recipe.method.name, recipe.method.params, context)
        splits = {k: s.select([m]) for k, s in data.splits.items()}
        fitted = fit(
            model,
            method,
            splits["train"],
            splits["val"],
            spec,
            out,
            recipe.optim,
            recipe.schedule,
            recipe.train,
            device,
            resume=resume,
            label=f"uni-modal {m}",
        )
        best, _ = load_model(out)
        plots.training_curves(out / "metrics.jsonl", run_dir / "plots" / f"curves_{m}.png", f"uni-modal {m} on {data.name}")
        per_modality[m] = _scores(best.to(device), splits, data.num_classes, device) | {"best_epoch": fitted.best_epoch}
    for m, r in per_modality.items():
        plots.confusion(r["test_confusion"], run_dir / "plots" / f"confusion_{m}.png", f"uni-modal {m}, test")
    summary = [
        f"uni-modal {m}: test {r['test_accuracy']:.2f}%  (val {r['val_accuracy']:.2f}%)"
        for m, r in per_modality.items()
    ]
    return finish(run_dir, {"stage": "pretrain", "dataset": data.name, "modalities": per_modality, "summary": summary})


def _scores(model, splits, num_classes: int, device) -> dict:
    scores = {}
    for name, split in splits.items():
        pred = predict(model, split, device)
        scores[f"{name}_accuracy"] = accuracy(pred["logits"], pred["target"])
        if name == "test":
            scores["test_confusion"] = confusion_matrix(pred["logits"], pred["target"], num_classes)
    return scores
