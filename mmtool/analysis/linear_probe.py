"""Linear classifiers on frozen features, trained through the one training loop."""

from __future__ import annotations

from pathlib import Path

import torch

from mmtool.config import OptimConfig, ProbeConfig, ScheduleConfig, TrainConfig
from mmtool.data import ArraySource
from mmtool.engine.inference import run_inference
from mmtool.engine.loop import fit, selected_model
from mmtool.engine.runtime import Runtime
from mmtool.methods import MethodContext, build_method
from mmtool.models import MultiModalNet, build_model
from mmtool.runs import Layout


def train_linear_classifier(
    features: dict[str, ArraySource], num_classes: int, cfg: ProbeConfig, seed: int, out: Layout | Path,
    runtime: Runtime,
) -> MultiModalNet:
    """Fit a linear head on cached features (all modalities in ``features``), select on validation.

    The features are small and in memory: the classifier trains on the command's device in fp32, in one
    process (:meth:`Runtime.on_this_process`; every rank fits the same one), and is returned on that device
    (run it with :func:`predict`).

    With several modalities this is the paper's multi-modal linear classifier on frozen encoders
    (Sec. 3.3); its per-modality blocks are the split-out uni-modal classifiers of Table 4.
    """
    train = features["train"]
    spec = {
        "modalities": {m: int(x.shape[1]) for m, x in train.inputs.items()},
        "num_classes": num_classes,
        "encoder": "identity",
        "encoder_args": {},
        "head": "linear",
        "head_args": {},
    }
    torch.manual_seed(seed)
    model = build_model(spec)
    method = build_method("naive", {}, MethodContext(num_classes=num_classes, modalities=tuple(spec["modalities"])))
    fitted = fit(
        model,
        method,
        train,
        features["val"],
        spec,
        out,
        OptimConfig(name=cfg.optim, lr=cfg.lr, weight_decay=cfg.weight_decay),
        ScheduleConfig(name="none"),
        TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, eval_every=1, checkpoint_every=0, seed=seed),
        runtime.on_this_process(),
        label="linear probe",
    )
    best = selected_model(fitted, out if isinstance(out, Layout) else Layout(out), spec)
    return runtime.on_this_process().prepare_model(best)


def predict(classifier: MultiModalNet, features: ArraySource, runtime: Runtime,
            want: tuple[str, ...] = ("logits",)) -> dict:  # fmt: skip
    """A classifier's outputs on cached features, as it was trained: fp32, in one process."""
    return run_inference(classifier, features, runtime.on_this_process(), want=want)
