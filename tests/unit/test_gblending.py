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
    floored = blend_weights(prev, now, eps=1e-8, min_weight=0.05)  # every head keeps 0.05; 0.85 by the ratio
    assert floored == pytest.approx({"fused": 0.05 + 0.85 * 5 / 5.4, "m1": 0.05 + 0.85 * 0.4 / 5.4, "m2": 0.05})


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
    expected = {k: 0.05 + 0.85 * v / sum(raw.values()) for k, v in raw.items()}  # min_weight 0.05, three heads
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


def _fused_val_loss(model, split):
    with torch.no_grad():
        return F.cross_entropy(model(split.inputs)["logits"], split.target).item()


@pytest.mark.parametrize("floor", [0.0, 0.05])
def test_plateaued_head_recovers(make_model, alpha_splits, floor):
    """The fused head is still on its plateau at the first estimate (its held-out loss has not improved):
    without a floor its weight is 0, it gets no gradient and can never improve; with one it keeps learning,
    its held-out loss falls and the next estimate gives it more than the floor."""
    model, _ = make_model(head="linear")
    ctx = MethodContext(num_classes=2, modalities=("m1", "m2"), measure=measure_on(alpha_splits))
    method = build_method("gblending", {"super_epoch": 20, "min_weight": floor}, ctx)
    method.setup(model)
    method.on_epoch_start(model, 1)  # the starting point
    flat = {k: (lt, lv) for k, (lt, lv) in method.measured.items()}
    stalled = {"fused": flat["fused"], **{m: (lt - 0.1, lv - 0.1) for m, (lt, lv) in flat.items() if m != "fused"}}
    method.weights = blend_weights(flat, stalled, eps=1e-8, min_weight=floor)  # the estimate on the plateau
    assert method.weights["fused"] == floor
    head_before = model.head.bias.detach().clone()
    loss_before = _fused_val_loss(model, alpha_splits["val"])
    opt = torch.optim.SGD(method.param_groups(model), lr=1.0)
    batch = Batch(alpha_splits["train"].inputs, alpha_splits["train"].target)
    for epoch in range(2, 21):
        method.on_epoch_start(model, epoch)
        loss = sum(method.training_step(model, batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    method.on_epoch_start(model, 21)  # the next estimate
    if floor == 0:
        assert torch.equal(model.head.bias, head_before)  # weight 0: the fused head never moves
    else:
        assert _fused_val_loss(model, alpha_splits["val"]) < loss_before
        assert method.weights["fused"] > floor


def test_min_weight_leaves_room_for_the_ratio(make_model, alpha_splits):
    ctx = MethodContext(num_classes=2, modalities=("m1", "m2"), measure=measure_on(alpha_splits))
    with pytest.raises(UserError, match="min_weight"):
        build_method("gblending", {"min_weight": 0.4}, ctx).setup(make_model(head="linear")[0])
