"""Evaluation: predictions of a model on a split, accuracy, confusion matrices."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from mmtool.models import MultiModalNet


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def predict(
    model: MultiModalNet,
    split: Any,
    device: torch.device | str = "cpu",
    batch_size: int = 4096,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Run ``model`` over ``split``; returns float32 CPU ``logits`` (N, C), ``target`` (N,),
    ``features`` {m: (N, D)} and, when the head provides them, ``unimodal_logits`` {m: (N, C)}."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    parts: dict[str, list] = {"logits": [], "target": []}
    feats: dict[str, list] = {}
    uni: dict[str, list] = {}
    with autocast(device, precision):
        for batch in split.batches(batch_size):
            batch = batch.to(device)
            out = model(batch.inputs)
            parts["logits"].append(out["logits"].float().cpu())
            parts["target"].append(batch.target.cpu())
            for m, f in out["features"].items():
                feats.setdefault(m, []).append(f.float().cpu())
            for m, z in out.get("unimodal_logits", {}).items():
                uni.setdefault(m, []).append(z.float().cpu())
    model.train(was_training)
    result: dict[str, Any] = {k: torch.cat(v) for k, v in parts.items()}
    result["features"] = {m: torch.cat(v) for m, v in feats.items()}
    if uni:
        result["unimodal_logits"] = {m: torch.cat(v) for m, v in uni.items()}
    return result


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return float((logits.argmax(dim=1) == target).float().mean() * 100) if len(target) else float("nan")


def evaluate(
    model: MultiModalNet, split: Any, device: torch.device | str = "cpu", precision: str = "fp32"
) -> dict[str, float]:
    pred = predict(model, split, device, precision=precision)
    return {
        "loss": float(F.cross_entropy(pred["logits"], pred["target"])),
        "accuracy": accuracy(pred["logits"], pred["target"]),
    }


def confusion_matrix(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> list[list[int]]:
    """Counts: rows are actual classes, columns predicted classes."""
    pred = logits.argmax(dim=1)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    cm.index_put_((target, pred), torch.ones_like(target), accumulate=True)
    return cm.tolist()


def evaluate_splits(model: MultiModalNet, splits: dict, num_classes: int, device: torch.device | str) -> dict:
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
