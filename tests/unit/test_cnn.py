"""CNN encoders: torchvision-compatible ResNet-18 / R3D-18 state dicts, shapes, and blocks that share parameters.

The expected state-dict layouts below are written out from torchvision's naming scheme (``torchvision.models.resnet18``
and ``torchvision.models.video.r3d_18``), independently of the implementation, so a renamed module or a changed
tensor shape breaks pretrained-weight loading and fails here.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import mmtool.models.cnn as cnn
from mmtool.errors import UserError
from mmtool.models.encoders import ENCODERS

WIDTHS = (64, 128, 256, 512)

# torchvision's published "num_params" (weights metadata), classifier included.
RESNET18_NUM_PARAMS = 11_689_512  # ResNet18_Weights.IMAGENET1K_V1, fc: 512 -> 1000
R3D18_NUM_PARAMS = 33_371_472  # R3D_18_Weights.KINETICS400_V1, fc: 512 -> 400
RESNET18_FC = 512 * 1000 + 1000
R3D18_FC = 512 * 400 + 400


def batchnorm(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.weight": (channels,),
        f"{prefix}.bias": (channels,),
        f"{prefix}.running_mean": (channels,),
        f"{prefix}.running_var": (channels,),
        f"{prefix}.num_batches_tracked": (),
    }


def resnet18_layout(channels: int) -> dict[str, tuple[int, ...]]:
    """torchvision resnet18's state dict (in order) without fc: key -> shape."""
    layout = {"conv1.weight": (64, channels, 7, 7), **batchnorm("bn1", 64)}
    width = 64
    for layer, out in enumerate(WIDTHS, start=1):
        for unit in range(2):
            p, cin = f"layer{layer}.{unit}", (width if unit == 0 else out)
            layout[f"{p}.conv1.weight"] = (out, cin, 3, 3)
            layout.update(batchnorm(f"{p}.bn1", out))
            layout[f"{p}.conv2.weight"] = (out, out, 3, 3)
            layout.update(batchnorm(f"{p}.bn2", out))
            if unit == 0 and layer > 1:
                layout[f"{p}.downsample.0.weight"] = (out, width, 1, 1)
                layout.update(batchnorm(f"{p}.downsample.1", out))
        width = out
    return layout


def r3d18_layout(channels: int) -> dict[str, tuple[int, ...]]:
    """torchvision r3d_18's state dict (in order) without fc: key -> shape."""
    layout = {"stem.0.weight": (64, channels, 3, 7, 7), **batchnorm("stem.1", 64)}
    width = 64
    for layer, out in enumerate(WIDTHS, start=1):
        for unit in range(2):
            p, cin = f"layer{layer}.{unit}", (width if unit == 0 else out)
            layout[f"{p}.conv1.0.weight"] = (out, cin, 3, 3, 3)
            layout.update(batchnorm(f"{p}.conv1.1", out))
            layout[f"{p}.conv2.0.weight"] = (out, out, 3, 3, 3)
            layout.update(batchnorm(f"{p}.conv2.1", out))
            if unit == 0 and layer > 1:
                layout[f"{p}.downsample.0.weight"] = (out, width, 1, 1, 1)
                layout.update(batchnorm(f"{p}.downsample.1", out))
        width = out
    return layout


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def through_blocks(encoder: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Size]]:
    shapes = []
    for block in encoder.blocks:
        x = block(x)
        shapes.append(x.shape)
    return encoder.pool(x), shapes


def torchvision_state(layout: dict[str, tuple[int, ...]], num_classes: int, seed: int) -> dict[str, torch.Tensor]:
    """A random state dict in torchvision's format, fc included (what a downloaded checkpoint holds)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("weight") and len(shape) == 1:  # BN scale
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 100
            state[key] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
    state["fc.weight"] = torch.randn(num_classes, 512, generator=g)
    state["fc.bias"] = torch.randn(num_classes, generator=g)
    return state


def test_registered_names():
    assert ENCODERS.get("resnet18") is cnn.ResNet18Encoder
    assert ENCODERS.get("r3d18") is cnn.R3D18Encoder
    assert ENCODERS.get("cnn") is cnn.SmallCNNEncoder


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_resnet18_state_dict_is_torchvision_without_fc(channels):
    torch.manual_seed(0)
    enc = cnn.ResNet18Encoder([channels, 64, 64])
    layout = resnet18_layout(channels)
    assert len(layout) == 120
    assert [(k, tuple(v.shape)) for k, v in enc.state_dict().items()] == list(layout.items())
    conv1_diff = 64 * (3 - channels) * 7 * 7
    assert n_params(enc) == RESNET18_NUM_PARAMS - RESNET18_FC - conv1_diff
    if channels == 3:
        assert n_params(enc) == 11_176_512
    assert enc.out_dim == 512 and enc.block_dims == [128, 256, 512] and enc.mmtm_after == (0, 1, 2)


def test_r3d18_state_dict_is_torchvision_without_fc():
    torch.manual_seed(0)
    enc = cnn.R3D18Encoder([3, 4, 16, 16])
    layout = r3d18_layout(3)
    assert [(k, tuple(v.shape)) for k, v in enc.state_dict().items()] == list(layout.items())
    assert n_params(enc) == R3D18_NUM_PARAMS - R3D18_FC == 33_166_272
    assert enc.out_dim == 512 and enc.block_dims == [128, 256, 512] and enc.mmtm_after == (0, 1, 2)
    flow = cnn.R3D18Encoder([2, 4, 16, 16])
    assert flow.state_dict()["stem.0.weight"].shape == (64, 2, 3, 7, 7)


def test_torchvision_init():
    torch.manual_seed(0)
    enc = cnn.ResNet18Encoder([3, 32, 32])
    assert torch.equal(enc.bn1.weight, torch.ones(64)) and torch.equal(enc.bn1.bias, torch.zeros(64))
    w = enc.layer3[0].conv1.weight  # kaiming normal, fan_out = 256 * 3 * 3, gain sqrt(2)
    assert w.std().item() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.05)
    assert abs(w.mean().item()) < 2e-3


@pytest.mark.parametrize(
    ("make", "layout", "shape", "num_classes"),
    [
        (lambda: cnn.ResNet18Encoder([3, 32, 32]), resnet18_layout(3), (2, 3, 32, 32), 1000),
        (lambda: cnn.R3D18Encoder([3, 4, 16, 16]), r3d18_layout(3), (2, 3, 4, 16, 16), 400),
    ],
    ids=["resnet18", "r3d18"],
)
def test_torchvision_weights_load_without_fc(make, layout, shape, num_classes):
    torch.manual_seed(0)
    enc = make().eval()
    x = torch.randn(shape)
    with torch.no_grad():
        before = enc(x)
    state = torchvision_state(layout, num_classes, seed=1)
    result = enc.load_state_dict(state, strict=False)
    assert result.missing_keys == []
    assert sorted(result.unexpected_keys) == ["fc.bias", "fc.weight"]
    loaded = enc.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in layout)
    with torch.no_grad():
        after = enc(x)
    assert after.shape == before.shape and torch.isfinite(after).all()
    assert not torch.allclose(after, before)
    with pytest.raises(RuntimeError, match="fc.weight"):
        make().load_state_dict(state)  # strict loading does see the classifier


@pytest.mark.parametrize(
    ("shape", "block_shapes"),
    [
        ((2, 1, 64, 64), [(2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 2, 2)]),
        ((2, 2, 64, 64), [(2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 2, 2)]),
        ((3, 3, 32, 48), [(3, 128, 4, 6), (3, 256, 2, 3), (3, 512, 1, 2)]),
    ],
)
def test_resnet18_shapes_and_blocks_match_forward(shape, block_shapes):
    torch.manual_seed(0)
    enc = cnn.ResNet18Encoder(list(shape[1:])).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        out = enc(x)
        pooled, shapes = through_blocks(enc, x)
    assert out.shape == (shape[0], enc.out_dim)
    assert shapes == [torch.Size(s) for s in block_shapes]
    assert [s[1] for s in shapes] == enc.block_dims
    assert torch.equal(pooled, out)


@pytest.mark.parametrize(
    ("shape", "block_shapes"),
    [
        ((2, 3, 4, 16, 16), [(2, 128, 2, 4, 4), (2, 256, 1, 2, 2), (2, 512, 1, 1, 1)]),
        ((1, 2, 8, 32, 32), [(1, 128, 4, 8, 8), (1, 256, 2, 4, 4), (1, 512, 1, 2, 2)]),
    ],
)
def test_r3d18_shapes_and_blocks_match_forward(shape, block_shapes):
    torch.manual_seed(0)
    enc = cnn.R3D18Encoder(list(shape[1:])).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        out = enc(x)
        pooled, shapes = through_blocks(enc, x)
    assert out.shape == (shape[0], 512)
    assert shapes == [torch.Size(s) for s in block_shapes]  # time is strided too (no temporal-only stem stride)
    assert torch.equal(pooled, out)


@pytest.mark.parametrize(
    "make",
    [
        lambda: (cnn.ResNet18Encoder([3, 64, 64]), torch.randn(2, 3, 64, 64)),  # >1 value per BN channel
        lambda: (cnn.R3D18Encoder([3, 4, 32, 32]), torch.randn(2, 3, 4, 32, 32)),
        lambda: (cnn.SmallCNNEncoder([1, 8, 8]), torch.randn(4, 1, 8, 8)),
    ],
    ids=["resnet18", "r3d18", "cnn"],
)
def test_blocks_share_parameters_and_train_the_encoder(make):
    torch.manual_seed(0)
    enc, x = make()
    keys = list(enc.state_dict())
    blocks = enc.blocks
    assert len(set(keys)) == len(keys) and list(enc.state_dict()) == keys  # views add no state
    assert not any(k.startswith(("blocks", "pool")) for k in keys)
    own = {id(t) for t in [*enc.parameters(), *enc.buffers()]}
    viewed = {id(t) for b in blocks for t in [*b.parameters(), *b.buffers()]}
    assert viewed == own  # every tensor is the encoder's own, and the blocks cover all of them
    assert sum(n_params(b) for b in blocks) == n_params(enc)  # and no block holds a tensor twice
    enc.train()
    pooled, _ = through_blocks(enc, x)
    assert pooled.shape == (x.shape[0], enc.out_dim)
    pooled.pow(2).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt = torch.optim.SGD(enc.parameters(), lr=0.1)
    first = next(enc.parameters()).detach().clone()
    opt.step()
    assert not torch.equal(next(enc.parameters()), first)
    assert not torch.equal(next(blocks[0].parameters()), first)  # the blocks see the update


@pytest.mark.parametrize("channels", [1, 3])
def test_small_cnn_on_digits(channels):
    torch.manual_seed(0)
    enc = cnn.SmallCNNEncoder([channels, 8, 8])
    assert enc.out_dim == 32 and enc.block_dims == [16, 32] and enc.mmtm_after == (0, 1)
    x = torch.randn(5, channels, 8, 8)
    out = enc(x)
    assert out.shape == (5, 32) and (out >= 0).all()
    enc.eval()
    with torch.no_grad():
        pooled, shapes = through_blocks(enc, x)
        assert torch.equal(pooled, enc(x))
    assert shapes == [torch.Size((5, 16, 8, 8)), torch.Size((5, 32, 4, 4))]


def test_small_cnn_takes_recipe_hidden():
    torch.manual_seed(0)
    enc = ENCODERS.get("cnn")([1, 8, 8], hidden=[8, 12, 24])
    assert enc.out_dim == 24 and enc.block_dims == [8, 12, 24] and enc.mmtm_after == (0, 1, 2)
    _, shapes = through_blocks(enc.eval(), torch.randn(2, 1, 8, 8))
    assert shapes == [torch.Size((2, 8, 8, 8)), torch.Size((2, 12, 4, 4)), torch.Size((2, 24, 2, 2))]
    with pytest.raises(UserError, match="hidden"):
        cnn.SmallCNNEncoder([1, 8, 8], hidden=[])


def test_resnet18_in_channels_overrides_shape():
    torch.manual_seed(0)
    enc = cnn.ResNet18Encoder([3, 32, 32], in_channels=1)
    assert enc.conv1.weight.shape == (64, 1, 7, 7)
    assert enc(torch.randn(2, 1, 32, 32)).shape == (2, 512)


@pytest.mark.parametrize(
    ("name", "in_dim", "message"),
    [
        ("resnet18", 784, r"'resnet18' needs image-shaped input \[C, H, W\], got a flat vector of size 784"),
        ("cnn", 64, r"'cnn' needs image-shaped input \[C, H, W\]"),
        ("r3d18", 100, r"'r3d18' needs video-shaped input \[C, T, H, W\]"),
        ("resnet18", [3, 4, 32, 32], r"got shape \[3, 4, 32, 32\]"),
        ("r3d18", [3, 32, 32], r"got shape \[3, 32, 32\]"),
        ("cnn", [0, 8, 8], r"got shape \[0, 8, 8\]"),
    ],
)
def test_bad_input_shapes_are_user_errors(name, in_dim, message):
    with pytest.raises(UserError, match=message) as err:
        ENCODERS.get(name)(in_dim)
    assert "\n" not in str(err.value)
