"""G-Blending: the loss weights follow the measured overfitting-to-generalisation ratio."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmtool.data import Batch
from mmtool.errors import UserError
from mmtool.methods import MethodContext, build_method
from mmtool.methods.gblending import blend_weights
from tests.unit.conftest import measure_on


def test_blend_weights_formula():
    prev = {"fused": (0.9, 1.0), "m1": (0.8, 1.0), "m2": (0.7, 1.0)}
    now = {"fused": (0.5, 0.8), "m1": (0.2, 0.9), "m2": (0.6, 1.1)}
    # G = 0.2, O = 0.3 - 0.1 = 0.2 -> 5 ; G = 0.1, O = 0.7 - 0.2 = 0.5 -> 0.4 ; m2 got worse -> 0
    w = blend_weights(prev, now, eps=1e-8)
    assert w["fused"] == pytest.approx(5 / 5.4) and w["m1"] == pytest.approx(0.4 / 5.4) and w["m2"] == 0.0
    assert blend_weights(prev, {k: (0.1, 2.0) for k in prev}, eps=1e-8) is None


def _losses_by_hand(model, heads, split):
    with torch.no_grad():
        out = model(split.inputs)
        logits = {"fused": out["logits"], **{m: h(out["features"][m]) for m, h in heads.items()}}
        return {k: F.cross_entropy(z, split.target).item() for k, z in logits.items()}


def test_weights_follow_measured_ratio(make_model, alpha_splits):
    model, _ = make_model(head="linear")
    ctx = MethodContext(num_classes=2, modalities=("m1", "m2"), measure=measure_on(alpha_splits))
    method = build_method("gblending", {"super_epoch": 3}, ctx)
    method.setup(model)
    assert method.weights == pytest.approx({"fused": 1 / 3, "m1": 1 / 3, "m2": 1 / 3})
    opt = torch.optim.SGD(method.param_groups(model), lr=0.2)
    train, val = alpha_splits["train"], alpha_splits["val"]
    aux = model.extras["aux"]  # the per-modality heads setup attached to the model
    before = {k: (_losses_by_hand(model, aux, train)[k], v) for k, v in _losses_by_hand(model, aux, val).items()}
    batch = Batch(train.inputs, train.target)
    for epoch in (1, 2, 3):
        method.on_epoch_start(model, epoch)
        loss = sum(method.training_step(model, batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    lt, lv = _losses_by_hand(model, aux, train), _losses_by_hand(model, aux, val)
    method.on_epoch_start(model, 4)  # a new super-epoch: weights re-estimated
    raw = {}
    for k in lt:
        gain = before[k][1] - lv[k]
        overfit = (lv[k] - lt[k]) - (before[k][1] - before[k][0])
        raw[k] = gain / max(overfit**2, 1e-8) if gain > 0 else 0.0
    expected = {k: v / sum(raw.values()) for k, v in raw.items()}
    assert method.weights == pytest.approx(expected, rel=1e-4)
    assert method.epoch_metrics() == {f"blend_weight_{k}": w for k, w in method.weights.items()}
    losses = method.training_step(model, batch)
    out = model(batch.inputs)
    assert losses["task_loss"].item() == pytest.approx(
        expected["fused"] * F.cross_entropy(out["logits"], batch.target).item(), rel=1e-4
    )


def test_needs_splits():
    with pytest.raises(UserError):
        build_method("gblending", {}, MethodContext(num_classes=2))
