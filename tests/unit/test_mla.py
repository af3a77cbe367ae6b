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


# ------------------------------------------------------------------------------------------------------
# variant "code": parity with the authors' released implementation
#
# Golden values produced once by the authors' code, github.com/Cecile-hi/Multimodal-Learning-with-
# Alternating-Unimodal-Adaptation at commit ab6c184579f9ff390e9c9b8216c9900c2a43545b: ``GSPlugin.before_update``
# of utils/utils.py (run on CPU: its CUDA tensor type replaced by the CPU one, and ``Pl`` set to eye(4), the
# feature size here, instead of eye(512)) and ``calculate_gating_weights`` / ``calculate_gating_weights3`` of
# main.py, on the seeded inputs of ``_released_inputs`` and ``_released_logits``. The head was passed wrapped
# in a module whose weight is named "module.weight" (the name its test looks for) to run the projection, and
# bare (named "weight", as main.py passes it) for the released behaviour, where it never runs.

GOLDEN_P = [
    [-0.13614543, 0.01842335, 0.47269681, -0.07677300],
    [-0.13582259, 0.01640544, 0.47724301, -0.07660783],
    [-0.14008398, 0.04297503, 0.43502569, -0.07800215],
    [-0.13259822, 0.00622127, 0.50922078, -0.07558505],
]
GOLDEN_GRAD_2 = [  # update 2 (batch 0, second modality): the first that is projected
    [0.01246341, 0.08176309, -0.03773547, -0.02182043],
    [0.07701171, 0.16479649, 1.94526291, 0.02848801],
    [-0.03474023, 0.89163136, -0.44993240, -0.01009347],
]
GOLDEN_GRAD_6 = [  # update 6 (batch 2, second modality): the last
    [0.14834586, 0.15170594, 0.12028019, 0.17700259],
    [-0.40162027, -0.40578264, -0.37469521, -0.44204932],
    [-0.09434113, -0.09960254, -0.03833334, -0.13062188],
]


def _released_inputs():
    """Six updates (3 batches x 2 modalities) of B=5 features of size 4 and (3, 4) head gradients."""
    g = torch.Generator().manual_seed(0)
    for batch in range(3):
        for m in range(2):
            x = torch.randn(5, 4, generator=g) + (1.0 if m == 0 else -0.5)
            yield batch, x.mean(0), torch.randn(3, 4, generator=g)


def _run_code_variant(params: dict):
    from types import SimpleNamespace

    from mmtool.models.heads import SharedHead

    ctx = MethodContext(num_classes=3, modalities=("m1", "m2"), batches_per_epoch=3)
    method = build_method("mla", {"variant": "code", **params}, ctx)
    model = SimpleNamespace(head=SharedHead({"m1": 4, "m2": 4}, 3))
    method.setup(model)
    weight, raw, out = model.head.linear.weight, [], []
    for batch, h, grad in _released_inputs():
        weight.grad = grad.clone()
        method._mean_feature = h  # what training_step measures: the batch's mean feature
        method.after_backward(model, batch)
        raw.append(grad)
        out.append(weight.grad.clone())
    return method, raw, out


def test_code_variant_projection_matches_released_code():
    first = next(_released_inputs())[1]
    assert torch.allclose(first, torch.tensor([1.45245779, 0.99603522, 1.76059985, 1.17904735]), atol=1e-6)
    method, raw, out = _run_code_variant({"project": True})
    assert torch.equal(out[0], raw[0])  # their first update of training neither absorbs nor projects
    assert torch.allclose(out[1], torch.tensor(GOLDEN_GRAD_2), atol=1e-5)
    assert torch.allclose(out[5], torch.tensor(GOLDEN_GRAD_6), atol=1e-5)
    assert torch.allclose(method.p, torch.tensor(GOLDEN_P), atol=1e-5)


def test_code_variant_as_released_never_projects():
    method, raw, out = _run_code_variant({})
    assert all(torch.equal(a, b) for a, b in zip(raw, out, strict=True))
    assert torch.equal(method.p, torch.eye(4))


def test_released_alpha_schedule():
    from mmtool.methods.mla import released_alpha

    # by hand from utils.GSPlugin.before_update: lamda = batch_index / len_dataloader + 1; alpha = 0.1 ** lamda
    assert [released_alpha(b, 4) for b in range(4)] == pytest.approx([0.1, 0.1**1.25, 0.1**1.5, 0.1**1.75])


def _released_logits():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(5, 3, generator=g) * 2 for _ in range(3)]


def test_batch_fusion_matches_released_code():
    from mmtool.models.heads import FUSION_RULES, batch_entropy_weights

    za, zv, zt = _released_logits()
    assert torch.allclose(batch_entropy_weights([za, zv]), torch.tensor([0.05389786, 0.94610214]), atol=1e-5)
    expected = torch.tensor([0.05024517, 0.88198429, 0.06777054])
    assert torch.allclose(batch_entropy_weights([za, zv, zt]), expected, atol=1e-5)
    fused = FUSION_RULES["batch"]([za, zv], None)
    golden = [
        [0.57710928, -0.76821405, -0.95970017],
        [-2.90882850, -0.28192347, 6.76940870],
        [-3.62932277, 3.06621146, -2.52712989],
        [0.55522072, -1.00282526, 2.60308623],
        [4.76347160, 0.67311573, -1.82397676],
    ]
    assert torch.allclose(fused, torch.tensor(golden), atol=1e-5)
    # their fixed fusion without --dynamic: av_alpha * out_a + (1 - av_alpha) * out_v, av_alpha = 0.55
    assert torch.allclose(FUSION_RULES["fixed"]([za, zv], [0.55, 0.45]), 0.55 * za + 0.45 * zv)


def test_code_variant_spec_and_options():
    ctx = MethodContext(num_classes=2, modalities=("m1", "m2"))
    spec = {"head": "shared", "head_args": {}}
    assert build_method("mla", {}, ctx).adapt_spec(spec) is spec  # paper: the head's per-sample fusion
    assert build_method("mla", {"variant": "code"}, ctx).adapt_spec(spec)["head_args"] == {"fusion": "batch"}
    fixed = build_method("mla", {"variant": "code", "fusion_weights": (0.55, 0.45)}, ctx).adapt_spec(spec)
    assert fixed["head_args"] == {"fusion": "fixed", "weights": [0.55, 0.45]}
    for bad in ({"variant": "code", "alpha": 0.5}, {"fusion_weights": (0.5, 0.5)}, {"variant": "x"},
                {"variant": "code", "fusion_weights": (1.0,)}):  # fmt: skip
        with pytest.raises(UserError, match="method."):
            build_method("mla", bad, ctx)


def test_code_variant_updates_every_modality_on_every_batch(make_model, alpha_splits):
    from mmtool.config import TrainConfig
    from mmtool.engine.loop import train_epoch
    from mmtool.engine.runtime import Runtime

    model, _ = make_model(head="shared")
    ctx = MethodContext(num_classes=2, modalities=("m1", "m2"), batches_per_epoch=3)
    method = build_method("mla", {"variant": "code"}, ctx)
    method.setup(model)
    seen = []
    step = method.training_step
    method.training_step = lambda net, batch: (seen.append((method.current(), len(batch))), step(net, batch))[1]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train_epoch(model, method, alpha_splits["train"], opt, 1, TrainConfig(batch_size=100), Runtime.cpu())
    assert seen == [("m1", 100), ("m2", 100)] * 3 and method.step == 6  # two updates on each of 3 batches


def test_shared_head_fusion_rules(make_model, alpha_splits):
    from mmtool.engine.train import batches_per_epoch
    from mmtool.models.heads import SharedHead, batch_entropy_weights

    head = SharedHead({"m1": 4, "m2": 4}, 3, fusion="batch")
    f = {"m1": torch.randn(6, 4), "m2": torch.randn(6, 4)}
    out = head(f)
    w = batch_entropy_weights([out["unimodal_logits"]["m1"], out["unimodal_logits"]["m2"]])
    assert torch.allclose(out["logits"], w[0] * out["unimodal_logits"]["m1"] + w[1] * out["unimodal_logits"]["m2"])
    for bad in ({"fusion": "fixed"}, {"fusion": "batch", "weights": [0.5, 0.5]}, {"fusion": "mean"}):
        with pytest.raises(UserError, match="fusion"):
            SharedHead({"m1": 4, "m2": 4}, 3, **bad)
    assert [batches_per_epoch(300, 100), batches_per_epoch(301, 100), batches_per_epoch(300, 0)] == [3, 4, 1]
    assert batches_per_epoch(301, 100, world_size=2) == 4  # 151 per rank, in batches of 50


def test_dynamic_fusion_off_weighs_the_modalities_equally():
    """Paper 003 Table 3's "DF" switch: off, the shared head averages the uni-modal logits with equal weights; on
    (the default), per-sample entropy weights; either way one modality's own prediction is unchanged."""
    from mmtool.models import ModelConfig, build_model, model_spec

    cfg = ModelConfig(encoder="mlp", hidden=(6,), head="shared")
    spec = model_spec(cfg, {"m1": 5, "m2": 3, "m3": 4}, 3, ["m1", "m2", "m3"])
    context = MethodContext(num_classes=3, modalities=("m1", "m2", "m3"))
    off = build_method("mla", {"dynamic_fusion": False}, context)
    on = build_method("mla", {}, context)
    assert on.adapt_spec(spec) == spec
    model = build_model(off.adapt_spec(spec))
    torch.manual_seed(0)
    x = {"m1": torch.randn(4, 5), "m2": torch.randn(4, 3), "m3": torch.randn(4, 4)}
    with torch.no_grad():
        out = model(x)
        uni = out["unimodal_logits"]
        torch.testing.assert_close(out["logits"], sum(uni.values()) / 3)
        dynamic = build_model(spec)
        dynamic.load_state_dict(model.state_dict())
        weights = entropy_weights(list(dynamic(x)["unimodal_logits"].values()))
        assert not torch.allclose(weights, torch.full_like(weights, 1 / 3))  # so the switch matters here
