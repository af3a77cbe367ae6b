"""`mmtool train METHOD`: train a multi-modal model with a registered method through the shared loop.

``ume`` with ``method.from_teachers: true`` (what a UME verdict of `mmtool decide` pipes in) trains
nothing: the run's model is the teachers' uni-modal models side by side, their predictions averaged
(paper 000, App. A.2), saved as an ordinary fusion checkpoint so every later stage reads it like any
other run, and scored on every split.
"""

from __future__ import annotations

from mmtool.analysis import plots
from mmtool.config import Recipe
from mmtool.data import Dataset, load_dataset
from mmtool.engine.evaluate import evaluate_splits
from mmtool.engine.models_io import teachers_of
from mmtool.engine.runtime import Runtime
from mmtool.engine.train import modalities_of, train_and_evaluate
from mmtool.errors import UserError
from mmtool.models import MultiModalNet, build_model, encoder_entries
from mmtool.runs import Run


def run(recipe: Recipe, run: Run, runtime: Runtime, resume: bool = False) -> dict:
    teacher_run = recipe.method.params.get("teacher_run")
    if teacher_run:  # a method distilling from another run must see the same data and split
        Run.open(teacher_run, key="method.teacher_run").check_same_data(recipe, "method.teacher_run")
    data = load_dataset(recipe.data)
    modalities = modalities_of(recipe, data)
    teachers = {}
    if recipe.teachers:
        teachers = {m: runtime.prepare_model(t) for m, t in teachers_of(recipe, modalities).items()}
    name = recipe.method.name
    if name == "ume" and recipe.method.params.get("from_teachers"):
        scores = assemble_ensemble(recipe, data, modalities, teachers, run, runtime)
    else:
        scores = train_and_evaluate(recipe, data, modalities, run, runtime, resume, name, teachers)
    summary = [
        f"{name} on {data.name}: test {scores['test_accuracy']:.2f}%  "
        f"(val {scores['val_accuracy']:.2f}%, {_how(scores)})"
    ]
    return {"stage": "train", "dataset": data.name, "method": name, **scores, "summary": summary}


def _how(scores: dict) -> str:
    """How the model was selected: its best validation epoch, or that nothing was trained."""
    if "assembled_from" in scores:  # no epoch was run, so none was best
        return "trains nothing: averages the uni-modal models' predictions"
    return f"best epoch {scores['best_epoch']}"


def assemble_ensemble(recipe: Recipe, data: Dataset, modalities: list[str], teachers: dict[str, MultiModalNet],
                      run: Run, runtime: Runtime) -> dict:  # fmt: skip
    """UME from trained uni-modal models: their encoders and heads under one ``members`` head."""
    if not teachers:
        raise UserError(
            f"{recipe.source}: method.from_teachers needs --teachers RUN_DIR (a `mmtool pretrain-unimodal` run)"
        )
    absent = [m for m in modalities if m not in teachers]
    if absent:
        raise UserError(f"teachers: {recipe.teachers} has no uni-modal model for {absent}")
    spec = ensemble_spec({m: teachers[m] for m in modalities})
    model = build_model(spec)
    for m in modalities:
        model.encoders[m].load_state_dict(teachers[m].encoders[m].state_dict())
        model.head.members[m].load_state_dict(teachers[m].head.state_dict())
    store = run.checkpoints()
    store.save_best({"model": model.state_dict(), "spec": spec, "epoch": 0, "val": {}})
    store.mark_complete({"epochs": 0, "best_epoch": 0, "best_val": {}, "assembled_from": recipe.teachers})
    splits = {k: s.select(modalities) for k, s in data.splits.items()}
    scores = evaluate_splits(runtime.prepare_model(model.eval()), splits, data.num_classes, runtime)
    plots.confusion(scores["test_confusion"], run.plot("confusion.png"), f"UME on {data.name}, test")
    return {"assembled_from": str(recipe.teachers), **scores}  # no best_epoch: no epoch was trained


def ensemble_spec(teachers: dict[str, MultiModalNet]) -> dict:
    """The spec of a model holding each teacher's encoder and head (read from the teachers' checkpoints)."""
    specs = {m: t.spec for m, t in teachers.items()}
    encoders = {m: encoder_entries(spec)[m] for m, spec in specs.items()}
    return {
        "modalities": {m: s["modalities"][m] for m, s in specs.items()},
        "num_classes": next(iter(specs.values()))["num_classes"],
        "encoders": encoders,
        "head": "members",
        "head_args": {"heads": {m: {"name": s["head"], "args": s["head_args"]} for m, s in specs.items()}},
        "fusion": "late",
    }
