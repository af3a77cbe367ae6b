"""`mmtool train METHOD`: train a multi-modal model with a registered method through the shared loop."""

from __future__ import annotations

from pathlib import Path

from mmtool.config import Recipe
from mmtool.data import load_dataset
from mmtool.engine.evaluate import resolve_device
from mmtool.stages.common import check_same_data, finish, load_unimodal_models, modalities_of, train_and_evaluate


def run(recipe: Recipe, run_dir: Path, resume: bool = False) -> dict:
    teacher_run = recipe.method.params.get("teacher_run")
    if teacher_run:  # a method distilling from another run must see the same data and split
        check_same_data(recipe, teacher_run, "method.teacher_run")
    data = load_dataset(recipe.data)
    modalities = modalities_of(recipe, data)
    teachers = {}
    if recipe.teachers:
        check_same_data(recipe, recipe.teachers, "teachers")
        device = resolve_device(recipe.train.device)
        teachers = {m: t.to(device) for m, t in load_unimodal_models(recipe.teachers).items() if m in modalities}
    name = recipe.method.name
    scores = train_and_evaluate(recipe, data, modalities, run_dir, resume, name, teachers)
    summary = [
        f"{name} on {data.name}: test {scores['test_accuracy']:.2f}%  "
        f"(val {scores['val_accuracy']:.2f}%, best epoch {scores['best_epoch']})"
    ]
    result = {"stage": "train", "dataset": data.name, "method": name, **scores, "summary": summary}
    return finish(run_dir, result)
