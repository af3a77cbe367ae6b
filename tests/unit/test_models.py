"""Model specs, encoders and fusion heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmtool.config import ModelConfig
from mmtool.errors import UserError
from mmtool.models import MultiModalNet, build_model, model_spec
from mmtool.models.encoders import IdentityEncoder, MLPEncoder
from mmtool.models.heads import EnsembleHead, LinearHead, MLPHead, average_log_probs

DIMS = {"m1": 20, "m2": 12}


def inputs(batch: int = 7, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, d, generator=g) for m, d in DIMS.items()}


@pytest.mark.parametrize("head", ["linear", "mlp", "ensemble", "attention"])
def test_build_model_from_spec_forward_shapes(head):
    spec = model_spec(ModelConfig(encoder="mlp", hidden=(16, 8), head=head, head_hidden=10), DIMS, 3, ["m1", "m2"])
    assert spec["modalities"] == {"m1": 20, "m2": 12} and spec["num_classes"] == 3
    assert spec["encoders"] == {m: {"name": "mlp", "args": {"hidden": [16, 8]}} for m in ("m1", "m2")}
    assert spec["head_args"] == ({"hidden": 10} if head == "mlp" else {})
    model = build_model(spec)
    assert isinstance(model, MultiModalNet) and model.modalities == ["m1", "m2"]
    out = model(inputs())
    assert out["logits"].shape == (7, 3)
    assert set(out["features"]) == {"m1", "m2"}
    assert out["features"]["m1"].shape == (7, 8) and out["features"]["m2"].shape == (7, 8)
    assert (out["features"]["m1"] >= 0).all()  # ReLU features
    if head in ("mlp", "attention"):
        assert "unimodal_logits" not in out
    else:
        assert {m: z.shape for m, z in out["unimodal_logits"].items()} == {"m1": (7, 3), "m2": (7, 3)}
    # encode + fuse is the same computation as forward
    torch.testing.assert_close(model.fuse(model.encode(inputs()))["logits"], out["logits"])


def test_spec_only_selected_modalities_and_identity_encoder():
    spec = model_spec(ModelConfig(encoder="identity", head="linear"), DIMS, 2, ["m2"])
    assert spec["modalities"] == {"m2": 12} and spec["encoders"] == {"m2": {"name": "identity", "args": {}}}
    model = build_model(spec)
    x = inputs()
    out = model({"m2": x["m2"]})
    assert torch.equal(out["features"]["m2"], x["m2"])
    assert isinstance(model.encoders["m2"], IdentityEncoder)


def test_build_model_same_seed_same_weights_and_spec_is_plain():
    spec = model_spec(ModelConfig(hidden=(8,)), DIMS, 2, ["m1", "m2"])
    torch.manual_seed(1)
    a = build_model(spec)
    torch.manual_seed(1)
    b = build_model(spec)
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    # the spec is made of plain Python values so it can travel inside a weights_only checkpoint
    assert all(isinstance(v, (str, int, dict, list)) for v in spec.values())


def test_unknown_encoder_or_head_raises_user_error():
    with pytest.raises(UserError, match="encoder"):
        model_spec(ModelConfig(encoder="no-such-encoder"), DIMS, 2, ["m1"])
    with pytest.raises(UserError, match="head"):
        model_spec(ModelConfig(head="transformer"), DIMS, 2, ["m1"])


def test_mlp_encoder_layers():
    enc = MLPEncoder(20, hidden=(16, 8))
    linears = [m for m in enc.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(20, 16), (16, 8)]
    assert enc.out_dim == 8


def test_linear_head_unimodal_logits_sum_to_fused_logits():
    torch.manual_seed(0)
    head = LinearHead({"a": 5, "b": 3, "c": 4}, 4)
    feats = {"a": torch.randn(6, 5), "b": torch.randn(6, 3), "c": torch.randn(6, 4)}
    out = head(feats)
    uni = out["unimodal_logits"]
    # every uni-modal classifier carries the shared bias once; the fused logits carry it once in total
    summed = uni["a"] + uni["b"] + uni["c"] - 2 * head.bias
    torch.testing.assert_close(summed, out["logits"])
    # and each uni-modal classifier is W_m f_m + b, computed independently
    for m, f in feats.items():
        torch.testing.assert_close(uni[m], f @ head.proj[m].weight.T + head.bias)
    # the fused logits equal a single linear layer on the concatenated features
    w = torch.cat([head.proj[m].weight for m in ("a", "b", "c")], dim=1)
    x = torch.cat([feats[m] for m in ("a", "b", "c")], dim=1)
    torch.testing.assert_close(out["logits"], x @ w.T + head.bias)


def test_linear_head_init_bound_is_that_of_the_full_layer():
    torch.manual_seed(0)
    head = LinearHead({"a": 64, "b": 36}, 3)
    bound = 1 / 100**0.5
    for p in [head.bias, *(layer.weight for layer in head.proj.values())]:
        assert p.abs().max() <= bound
    assert head.proj["a"].weight.abs().max() > bound / 2  # not degenerate


def test_ensemble_head_logits_are_log_of_mean_softmax():
    torch.manual_seed(0)
    head = EnsembleHead({"a": 5, "b": 3}, 4)
    feats = {"a": torch.randn(6, 5) * 3, "b": torch.randn(6, 3) * 3}
    out = head(feats)
    uni = out["unimodal_logits"]
    for m, f in feats.items():
        torch.testing.assert_close(uni[m], f @ head.proj[m].weight.T + head.proj[m].bias)
    expected = torch.log((torch.softmax(uni["a"], 1) + torch.softmax(uni["b"], 1)) / 2)
    torch.testing.assert_close(out["logits"], expected)
    torch.testing.assert_close(out["logits"].exp().sum(1), torch.ones(6))
    # cross-entropy on these logits is the NLL of the averaged probabilities
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    nll = -expected[torch.arange(6), target].mean()
    torch.testing.assert_close(F.cross_entropy(out["logits"], target), nll)


def test_average_log_probs_weighted():
    torch.manual_seed(0)
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    got = average_log_probs([a, b], [0.25, 0.75])
    expected = torch.log(0.25 * torch.softmax(a, 1) + 0.75 * torch.softmax(b, 1))
    torch.testing.assert_close(got, expected)
    # extreme logits stay finite (computed in log space)
    big = average_log_probs([torch.tensor([[1000.0, -1000.0]]), torch.tensor([[-1000.0, 1000.0]])])
    torch.testing.assert_close(big, torch.log(torch.tensor([[0.5, 0.5]])))


def test_mlp_head_uses_both_modalities_in_spec_order():
    torch.manual_seed(0)
    head = MLPHead({"a": 3, "b": 2}, 4, hidden=6)
    fa, fb = torch.randn(5, 3), torch.randn(5, 2)
    out = head({"b": fb, "a": fa})  # dict order of the call does not matter
    torch.testing.assert_close(out["logits"], head.net(torch.cat([fa, fb], 1)))
    assert not torch.allclose(head({"a": fa, "b": fb + 1})["logits"], out["logits"])
