"""`mmtool probe`: linear evaluation of frozen encoders, from a uni-modal run or out of a fusion run.

With ``probe.over_training: true`` every snapshot the run kept (``train.snapshot_every``) is probed, and
the accuracy curves are plotted per modality (paper 000, Fig. 2); ``teachers=RUN`` adds the curves (or,
without snapshots, the final probes) of a uni-modal run as the reference.
"""

from __future__ import annotations

from mmtool.analysis import plots
from mmtool.analysis.linear_probe import predict, train_linear_classifier
from mmtool.analysis.modality_gap import modality_gaps
from mmtool.config import Recipe
from mmtool.data import ArraySource, Dataset, load_dataset
from mmtool.engine.evaluate import accuracy, confusion_matrix
from mmtool.engine.features import frozen_features
from mmtool.engine.models_io import encoder_snapshots, encoders_of
from mmtool.engine.runtime import Runtime
from mmtool.engine.train import modalities_of
from mmtool.errors import UserError
from mmtool.models import MultiModalNet
from mmtool.runs import Layout, Run


def run(recipe: Recipe, run: Run, runtime: Runtime) -> dict:
    data = load_dataset(recipe.data)
    source = Run.open(recipe.run, key="run")
    source.check_same_data(recipe, "run")
    if recipe.probe.over_training:
        return _over_training(recipe, data, source, run, runtime)
    models, cache = encoders_of(source)
    chosen = [m for m in modalities_of(recipe, data) if m in models]
    features = frozen_features(recipe, {m: models[m] for m in chosen}, data, runtime, cache)  # once, for both
    probes = probe_encoders(recipe, data, models, cache, run.part("probes"), runtime, confusion=True,
                            features=features)  # fmt: skip
    gaps = _gaps(recipe, data, features["test"], run)
    figure = plots.grouped_bars(
        {m: {k.removesuffix("_accuracy"): v for k, v in p.items() if k.endswith("_accuracy")}
         for m, p in probes.items()},
        run.plot("probe.png"),
        f"linear probes of {recipe.run} on {data.name}",
    )
    summary = [
        f"probe {m}: train {p['train_accuracy']:.2f}%  test {p['test_accuracy']:.2f}%" for m, p in probes.items()
    ] + [f"plot: {figure}"]
    summary += [f"modality gap {pair}: {g:.4f}" for pair, g in gaps["modality_gap"].items()]
    return {"stage": "probe", "dataset": data.name, "source": str(recipe.run), "probes": probes, **gaps,
            "summary": summary}  # fmt: skip


def _gaps(recipe: Recipe, data: Dataset, test: ArraySource, run: Run) -> dict:
    """The modality gap (paper 003 Fig. 3; :mod:`mmtool.analysis.modality_gap`) of the encoders' test features
    (the probes'), for every pair of modalities with equal feature sizes, and its plot."""
    gaps = modality_gaps(test.inputs, test.present)
    if gaps["modality_gap"]:
        plots.bars(gaps["modality_gap"], run.plot("modality_gap.png"), f"modality gap of {recipe.run} on {data.name}",
                   ylabel="|mean(x/|x|) - mean(y/|y|)|", fmt=".3f")  # fmt: skip
    return gaps


def probe_encoders(
    recipe: Recipe,
    data: Dataset,
    models: dict[str, MultiModalNet],
    cache: dict[str, Layout] | None,
    out: Layout,
    runtime: Runtime,
    confusion: bool = False,
    features: dict[str, ArraySource] | None = None,
) -> dict[str, dict]:
    """A linear classifier per modality on its frozen encoder (``models[m].encode``); accuracy on every
    split, and with ``confusion`` the test confusion matrix (per-class results: paper 001, Fig. 2). Features
    come from :func:`frozen_features` (cached in the source run when ``cache`` says where) unless given."""
    chosen = [m for m in modalities_of(recipe, data) if m in models]
    if features is None:
        features = frozen_features(recipe, {m: models[m] for m in chosen}, data, runtime, cache)
    probes = {}
    for m in chosen:
        feats = {k: s.select([m]) for k, s in features.items()}
        clf = train_linear_classifier(feats, data.num_classes, recipe.probe, recipe.train.seed, out.part(m), runtime)
        probes[m] = {f"{k}_accuracy": _acc(clf, s, runtime) for k, s in feats.items()}
        if confusion:
            pred = predict(clf, feats["test"], runtime)
            probes[m]["test_confusion"] = confusion_matrix(pred["logits"], pred["target"], data.num_classes)
    return probes


def _curves(recipe: Recipe, data: Dataset, source: Run, out: Layout, runtime: Runtime) -> dict[str, list[dict]]:
    curves: dict[str, list[dict]] = {}
    for epoch, models in encoder_snapshots(source):
        for m, scores in probe_encoders(recipe, data, models, None, out.part(f"epoch_{epoch}"), runtime).items():
            curves.setdefault(m, []).append({"epoch": epoch, **scores})
    return curves


def _over_training(recipe: Recipe, data: Dataset, source: Run, run: Run, runtime: Runtime) -> dict:
    curves = _curves(recipe, data, source, run.part("probes"), runtime)
    if not curves:
        raise UserError(f"run: {recipe.run} kept no snapshots (train it with train.snapshot_every=K)")
    reference = _reference(recipe, data, run.part("reference"), runtime) if recipe.teachers else {}
    for m, points in curves.items():
        plots.probe_curves(points, reference.get(m, []), run.plot(f"probe_{m}.png"), f"{m} encoder on {data.name}")
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


def _reference(recipe: Recipe, data: Dataset, out: Layout, runtime: Runtime) -> dict[str, list[dict]]:
    """The uni-modal run's probe curves; without snapshots, its final encoders' probes (a level line)."""
    teachers = Run.open(recipe.teachers, key="teachers")
    teachers.check_same_data(recipe, "teachers")
    reference = _curves(recipe, data, teachers, out, runtime)
    if not reference:
        final = probe_encoders(recipe, data, *encoders_of(teachers), out, runtime)
        reference = {m: [{"epoch": None, **s}] for m, s in final.items()}
    return reference


def _acc(model: MultiModalNet, split, runtime: Runtime) -> float:
    pred = predict(model, split, runtime)
    return accuracy(pred["logits"], pred["target"])
