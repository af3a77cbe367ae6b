"""Initialising encoders from torchvision-format weights files, with cross-modality initialisation."""

from __future__ import annotations

import pytest
import torch

from mmtool.config import EncoderConfig, ModelConfig, load_recipe
from mmtool.errors import UserError
from mmtool.models import build_model, model_spec
from mmtool.models.cnn import ResNet18Encoder
from mmtool.models.pretrained import load_pretrained


def _torchvision_file(tmp_path, wrap: bool = False):
    """An RGB ResNet-18 saved as torchvision saves it: its keys plus ``fc.*`` (optionally wrapped the way
    training scripts do, under ``state_dict`` with DataParallel's ``module.`` prefix)."""
    torch.manual_seed(1)
    rgb = ResNet18Encoder([3, 16, 16])
    state = {**rgb.state_dict(), "fc.weight": torch.randn(10, 512), "fc.bias": torch.zeros(10)}
    if wrap:
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    return path, rgb


@pytest.mark.parametrize("wrap", [False, True])
def test_rgb_weights_load_by_name(tmp_path, wrap):
    path, rgb = _torchvision_file(tmp_path, wrap)
    enc = ResNet18Encoder([3, 16, 16])
    report = load_pretrained(enc, path, "model.encoders.rgb.pretrained")
    assert report == {"ignored": ["fc.bias", "fc.weight"], "adapted": []}
    assert all(torch.equal(v, rgb.state_dict()[k]) for k, v in enc.state_dict().items())


def test_flow_gets_the_rgb_first_layer_averaged_and_replicated(tmp_path):
    """Cross-modality initialisation: 20 flow channels, each the mean of the 3 RGB filters."""
    path, rgb = _torchvision_file(tmp_path)
    flow = ResNet18Encoder([20, 16, 16])
    report = load_pretrained(flow, path, "model.encoders.flow.pretrained")
    assert report["adapted"] == ["conv1.weight"]
    mean = rgb.conv1.weight.mean(dim=1, keepdim=True)  # (64, 1, 7, 7)
    assert flow.conv1.weight.shape == (64, 20, 7, 7)
    assert torch.equal(flow.conv1.weight, mean.expand(-1, 20, -1, -1))
    assert torch.equal(flow.layer4[1].conv2.weight, rgb.layer4[1].conv2.weight)


def test_bad_files_are_one_line_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable weights file"):
        load_pretrained(ResNet18Encoder([3, 8, 8]), junk, "pretrained")
    with pytest.raises(UserError, match="no weights file"):
        load_pretrained(ResNet18Encoder([3, 8, 8]), tmp_path / "absent.pth", "pretrained")
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "part.pth")
    with pytest.raises(UserError, match="lacks"):
        load_pretrained(ResNet18Encoder([3, 8, 8]), tmp_path / "part.pth", "pretrained")


def test_recipe_pretrained_path_reaches_the_encoder(tmp_path):
    """`pretrained:` is read relative to the recipe and loaded when a stage builds the model."""
    from mmtool.engine.train import init_pretrained

    path, rgb = _torchvision_file(tmp_path)
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(
        "stage: train\nmodel: {encoders: {flow: {name: resnet18, pretrained: resnet18.pth}}, head: linear}\n"
    )
    recipe = load_recipe(recipe_file)
    spec = model_spec(recipe.model, {"flow": [20, 16, 16]}, 5, ["flow"])
    model = build_model(spec)
    init_pretrained(recipe, model)
    assert torch.equal(model.encoders["flow"].layer1[0].conv1.weight, rgb.layer1[0].conv1.weight)


def test_per_modality_encoders_and_unknown_arguments():
    cfg = ModelConfig(encoder="mlp", hidden=(8,), encoders={"b": EncoderConfig(name="identity")})
    spec = model_spec(cfg, {"a": 5, "b": 3}, 2, ["a", "b"])
    assert spec["encoders"] == {"a": {"name": "mlp", "args": {"hidden": [8]}}, "b": {"name": "identity", "args": {}}}
    assert build_model(spec)({"a": torch.zeros(2, 5), "b": torch.zeros(2, 3)})["features"]["b"].shape == (2, 3)
    with pytest.raises(UserError, match="takes no"):
        model_spec(ModelConfig(encoders={"a": EncoderConfig(name="mlp", args={"depth": 3})}), {"a": 5}, 2, ["a"])
    with pytest.raises(UserError, match="not modalities of this dataset"):
        model_spec(ModelConfig(encoders={"c": EncoderConfig(name="mlp")}), {"a": 5}, 2, ["a"])
