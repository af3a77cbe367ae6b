"""`mmtool decide`: the paper's rule for choosing UMT or UME (paper 000, Sec. 3.3 and 4.2).

A multi-modal linear classifier is trained on the frozen uni-modal encoders (modalities interact only
through that linear layer) and compared on test with averaging the uni-modal models' predictions (no
interaction). Classifier better -> UMT; otherwise -> UME. We also report the uni-modal classifiers split
out of the multi-modal linear layer (Table 4) and a paired bootstrap interval of the accuracy difference:
when it spans zero the rule still decides, but the result says plainly that the call is a coin flip.

Averaging "predictions" is read as averaging softmax probabilities (App. A.2 does not say which).
"""

from __future__ import annotations

import json

from torch import Tensor

from mmtool.analysis import plots
from mmtool.analysis.bootstrap import paired_bootstrap_diff
from mmtool.analysis.linear_probe import predict, train_linear_classifier
from mmtool.config import Recipe, relative_to_recipe
from mmtool.data import load_dataset
from mmtool.data.views import views_report
from mmtool.engine.evaluate import accuracy, confusion_matrix
from mmtool.engine.features import frozen_features
from mmtool.engine.inference import unimodal_predictions
from mmtool.engine.models_io import teachers_of
from mmtool.engine.runtime import Runtime
from mmtool.engine.train import modalities_of
from mmtool.models.heads import average_log_probs
from mmtool.runs import Run


def run(recipe: Recipe, run: Run, runtime: Runtime) -> dict:
    data = load_dataset(recipe.data)
    models = teachers_of(recipe, modalities_of(recipe, data))
    test = data.splits["test"]
    target = test.targets()

    uni_logits = unimodal_predictions(models, test, runtime)  # {m: (N, C)}
    masks = None if test.present is None else [test.present[m] for m in uni_logits]  # missing modalities
    avg_logits = average_log_probs(list(uni_logits.values()), present=masks)  # over the modalities there
    teachers = Run.open(recipe.teachers, key="teachers")
    cache = {m: teachers.modality(m) for m in models}  # features kept beside each teacher's checkpoint
    features = frozen_features(recipe, models, data, runtime, cache)
    clf = train_linear_classifier(features, data.num_classes, recipe.probe, recipe.train.seed, run.part("mm_linear"),
                                  runtime)  # fmt: skip
    clf_pred = predict(clf, features["test"], runtime, want=("logits", "unimodal_logits"))

    acc_clf, acc_avg = accuracy(clf_pred["logits"], target), accuracy(avg_logits, target)
    ci = paired_bootstrap_diff(clf_pred["logits"].argmax(1) == target, avg_logits.argmax(1) == target,
                               recipe.decide.bootstrap, recipe.decide.confidence, recipe.train.seed)  # fmt: skip
    verdict = "UMT" if acc_clf > acc_avg else "UME"
    coin_flip = ci["low"] <= 0 <= ci["high"]
    chosen = recipe.decide.umt_recipe if verdict == "UMT" else recipe.decide.ume_recipe
    chosen_recipe = relative_to_recipe(recipe, chosen)
    result = {
        "stage": "decide",
        "dataset": data.name,
        "verdict": verdict,
        "method": verdict.lower(),
        "recipe": str(chosen_recipe),
        "teachers": str(recipe.teachers),
        "mm_linear_accuracy": acc_clf,
        "average_accuracy": acc_avg,
        "unimodal_accuracy": {m: accuracy(z, target) for m, z in uni_logits.items()},
        "split_classifier_accuracy": {m: accuracy(z, target) for m, z in clf_pred["unimodal_logits"].items()},
        "test_confusion": _confusions(clf_pred["logits"], avg_logits, target, data.num_classes),
        "difference": ci,
        "coin_flip": coin_flip,
        "data_overrides": _data_overrides(recipe),
        **views_report(recipe.data.settings),
    }
    result["summary"] = _summary(result)
    shown = {f"uni-modal {m}": a for m, a in result["unimodal_accuracy"].items()}
    shown |= {f"split clf {m}": a for m, a in result["split_classifier_accuracy"].items()}
    shown |= {"avg preds (UME)": acc_avg, "MM linear clf": acc_clf}
    plots.bars(shown, run.plot("decide.png"), f"{data.name}: verdict {verdict}")
    return result


def _confusions(clf_logits: Tensor, avg_logits: Tensor, target: Tensor, num_classes: int) -> dict:
    """Test confusion matrices of the two predictors compared: per-class results (paper 000, Table 2's Linear Clf
    and Avg Pred rows)."""
    return {
        "mm_linear": confusion_matrix(clf_logits, target, num_classes),
        "average": confusion_matrix(avg_logits, target, num_classes),
    }


def _data_overrides(recipe: Recipe) -> list[str]:
    """Every data.* setting of the teachers, for the chosen training recipe: the same samples, split and
    inputs (image size, frames, ...) as the models decide compared."""
    return [f"data.{k}={_yaml_value(v)}" for k, v in recipe.data.flat().items() if v is not None]


def _yaml_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))  # a YAML flow list, e.g. [0, 6]
    return str(value)


def _summary(r: dict) -> list[str]:
    ci = r["difference"]
    lines = [
        f"verdict: {r['verdict']}  (multi-modal linear classifier {r['mm_linear_accuracy']:.2f}% vs "
        f"averaged uni-modal predictions {r['average_accuracy']:.2f}%)"
        + (f"; accuracy over {r['accuracy_over']}" if "accuracy_over" in r else ""),
        "uni-modal models: " + ", ".join(f"{m} {a:.2f}%" for m, a in r["unimodal_accuracy"].items()),
        "uni-modal classifiers split from the linear layer: "
        + ", ".join(f"{m} {a:.2f}%" for m, a in r["split_classifier_accuracy"].items()),
        f"difference {ci['diff']:+.2f} points, {ci['confidence']:.0%} paired bootstrap interval "
        f"[{ci['low']:+.2f}, {ci['high']:+.2f}]",
    ]
    if ci["low"] == ci["high"] == ci["diff"] == 0:  # not an interval around zero: no sample tells them apart
        lines.append(
            "the interval is a single point at zero: both are right and wrong on exactly the same test samples, "
            f"so this test set cannot tell them apart; on the tie the rule picks {r['verdict']}"
        )
    elif r["coin_flip"]:
        lines.append(
            "the interval spans zero: the rule picks " + r["verdict"] + ", but on this test set the call is a coin flip"
        )
    return lines
