"""`mmtool probe`: linear evaluation of frozen encoders, from a uni-modal run or out of a fusion run.

With ``probe.over_training: true`` every snapshot the run kept (``train.snapshot_every``) is probed, and
the accuracy curves are plotted per modality (paper 000, Fig. 2); ``teachers=RUN`` adds the curves (or,
without snapshots, the final probes) of a uni-modal run as the reference.
"""

from __future__ import annotations

from pathlib import Path

from mmtool.analysis import plots
from mmtool.analysis.linear_probe import train_linear_classifier
from mmtool.config import Recipe
from mmtool.data import Dataset, load_dataset
from mmtool.engine.evaluate import accuracy
from mmtool.engine.inference import run_inference
from mmtool.engine.runtime import Runtime
from mmtool.errors import UserError
from mmtool.models import MultiModalNet
from mmtool.stages.common import (
    check_same_data,
    encoder_snapshots,
    finish,
    frozen_features,
    load_encoders,
    modalities_of,
)


def run(recipe: Recipe, run_dir: Path) -> dict:
    data = load_dataset(recipe.data)
    runtime = Runtime.from_config(recipe.train)
    check_same_data(recipe, recipe.run, "run")
    if recipe.probe.over_training:
        return finish(run_dir, _over_training(recipe, data, run_dir, runtime))
    probes = probe_encoders(recipe, data, *load_encoders(recipe.run), run_dir / "probes", runtime)
    figure = plots.grouped_bars(
        {m: {k.removesuffix("_accuracy"): v for k, v in p.items()} for m, p in probes.items()},
        run_dir / "plots" / "probe.png",
        f"linear probes of {recipe.run} on {data.name}",
    )
    summary = [
        f"probe {m}: train {p['train_accuracy']:.2f}%  test {p['test_accuracy']:.2f}%" for m, p in probes.items()
    ] + [f"plot: {figure}"]
    result = {"stage": "probe", "dataset": data.name, "source": str(recipe.run), "probes": probes, "summary": summary}
    return finish(run_dir, result)


def probe_encoders(
    recipe: Recipe,
    data: Dataset,
    models: dict[str, MultiModalNet],
    cache: dict[str, Path] | None,
    out_dir: Path,
    runtime: Runtime,
) -> dict[str, dict[str, float]]:
    """A linear classifier per modality on its frozen encoder (``models[m].encode``); accuracy on every
    split. Features come from :func:`frozen_features` (cached in the source run when ``cache`` says where)."""
    chosen = [m for m in modalities_of(recipe, data) if m in models]
    features = frozen_features(recipe, {m: models[m] for m in chosen}, data, runtime, cache)
    probes = {}
    for m in chosen:
        feats = {k: s.select([m]) for k, s in features.items()}
        clf = train_linear_classifier(feats, data.num_classes, recipe.probe, recipe.train.seed, out_dir / m)
        probes[m] = {f"{k}_accuracy": _acc(clf, s) for k, s in feats.items()}
    return probes


def _curves(recipe: Recipe, data: Dataset, source, out_dir: Path, runtime: Runtime) -> dict[str, list[dict]]:
    curves: dict[str, list[dict]] = {}
    for epoch, models in encoder_snapshots(source):
        for m, scores in probe_encoders(recipe, data, models, None, out_dir / f"epoch_{epoch}", runtime).items():
            curves.setdefault(m, []).append({"epoch": epoch, **scores})
    return curves


def _over_training(recipe: Recipe, data: Dataset, run_dir: Path, runtime: Runtime) -> dict:
    curves = _curves(recipe, data, recipe.run, run_dir / "probes", runtime)
    if not curves:
        raise UserError(f"run: {recipe.run} kept no snapshots (train it with train.snapshot_every=K)")
    reference: dict[str, list[dict]] = {}
    if recipe.teachers:
        check_same_data(recipe, recipe.teachers, "teachers")
        reference = _curves(recipe, data, recipe.teachers, run_dir / "reference", runtime)
        if not reference:  # no snapshots: the final encoders, drawn as a level line
            final = probe_encoders(recipe, data, *load_encoders(recipe.teachers), run_dir / "reference", runtime)
            reference = {m: [{"epoch": None, **s}] for m, s in final.items()}
    for m, points in curves.items():
        plots.probe_curves(
            points, reference.get(m, []), run_dir / "plots" / f"probe_{m}.png", f"{m} encoder on {data.name}"
        )
    summary = [
        f"probe {m} over training: test {pts[0]['test_accuracy']:.2f}% (epoch {pts[0]['epoch']}) -> "
        f"{pts[-1]['test_accuracy']:.2f}% (epoch {pts[-1]['epoch']})"
        for m, pts in curves.items()
    ]
    summary += [f"uni-modal reference {m}: test {pts[-1]['test_accuracy']:.2f}%" for m, pts in reference.items()]
    return {
        "stage": "probe",
        "dataset": data.name,
        "source": str(recipe.run),
        "curves": curves,
        "reference": reference,
        "summary": summary,
    }


def _acc(model, split) -> float:
    pred = run_inference(model, split, want=("logits",))
    return accuracy(pred["logits"], pred["target"])
