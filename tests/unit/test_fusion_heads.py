"""The fusion heads of paper 003's baselines: every output against a hand computation from the head's weights."""

from __future__ import annotations

import pytest
import torch

from mmtool.errors import UserError
from mmtool.models import build_model
from mmtool.models.fusion_heads import ConcatHead, FiLMHead, GatedHead, QMFHead, SumHead
from mmtool.models.heads import HEADS

DIMS = {"a": 3, "v": 4}


def features(dims: dict[str, int] = DIMS, n: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, d, generator=g) for m, d in dims.items()}


def affine(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    return x @ layer.weight.T + layer.bias


def test_sum_head_adds_one_linear_classifier_per_modality():
    torch.manual_seed(0)
    head = SumHead(DIMS, 2)
    f = features()
    out = head(f)
    a, v = affine(f["a"], head.fc["a"]), affine(f["v"], head.fc["v"])
    torch.testing.assert_close(out["logits"], a + v)
    torch.testing.assert_close(out["unimodal_logits"]["a"], a)
    torch.testing.assert_close(out["unimodal_logits"]["v"], v)
    three = SumHead({**DIMS, "t": 2}, 2)  # any number of modalities
    assert three(features({**DIMS, "t": 2}))["logits"].shape == (5, 2)


def test_concat_head_is_one_linear_layer_on_the_concatenation():
    torch.manual_seed(0)
    head = ConcatHead(DIMS, 2)
    f = features()
    weight = torch.cat([head.proj["a"].weight, head.proj["v"].weight], dim=1)  # (C, D_a + D_v), fc_out's weight
    out = head(f)
    torch.testing.assert_close(out["logits"], torch.cat([f["a"], f["v"]], dim=1) @ weight.T + head.bias)
    # sub-heads as the OGM-GE/MLA code reads them: the modality's block and half the bias
    torch.testing.assert_close(out["unimodal_logits"]["v"], f["v"] @ head.proj["v"].weight.T + head.bias / 2)
    bound = 1 / 7**0.5  # nn.Linear(7, C)'s initialisation
    assert all(p.abs().max() <= bound for p in head.parameters())


def test_film_head_modulates_one_modality_with_the_other():
    torch.manual_seed(0)
    head = FiLMHead(DIMS, 2)  # default: the first modality (a) conditions v
    f = features()
    h = affine(f["a"], head.fc)  # (B, 2 * D_v)
    gamma, beta = h[:, :4], h[:, 4:]
    torch.testing.assert_close(head(f)["logits"], affine(gamma * f["v"] + beta, head.fc_out))
    assert "unimodal_logits" not in head(f)
    other = FiLMHead(DIMS, 2, condition="v")
    assert other.fc.in_features == 4 and other.fc.out_features == 6 and other.fc_out.in_features == 3


def test_gated_head_gates_one_hidden_state_with_the_others_sigmoid():
    torch.manual_seed(0)
    head = GatedHead(DIMS, 2)  # default: a gives the gate, width = D_a
    f = features()
    hx, hy = affine(f["a"], head.fc_x), affine(f["v"], head.fc_y)
    torch.testing.assert_close(head(f)["logits"], affine(torch.sigmoid(hx) * hy, head.fc_out))
    assert head.fc_x.out_features == 3 and "unimodal_logits" not in head(f)
    other = GatedHead(DIMS, 2, gate="v", dim=8)
    assert (other.fc_x.in_features, other.fc_y.in_features, other.fc_out.in_features) == (4, 3, 8)


@pytest.mark.parametrize("name", ["film", "gated"])
@pytest.mark.parametrize("dims", [{"a": 3}, {"a": 3, "v": 4, "t": 5}])
def test_two_modality_heads_refuse_other_counts(name, dims):
    with pytest.raises(UserError, match=rf"^model.head: {name} fuses exactly two modalities, got {len(dims)} "):
        HEADS.get(name)(dims, 2)


def test_two_modality_heads_refuse_an_unknown_modality():
    with pytest.raises(UserError, match="condition modality 'x'"):
        FiLMHead(DIMS, 2, condition="x")


def test_qmf_head_weights_each_modality_by_minus_its_energy_over_ten():
    torch.manual_seed(0)
    head = QMFHead(DIMS, 3)
    f = features()
    out = head(f)
    za, zv = affine(f["a"], head.fc["a"]), affine(f["v"], head.fc["v"])
    wa = torch.log(torch.exp(za).sum(1, keepdim=True)) / 10  # the QMF code's torch.log(torch.sum(torch.exp(.)))
    wv = torch.log(torch.exp(zv).sum(1, keepdim=True)) / 10
    torch.testing.assert_close(out["logits"], wa * za + wv * zv)
    torch.testing.assert_close(out["unimodal_logits"]["a"], za)
    # the weights are constants: the fused logits' gradient w.r.t. z_m is w_m only
    out["logits"].sum().backward()
    grad = head.fc["a"].bias.grad
    torch.testing.assert_close(grad, wa.expand(-1, 3).sum(0).detach())


@pytest.mark.parametrize("name", ["sum", "concat", "film", "gated", "qmf"])
def test_heads_build_from_a_spec(name):
    spec = {"modalities": {"m1": 6, "m2": 5}, "num_classes": 3, "head": name, "head_args": {},
            "encoders": {m: {"name": "mlp", "args": {"hidden": [4]}} for m in ("m1", "m2")}}  # fmt: skip
    torch.manual_seed(0)
    model = build_model(spec)
    out = model({"m1": torch.randn(2, 6), "m2": torch.randn(2, 5)})
    assert out["logits"].shape == (2, 3) and HEADS.name_of(model.head) == name
