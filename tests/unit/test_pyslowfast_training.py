"""PySlowFast's training settings that are not the schedule: no weight decay on BatchNorm, dropout before the head."""

from __future__ import annotations

import pytest
import torch

from mmtool.config import EncoderConfig, ModelConfig, OptimConfig
from mmtool.engine.optim import build_optimizer
from mmtool.errors import UserError
from mmtool.models import build_model, model_spec


def _model(**model_keys):
    cfg = ModelConfig(encoders={"a": EncoderConfig("cnn"), "b": EncoderConfig("mlp")}, **model_keys)
    return build_model(model_spec(cfg, {"a": [3, 16, 16], "b": 6}, 4, ["a", "b"]))


def test_norm_layers_get_their_own_weight_decay_in_every_group():
    model = _model()
    norm = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    assert norm  # the ResNet has BatchNorm layers
    groups = [{"params": list(model.encoders.parameters()), "lr": 0.01}, {"params": list(model.head.parameters())}]
    opt = build_optimizer(groups, OptimConfig(lr=0.1, momentum=0.9, weight_decay=1e-4, norm_weight_decay=0.0), model)
    decays = {id(p): (g["weight_decay"], g["lr"]) for g in opt.param_groups for p in g["params"]}
    assert {decays[i] for i in norm} == {(0.0, 0.01)}  # the encoder group's lr kept
    others = {decays[id(p)] for p in model.parameters() if id(p) not in norm}
    assert others == {(1e-4, 0.01), (1e-4, 0.1)}
    assert len(decays) == len(list(model.parameters()))  # nothing lost, nothing twice
    plain = build_optimizer(model.parameters(), OptimConfig(weight_decay=1e-4))
    assert {g["weight_decay"] for g in plain.param_groups} == {1e-4}
    with pytest.raises(UserError, match="needs the model"):
        build_optimizer(model.parameters(), OptimConfig(weight_decay=1e-4, norm_weight_decay=0.0))


def test_head_dropout_drops_what_the_head_reads_in_training_only():
    torch.manual_seed(0)
    model = _model(head_dropout=0.5)
    x = {"a": torch.randn(8, 3, 16, 16), "b": torch.randn(8, 6)}
    model.eval()
    feats = model.encode(x)
    clean = model.head(feats)["logits"]
    assert torch.allclose(model(x)["logits"], clean)  # evaluation: no dropout
    model.train()
    out = model(x)
    assert not torch.allclose(out["logits"], model.head(out["features"])["logits"])  # the head read dropped features
    assert set(_model(head_dropout=0.5).state_dict()) == set(_model().state_dict())  # no new checkpoint keys
    assert _model().spec.get("head_dropout") is None and model.spec["head_dropout"] == 0.5
