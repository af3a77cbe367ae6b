"""`mmtool probe`: linear evaluation of frozen encoders, from a uni-modal run or out of a fusion run."""

from __future__ import annotations

from pathlib import Path

from mmtool.analysis.linear_probe import train_linear_classifier
from mmtool.config import Recipe
from mmtool.data import load_dataset
from mmtool.engine.evaluate import accuracy, predict, resolve_device
from mmtool.stages.common import check_same_data, feature_splits, finish, load_encoders, modalities_of


def run(recipe: Recipe, run_dir: Path) -> dict:
    data = load_dataset(recipe.data)
    device = resolve_device(recipe.train.device)
    encoders = load_encoders(recipe.run)
    check_same_data(recipe, recipe.run, "run")
    chosen = [m for m in modalities_of(recipe, data) if m in encoders]
    features = feature_splits({m: encoders[m] for m in chosen}, data, device)
    probes = {}
    for m in chosen:
        feats = {k: s.select([m]) for k, s in features.items()}
        clf = train_linear_classifier(
            feats, data.num_classes, recipe.probe, recipe.train.seed, run_dir / f"probe_{m}", device
        )
        probes[m] = {f"{k}_accuracy": _acc(clf, s, device) for k, s in feats.items()}
    summary = [
        f"probe {m}: train {p['train_accuracy']:.2f}%  test {p['test_accuracy']:.2f}%" for m, p in probes.items()
    ]
    return finish(
        run_dir,
        {"stage": "probe", "dataset": data.name, "source": str(recipe.run), "probes": probes, "summary": summary},
    )


def _acc(model, split, device) -> float:
    pred = predict(model, split, device)
    return accuracy(pred["logits"], pred["target"])
