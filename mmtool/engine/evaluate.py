"""Scores of a model on a split: accuracy, loss, confusion matrices, all from one inference pass."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mmtool.engine.inference import run_inference
from mmtool.engine.runtime import Runtime


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return float((logits.argmax(dim=1) == target).float().mean() * 100) if len(target) else float("nan")


def scores(pred: dict[str, Any]) -> dict[str, float]:
    """Cross-entropy and accuracy of an inference result's fused logits."""
    return {
        "loss": float(F.cross_entropy(pred["logits"], pred["target"])),
        "accuracy": accuracy(pred["logits"], pred["target"]),
    }


def evaluate(model: torch.nn.Module, split: Any, runtime: Runtime) -> dict[str, float]:
    return scores(run_inference(model, split, runtime, want=("logits",)))


def confusion_matrix(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> list[list[int]]:
    """Counts: rows are actual classes, columns predicted classes."""
    pred = logits.argmax(dim=1)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    cm.index_put_((target, pred), torch.ones_like(target), accumulate=True)
    return cm.tolist()


def evaluate_splits(model: torch.nn.Module, splits: dict, num_classes: int, runtime: Runtime) -> dict:
    """Fused accuracy on every split; per-modality head accuracy where the head has one; test confusion. A split
    read as several views per sample (multi-view testing) scores the samples (their views' mean prediction)
    and adds ``<split>_clip_accuracy``, the accuracy of single views."""
    out: dict = {}
    for name, split in splits.items():
        pred = run_inference(model, split, runtime, want=("logits", "unimodal_logits"))
        out[f"{name}_accuracy"] = accuracy(pred["logits"], pred["target"])
        if "logits" in pred.get("clip_accuracy", {}):
            out[f"{name}_clip_accuracy"] = pred["clip_accuracy"]["logits"]
            out.setdefault("views_per_sample", {})[name] = split.views
        for m, z in pred.get("unimodal_logits", {}).items():
            out.setdefault("unimodal_head_accuracy", {}).setdefault(m, {})[name] = accuracy(z, pred["target"])
        if name == "test":
            out["test_confusion"] = confusion_matrix(pred["logits"], pred["target"], num_classes)
    return out
