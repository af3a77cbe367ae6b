"""The ``i3d`` encoder: the PyTorch port's key layout (its checkpoints load by name), depth by the averaged first
convolution, the MMTM points after the six last inception modules, and a tiny variant that trains on CPU."""

from __future__ import annotations

import pytest
import torch

from mmtool.config import EncoderConfig, ModelConfig
from mmtool.errors import UserError
from mmtool.models import build_model, model_spec
from mmtool.models.i3d import I3DEncoder, same_pad
from mmtool.models.pretrained import load_pretrained

# The port's network written out independently of mmtool.models.i3d (piergiaj/pytorch-i3d pytorch_i3d.py, b49fadf):
# (Unit3D name, in channels, out channels, kernel) of every convolution, inception branches b0, b1a, b1b, b2a, b2b, b3b.
PORT_MIXED = [
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
]


def port_units(in_channels: int = 3) -> list[tuple[str, int, int, int]]:
    units = [("Conv3d_1a_7x7", in_channels, 64, 7), ("Conv3d_2b_1x1", 64, 64, 1), ("Conv3d_2c_3x3", 64, 192, 3)]
    for name, cin, (b0, b1a, b1b, b2a, b2b, b3b) in PORT_MIXED:
        units += [(f"{name}.b0", cin, b0, 1), (f"{name}.b1a", cin, b1a, 1), (f"{name}.b1b", b1a, b1b, 3),
                  (f"{name}.b2a", cin, b2a, 1), (f"{name}.b2b", b2a, b2b, 3), (f"{name}.b3b", cin, b3b, 1)]  # fmt: skip
    return units


def port_checkpoint(num_classes: int = 400, batches_tracked: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the keys and shapes of the port's ``InceptionI3d`` (as ``rgb_imagenet.pt``), random values."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, cin, cout, k in port_units():
        state[f"{name}.conv3d.weight"] = torch.randn(cout, cin, k, k, k, generator=gen)
        state[f"{name}.bn.weight"] = torch.rand(cout, generator=gen) + 0.5
        state[f"{name}.bn.bias"] = torch.randn(cout, generator=gen)
        state[f"{name}.bn.running_mean"] = torch.randn(cout, generator=gen)
        state[f"{name}.bn.running_var"] = torch.rand(cout, generator=gen) + 0.5
        if batches_tracked:
            state[f"{name}.bn.num_batches_tracked"] = torch.tensor(7)
    state["logits.conv3d.weight"] = torch.randn(num_classes, 1024, 1, 1, 1, generator=gen)
    state["logits.conv3d.bias"] = torch.randn(num_classes, generator=gen)
    return state


def test_the_full_width_encoder_has_the_ports_keys_and_shapes():
    encoder = I3DEncoder([3, 16, 64, 64])
    port = {k: v.shape for k, v in port_checkpoint().items() if not k.startswith("logits.")}
    assert {k: v.shape for k, v in encoder.state_dict().items()} == port
    assert encoder.out_dim == 1024


@pytest.mark.parametrize("batches_tracked", [True, False])  # the published files predate num_batches_tracked
def test_a_checkpoint_in_the_ports_layout_loads_with_nothing_missing_or_unexpected(tmp_path, batches_tracked):
    state = port_checkpoint(batches_tracked=batches_tracked)
    torch.save({"state_dict": state} if batches_tracked else state, tmp_path / "rgb_imagenet.pt")
    rgb, depth = I3DEncoder([3, 8, 32, 32]), I3DEncoder([1, 8, 32, 32])
    report = load_pretrained(rgb, tmp_path / "rgb_imagenet.pt", "model.encoders.rgb.pretrained")
    assert report == {"ignored": ["logits.conv3d.bias", "logits.conv3d.weight"], "adapted": []}
    for key, value in rgb.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(value, state[key])
    report = load_pretrained(depth, tmp_path / "rgb_imagenet.pt", "model.encoders.depth.pretrained")
    assert report["adapted"] == ["Conv3d_1a_7x7.conv3d.weight"]
    first = state["Conv3d_1a_7x7.conv3d.weight"]
    torch.testing.assert_close(depth.state_dict()["Conv3d_1a_7x7.conv3d.weight"], first.mean(1, keepdim=True))
    torch.testing.assert_close(depth.state_dict()["Mixed_5c.b3b.bn.running_var"], state["Mixed_5c.b3b.bn.running_var"])


def test_a_foreign_or_narrower_checkpoint_is_one_line(tmp_path):
    state = port_checkpoint()
    torch.save({**state, "Mixed_6a.b0.conv3d.weight": torch.zeros(1)}, tmp_path / "extra.pt")
    with pytest.raises(UserError, match="Mixed_6a.b0.conv3d.weight"):
        load_pretrained(I3DEncoder([3, 8, 32, 32]), tmp_path / "extra.pt", "pretrained")
    torch.save(state, tmp_path / "ok.pt")
    with pytest.raises(UserError, match=r"needs \[4, 3, 7, 7, 7\]"):  # weights load at width 1 only
        load_pretrained(I3DEncoder([3, 8, 32, 32], width=0.0625), tmp_path / "ok.pt", "pretrained")


def test_same_padding_is_tensorflows():
    x = torch.zeros(1, 1, 7, 6, 5)
    # kernel 3 stride 2: size 7 (odd) pads 3 - 7 % 2 = 2 -> (1, 1); size 6 (even) pads 3 - 2 = 1 -> (0, 1)
    assert same_pad(x, (3, 3, 3), (2, 2, 2)).shape == (1, 1, 9, 7, 7)
    assert same_pad(x, (1, 1, 1), (1, 1, 1)).shape == x.shape


def tiny_mmtm(modules=None, seed: int = 0):
    args = {"width": 0.0625, **({"mmtm_modules": modules} if modules else {})}
    encoders = {m: EncoderConfig(name="i3d", args=args) for m in ("rgb", "depth")}
    cfg = ModelConfig(encoders=encoders, head="ensemble", fusion="mmtm")
    spec = model_spec(cfg, {"rgb": [3, 8, 32, 32], "depth": [1, 8, 32, 32]}, 25, ["rgb", "depth"])
    torch.manual_seed(seed)
    return build_model(spec)


def test_mmtms_follow_the_six_last_inception_modules_and_train():
    model = tiny_mmtm()
    widths = [(t.to_w[0].out_features, t.to_w[1].out_features) for t in model.mmtm]
    # Mixed_4c, 4d, 4e, 4f, 5b, 5c at 1/16 width: 10+14+4+4, 8+16+4+4, 7+18+4+4, 16+20+8+8 (twice), 24+24+8+8
    assert widths == [(32, 32), (32, 32), (33, 33), (52, 52), (52, 52), (64, 64)]
    x = {"rgb": torch.randn(2, 3, 8, 32, 32), "depth": torch.randn(2, 1, 8, 32, 32)}
    out = model(x)
    assert out["logits"].shape == (2, 25) and out["features"]["depth"].shape == (2, 64)
    loss = sum(torch.nn.functional.cross_entropy(u, torch.tensor([0, 3])) for u in out["unimodal_logits"].values())
    loss.backward()
    for name in ("encoders.rgb.Conv3d_1a_7x7.conv3d.weight", "encoders.depth.Conv3d_1a_7x7.conv3d.weight",
                 "mmtm.0.shared.0.weight", "mmtm.5.to_w.1.weight"):  # fmt: skip
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    with torch.no_grad():  # the depth branch's prediction hears the rgb input through the MMTMs (batch statistics:
        # with fresh running statistics the default-initialised maps shrink to nearly nothing by Mixed_4c)
        other = {"rgb": torch.randn(2, 3, 8, 32, 32), "depth": x["depth"]}
        a, b = (model(v)["unimodal_logits"]["depth"] for v in (x, other))
    assert (a - b).abs().max() > 1e-3 * a.abs().max()


def test_mmtm_modules_choose_where_the_mmtms_go():
    model = tiny_mmtm(["Mixed_4b", "Mixed_5b"])
    assert [t.to_w[0].out_features for t in model.mmtm] == [32, 52]  # no MMTM after the last block (Mixed_5c)
    assert model.points == (0, 1)
    with pytest.raises(UserError, match="mmtm_modules"):
        I3DEncoder([3, 8, 32, 32], mmtm_modules=["Mixed_9z"])


def test_se_blocks_follow_the_mmtm_points_and_a_published_checkpoint_still_loads(tmp_path):
    torch.save(port_checkpoint(), tmp_path / "rgb_imagenet.pt")
    plain, se = I3DEncoder([3, 8, 32, 32]), I3DEncoder([3, 8, 32, 32], se=True)
    assert len(se.se) == 6 and [b.fc[0].in_features for b in se.se] == [512, 512, 528, 832, 832, 1024]
    report = load_pretrained(se, tmp_path / "rgb_imagenet.pt", "model.encoders.rgb.pretrained")
    assert report["kept"] == sorted(k for k in se.state_dict() if k.startswith("se."))  # not in the file: initial
    load_pretrained(plain, tmp_path / "rgb_imagenet.pt", "model.encoders.rgb.pretrained")
    x = torch.randn(2, 3, 8, 32, 32)
    plain.eval(), se.eval()
    with torch.no_grad():
        for block in se.se:  # gates of exactly 1 (sigmoid(50) is 1 in float32): the SE network is the plain one
            block.fc[2].weight.zero_()
            block.fc[2].bias.fill_(50.0)
        torch.testing.assert_close(se(x), plain(x), rtol=0, atol=0)
        se.se[0].fc[2].bias.fill_(0.0)  # a gate of 1/2 after Mixed_4c changes the features
        assert not torch.allclose(se(x), plain(x), rtol=1e-3)
