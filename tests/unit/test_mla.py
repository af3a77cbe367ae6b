"""MLA: alternating modalities, RLS head-gradient projection, entropy-weighted test-time fusion."""

from __future__ import annotations

import pytest
import torch

from mmtool.data import Batch
from mmtool.errors import UserError
from mmtool.methods import MethodContext, build_method
from mmtool.methods.mla import rls_update
from mmtool.models.heads import entropy_weighted_logits, entropy_weights


def _step(model, method, batch):
    model.zero_grad(set_to_none=True)
    sum(method.training_step(model, batch).values()).backward()
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    feature = method._mean_feature.clone()
    method.after_backward(model, 0)
    return grads, feature


def test_alternation_and_orthogonal_head_gradient(make_model, alpha_splits):
    model, _ = make_model(head="shared")
    method = build_method("mla", {"alpha": 1.0e-6}, MethodContext(num_classes=2, modalities=("m1", "m2")))
    method.setup(model)
    batch = Batch(alpha_splits["train"].inputs, alpha_splits["train"].target)

    raw0, h0 = _step(model, method, batch)  # t = 0: modality m1, gradient not projected
    assert raw0["encoders.m2.net.0.weight"] is None and raw0["encoders.m1.net.0.weight"] is not None
    assert torch.equal(model.head.linear.weight.grad, raw0["head.linear.weight"])

    raw1, _ = _step(model, method, batch)  # t = 1: modality m2, projected with P built from m1's mean feature
    assert raw1["encoders.m1.net.0.weight"] is None and raw1["encoders.m2.net.0.weight"] is not None
    projected = model.head.linear.weight.grad  # (C, s)
    raw = raw1["head.linear.weight"]
    shrink = 1.0e-6 / (1.0e-6 + h0 @ h0)  # P_1 h0 = h0 * alpha / (alpha + |h0|^2), Eq. 5
    assert torch.allclose(projected @ h0, (raw @ h0) * shrink, atol=1e-9)
    assert (projected @ h0).norm() < 1e-3 * (raw @ h0).norm()  # orthogonal to the previous modality's feature
    assert not torch.allclose(projected, raw)


def test_rls_matches_its_closed_form():
    torch.manual_seed(0)
    p = torch.eye(5)
    h = torch.randn(5)
    new = rls_update(p, h, alpha=0.5)
    expected = torch.eye(5) - torch.outer(h, h) / (0.5 + h @ h)  # P_0 = I
    assert torch.allclose(new, expected, atol=1e-6)
    assert torch.allclose(new @ h, h * 0.5 / (0.5 + h @ h), atol=1e-6)


def test_entropy_weights_follow_eq_8():
    confident = torch.tensor([[8.0, 0.0, 0.0]])
    unsure = torch.tensor([[0.1, 0.0, 0.0]])
    w = entropy_weights([confident, unsure])  # (K=2, B=1)
    e = [-(torch.softmax(z, -1) * torch.log_softmax(z, -1)).sum() for z in (confident, unsure)]
    top = max(e)
    expected = torch.stack([torch.exp(top - x) for x in e])
    expected = expected / expected.sum()
    assert torch.allclose(w[:, 0], expected, atol=1e-6) and w[0, 0] > w[1, 0]
    fused = entropy_weighted_logits([confident, unsure])
    assert torch.allclose(fused, expected[0] * confident + expected[1] * unsure, atol=1e-6)


def test_shared_head_fuses_by_entropy(make_model, alpha_splits):
    model, _ = make_model(head="shared")
    out = model(alpha_splits["val"].inputs)
    uni = out["unimodal_logits"]
    assert torch.allclose(out["logits"], entropy_weighted_logits([uni["m1"], uni["m2"]]))
    with pytest.raises(UserError, match="shared"):
        build_method("mla", {}, MethodContext(modalities=("m1", "m2"))).setup(make_model(head="linear")[0])
