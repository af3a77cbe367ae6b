"""SlowFast encoders: PySlowFast's state-dict layout, loading its checkpoints, shapes and parameter counts.

The expected layout is written out here from PySlowFast's facts (facebookresearch/SlowFast, commit 287ec00:
``video_model_builder.py``, ``resnet_helper.py``, ``stem_helper.py``, ``configs/Kinetics/SLOWFAST_8x8_R50.yaml``
and ``c2/SLOWFAST_8x8_R101_101_101.yaml``), independently of mmtool's implementation, so a renamed module
or a changed tensor shape breaks checkpoint loading and fails here.
"""

from __future__ import annotations

import math

import pytest
import torch

from mmtool.config import EncoderConfig, ModelConfig
from mmtool.errors import UserError
from mmtool.models import build_model, model_spec
from mmtool.models.encoders import ENCODERS
from mmtool.models.pretrained import load_pretrained
from mmtool.models.slowfast import SlowFast50Encoder, SlowFast101Encoder

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}  # res2..res5
TEMPORAL = {2: (1, 3), 3: (1, 3), 4: (3, 3), 5: (3, 3)}  # "a" conv of every block: (slow, fast)
FUSION_KERNEL = {50: 7, 101: 5}  # SLOWFAST_8x8_R50 / SLOWFAST_8x8_R101_101_101: FUSION_KERNEL_SZ
HEAD = 2304 * 400 + 400  # head.projection: Linear(2048 + 256, 400 Kinetics classes)
# PyTorchVideo's model zoo (Kinetics-400, the same networks as PySlowFast's configs): parameters with the head
PUBLISHED_MILLIONS = {50: 34.57, 101: 62.83}


def batchnorm(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    suffixes = ("weight", "bias", "running_mean", "running_var")
    return {**{f"{prefix}.{s}": (channels,) for s in suffixes}, f"{prefix}.num_batches_tracked": ()}


def conv_bn(layout: dict, conv: str, bn: str, shape: tuple[int, ...]) -> None:
    layout[conv] = shape
    layout.update(batchnorm(bn, shape[0]))


def bottleneck_stage(layout: dict, k: int, p: int, blocks: int, cin: int, inner: int) -> None:
    """Stage ``s{k}`` of pathway ``p``: blocks a (Tx1x1) - b (1x3x3) - c (1x1x1), branch1 in block 0."""
    cout, t = 4 * inner, TEMPORAL[k][p]
    for i in range(blocks):
        pre = f"s{k}.pathway{p}_res{i}"
        if i == 0:
            conv_bn(layout, f"{pre}.branch1.weight", f"{pre}.branch1_bn", (cout, cin, 1, 1, 1))
        conv_bn(layout, f"{pre}.branch2.a.weight", f"{pre}.branch2.a_bn", (inner, cin if i == 0 else cout, t, 1, 1))
        conv_bn(layout, f"{pre}.branch2.b.weight", f"{pre}.branch2.b_bn", (inner, inner, 1, 3, 3))
        conv_bn(layout, f"{pre}.branch2.c.weight", f"{pre}.branch2.c_bn", (cout, inner, 1, 1, 1))


def pyslowfast_layout(depth: int, width: int = 64, channels: int = 3) -> dict[str, tuple[int, ...]]:
    """PySlowFast's SlowFast backbone state dict (in order, head left out): key -> shape. beta_inv 8, ratio 2."""
    fast, kernel = width // 8, FUSION_KERNEL[depth]
    layout: dict[str, tuple[int, ...]] = {}
    for p, (c, t) in enumerate(((width, 1), (fast, 5))):
        conv_bn(layout, f"s1.pathway{p}_stem.conv.weight", f"s1.pathway{p}_stem.bn", (c, channels, t, 7, 7))
    conv_bn(layout, "s1_fuse.conv_f2s.weight", "s1_fuse.bn", (2 * fast, fast, kernel, 1, 1))
    slow_in, fast_in = width + 2 * fast, fast
    for k in range(2, 6):
        scale = 2 ** (k - 2)
        bottleneck_stage(layout, k, 0, BLOCKS[depth][k - 2], slow_in, width * scale)
        bottleneck_stage(layout, k, 1, BLOCKS[depth][k - 2], fast_in, fast * scale)
        fast_out = 4 * fast * scale
        if k < 5:
            conv_bn(layout, f"s{k}_fuse.conv_f2s.weight", f"s{k}_fuse.bn", (2 * fast_out, fast_out, kernel, 1, 1))
        slow_in, fast_in = 4 * width * scale + 2 * fast_out, fast_out
    return layout


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny(depth: int = 50, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return ENCODERS.get(f"slowfast{depth}")([3, 8, 32, 32], width=8, **kwargs)


def test_registered_names_build_the_8x8_networks():
    assert ENCODERS.get("slowfast50") is SlowFast50Encoder and ENCODERS.get("slowfast101") is SlowFast101Encoder
    enc = tiny()
    assert enc.out_dim == 8 * 32 + 32 and enc.mmtm_after == () and len(enc.blocks) == 5
    assert enc.block_dims == [8 + 1 + 2, 32 + 4 + 8, 64 + 8 + 16, 128 + 16 + 32, 256 + 32]


def test_tiny_forward_and_backward():
    """(B, C, T, H, W) -> (B, 288) for width 8; every parameter gets a finite gradient."""
    enc = tiny()
    x = torch.randn(2, 3, 32, 32, 32)
    features = enc(x)
    assert features.shape == (2, 288)
    features.square().mean().backward()
    grads = [p.grad for p in enc.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert enc.s1.pathway1_stem.conv.weight.grad.abs().sum() > 0  # the fast pathway reaches the features
    enc.eval()
    with torch.no_grad():
        through = x
        for block in enc.blocks:
            through = block(through)
        assert torch.allclose(enc.pool(through), enc(x), atol=1e-6)


def test_slow_pathway_takes_pyslowfast_frames():
    """T // alpha frames at linspace(0, T - 1) rounded down (pack_pathway_output): 0, 4, 8, 13, ... for T = 32."""
    x = torch.arange(32.0).view(1, 1, 32, 1, 1)
    slow, fast = tiny().split(x)
    assert slow.flatten().tolist() == [0, 4, 8, 13, 17, 22, 26, 31] and fast is x


@pytest.mark.parametrize("depth", [50, 101])
def test_state_dict_is_pyslowfast_key_for_key(depth):
    """Keys, order and shapes of PySlowFast's backbone, at tiny width and at full size (on the meta device)."""
    own = {k: tuple(v.shape) for k, v in tiny(depth).state_dict().items()}
    assert list(own.items()) == list(pyslowfast_layout(depth, width=8).items())
    with torch.device("meta"):
        full = ENCODERS.get(f"slowfast{depth}")([3, 32, 224, 224])
    assert {k: tuple(v.shape) for k, v in full.state_dict().items()} == pyslowfast_layout(depth)
    assert full.s4_fuse.conv_f2s.weight.shape == (256, 128, FUSION_KERNEL[depth], 1, 1)
    assert full.s5.pathway0_res0.branch1.weight.shape == (2048, 1280, 1, 1, 1)


def pyslowfast_checkpoint(path, depth: int, width: int = 8) -> dict[str, torch.Tensor]:
    """A checkpoint as PySlowFast's save_checkpoint writes it: epoch, model_state (with head.projection),
    optimizer_state and the config as YAML text. Returns the backbone tensors it holds."""
    g = torch.Generator().manual_seed(depth)
    backbone = {}
    for key, shape in pyslowfast_layout(depth, width).items():
        backbone[key] = torch.randint(0, 9, shape) if key.endswith("tracked") else torch.randn(shape, generator=g)
    features = 32 * width + 4 * width
    head = {"head.projection.weight": torch.randn(400, features), "head.projection.bias": torch.zeros(400)}
    weight = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9, nesterov=True)
    weight.grad = torch.ones(3)
    optimizer.step()
    torch.save({"epoch": 195, "model_state": {**backbone, **head}, "optimizer_state": optimizer.state_dict(),
                "cfg": "MODEL:\n  ARCH: slowfast\n"}, path)  # fmt: skip
    return backbone


@pytest.mark.parametrize("depth", [50, 101])
def test_pyslowfast_checkpoint_loads_by_name_without_its_head(tmp_path, depth):
    path = tmp_path / "checkpoint_epoch_00196.pyth"
    backbone = pyslowfast_checkpoint(path, depth)
    enc = tiny(depth)
    report = load_pretrained(enc, path, "model.encoders.video.pretrained")
    assert report == {"ignored": ["head.projection.bias", "head.projection.weight"], "adapted": []}
    state = enc.state_dict()
    assert state.keys() == backbone.keys()
    assert all(torch.equal(state[k], v) for k, v in backbone.items())


def test_flow_slowfast_adapts_both_stems_and_refuses_foreign_keys(tmp_path):
    path = tmp_path / "rgb.pyth"
    backbone = pyslowfast_checkpoint(path, 50)
    flow = ENCODERS.get("slowfast50")([2, 8, 32, 32], width=8)
    report = load_pretrained(flow, path, "pretrained")
    assert report["adapted"] == ["s1.pathway0_stem.conv.weight", "s1.pathway1_stem.conv.weight"]
    mean = backbone["s1.pathway1_stem.conv.weight"].mean(dim=1, keepdim=True)
    assert torch.allclose(flow.s1.pathway1_stem.conv.weight, mean.expand(-1, 2, -1, -1, -1))
    torch.save({"model_state": {**backbone, "s6.pathway0_res0.branch2.a.weight": torch.zeros(1)}}, path)
    with pytest.raises(UserError, match="lacks, e.g. 's6.pathway0_res0"):
        load_pretrained(tiny(), path, "pretrained")


def seeded_state(layout: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Weights drawn in layout order: convs ~ N(0, 1/fan_in), BN scales and variances in [0.5, 1.5), the rest small."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith(("bn.weight", "running_var")):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) == 1:
            state[key] = torch.randn(shape, generator=g) * 0.1
        else:
            state[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    return state


def test_features_match_pyslowfast_golden_values():
    """Golden values produced once by PySlowFast's own modules (commit 287ec00: VideoModelStem, FuseFastToSlow,
    ResStage in SLOWFAST_8x8_R50's arrangement at width 8, pathways packed by pack_pathway_output), with these
    weights and this input, in eval mode, then averaged over (T, H, W) per pathway and concatenated."""
    enc = tiny()
    enc.load_state_dict(seeded_state(pyslowfast_layout(50, width=8), 0))
    x = torch.randn(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        f = enc.eval()(x)[0]
    slow_head, fast_head = [0.263875, 1.011618, 0.221112, 0.043751], [0.566907, 1.055392, 0.280382, 0.104510]
    assert torch.allclose(f[:4], torch.tensor(slow_head), atol=1e-4)
    assert torch.allclose(f[256:260], torch.tensor(fast_head), atol=1e-4)
    assert f[:256].sum().item() == pytest.approx(115.592438, abs=1e-3)
    assert f[256:].sum().item() == pytest.approx(9.428717, abs=1e-3)


def test_full_size_r50_matches_the_published_parameter_count():
    """SLOWFAST_8x8_R50 has 34.57M parameters with its 400-class head (PyTorchVideo model zoo), so the encoder
    without it should hold 34.57M - 0.922M = 33.64M: exactly the count of PySlowFast's layout, 33,644,488."""
    torch.manual_seed(0)
    enc = ENCODERS.get("slowfast50")([3, 16, 64, 64])
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    expected = sum(torch.Size(s).numel() for k, s in pyslowfast_layout(50).items() if not k.endswith(buffers))
    assert n_params(enc) == expected == 33_644_488
    assert round((n_params(enc) + HEAD) / 1e6, 2) == PUBLISHED_MILLIONS[50]
    with torch.no_grad():
        assert enc.eval()(torch.randn(1, 3, 16, 64, 64)).shape == (1, 2304)


def test_full_size_r101_parameter_count():
    """SLOWFAST_8x8_R101 (fusion kernel 5): 62.83M with the head, 61,904,968 without."""
    with torch.device("meta"):
        enc = ENCODERS.get("slowfast101")([3, 32, 224, 224])
    assert n_params(enc) == 61_904_968 and round((n_params(enc) + HEAD) / 1e6, 2) == PUBLISHED_MILLIONS[101]


@pytest.mark.parametrize(
    ("in_dim", "args", "message"),
    [
        ([3, 30, 32, 32], {}, "30 frames must be a multiple of alpha=4"),
        ([3, 32, 32], {}, r"needs video-shaped input \[C, T, H, W\]"),
        ([3, 8, 32, 32], {"width": 12}, "beta_inv must divide width"),
        ([3, 8, 32, 32], {"width": 8, "fusion_kernel": 4}, "fusion_kernel must be odd"),
    ],
)
def test_bad_settings_are_one_line_user_errors(in_dim, args, message):
    with pytest.raises(UserError, match=message) as err:
        ENCODERS.get("slowfast50")(in_dim, **args)
    assert "\n" not in str(err.value)


def test_late_fusion_builds_and_mmtm_is_refused():
    video = EncoderConfig(name="slowfast50", args={"width": 8})
    dims = {"video": [3, 8, 32, 32], "audio": 5}
    cfg = ModelConfig(encoders={"video": video}, hidden=(4,))
    torch.manual_seed(0)
    model = build_model(model_spec(cfg, dims, 3, ["video", "audio"]))
    out = model({"video": torch.randn(2, 3, 8, 32, 32), "audio": torch.randn(2, 5)})
    assert out["logits"].shape == (2, 3) and out["features"]["video"].shape == (2, 288)
    both = ModelConfig(encoders={"video": video, "other": video}, fusion="mmtm")
    with pytest.raises(UserError, match="mmtm needs the same fusion points"):
        build_model(model_spec(both, {"video": dims["video"], "other": dims["video"]}, 3, ["video", "other"]))


def test_tiny_r50_trains_on_a_full_size_64_frame_batch():
    """A (2, 3, 64, 224, 224) batch (64 consecutive frames at 224x224) forward and backward through SlowFast-50 at
    1/8 of its width; the slow pathway sees 16 of the frames."""
    enc = ENCODERS.get("slowfast50")([3, 64, 224, 224], width=8)
    x = torch.randn(2, 3, 64, 224, 224)
    slow, fast = enc.split(x)
    assert slow.shape == (2, 3, 16, 224, 224) and fast.shape == x.shape
    features = enc(x)
    assert features.shape == (2, 288)
    features.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters())
