"""SlowFast video encoders (Feichtenhofer et al., ICCV 2019) laid out as PySlowFast builds them.

Paper 000 (App. A.1/A.2) encodes Kinetics-400 RGB with SlowFast-50/101. ``slowfast50`` and ``slowfast101``
rebuild the backbone of PySlowFast's ``SLOWFAST_8x8_R50`` / ``SLOWFAST_8x8_R101`` (facebookresearch/SlowFast,
``slowfast/models/video_model_builder.py``, ``resnet_helper.py``, ``stem_helper.py``; commit 287ec00) with
module names that give exactly its ``state_dict`` keys, so a checkpoint trained with PySlowFast (weights
under ``model_state``) loads by name through :mod:`mmtool.models.pretrained`. The code is mmtool's own;
what carries over are the facts below and the key names. ``tests/unit/test_slowfast.py`` pins the features
to golden values computed once by PySlowFast's own stem, fusion and stage modules with the same weights.

Input and pathways. The encoder reads one clip (B, C, T, H, W): T frames of the fast pathway, e.g. the
8x8 recipes' 32 frames taken at stride 2 from a 64-frame window. The slow pathway takes T // alpha of them
at ``linspace(0, T - 1, T // alpha)`` rounded down, PySlowFast's rule (``pack_pathway_output``; for T = 32,
alpha = 4: frames 0, 4, 8, 13, 17, 22, 26, 31 — not a strict stride of alpha, but what the published
weights were trained and tested on). T must be a multiple of alpha, so that the time-strided lateral
convolutions give the slow pathway's length.

Architecture (R50 numbers; ``width`` = WIDTH_PER_GROUP = 64, ``beta_inv`` = 8, fusion ratio 2, alpha 4):

* ``s1`` stem, per pathway: conv (1x7x7 slow with 64 channels, 5x7x7 fast with 8), stride (1, 2, 2), then
  BN, ReLU and a (1, 3, 3) max pool of stride (1, 2, 2);
* ``s1_fuse`` .. ``s4_fuse`` lateral connections: fast -> slow by a (k, 1, 1) convolution of temporal stride
  alpha with ``fusion_ratio`` x the fast channels (k = FUSION_KERNEL_SZ: 7 in SLOWFAST_8x8_R50, 5 in
  SLOWFAST_8x8_R101_101_101), BN and ReLU, concatenated to the slow channels;
* ``s2`` .. ``s5`` bottleneck stages of 3-4-6-3 (R50) or 3-4-23-3 (R101) blocks, outputs 256-512-1024-2048
  slow and 32-64-128-256 fast; each block: ``a`` (Tx1x1), ``b`` (1x3x3, carrying the spatial stride:
  STRIDE_1X1 False), ``c`` (1x1x1), a BN after each, and a 1x1x1 projection shortcut ``branch1`` in the
  first block of a stage. Temporal kernels of ``a`` (slow, fast): res2 (1, 3), res3 (1, 3), res4 (3, 3),
  res5 (3, 3), in every block (NUM_BLOCK_TEMP_KERNEL = the block counts); spatial strides 1-2-2-2, no
  dilation, no temporal striding after the stem (PySlowFast's ``pathway{0,1}_pool`` after ``s2`` is a
  1x1x1 max pool for SlowFast and is left out: it holds no weights);
* ``pool``: global average over (T, H, W) of each pathway, concatenated: (B, 2048 + 256 = 2304) for R50 and
  R101. PySlowFast's head averages over the training crop (T/alpha, 7, 7) before dropout and
  ``head.projection``; on larger test crops it applies the projection at every position and averages the
  softmax instead. The head is not part of the encoder.

Initialisation as PySlowFast's ``init_weights``: Kaiming-normal (fan-out) convolutions, BN weight 1 and bias
0, except the last BN of every bottleneck (``c_bn``), whose weight starts at 0 (ZERO_INIT_FINAL_BN: True).

State-dict mapping (ours = PySlowFast's, key for key; ``bn`` stands for its five entries ``weight``,
``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``)::

    s1.pathway{p}_stem.conv.weight, s1.pathway{p}_stem.bn.*          p = 0 slow, 1 fast
    s{k}_fuse.conv_f2s.weight, s{k}_fuse.bn.*                        k = 1..4
    s{k}.pathway{p}_res{i}.branch1.weight, ...branch1_bn.*           k = 2..5, i = 0 only
    s{k}.pathway{p}_res{i}.branch2.{a,b,c}.weight, ...branch2.{a,b,c}_bn.*
    head.projection.weight, head.projection.bias                     not ours: reported as skipped

Encoder protocol: ``blocks`` are [stem + s1_fuse, s2 + s2_fuse, s3 + s3_fuse, s4 + s4_fuse, s5]; every
block after the first reads and returns the pair [slow, fast], so ``block_dims`` counts both pathways'
channels. ``mmtm_after`` is empty: MMTM squeezes one tensor per block and is not used with SlowFast, so
``fusion: mmtm`` with a SlowFast encoder is refused with a one-line error; late fusion works as with any
encoder. Not covered: non-local blocks, ResNeXt groups, dilation, and the mixed-depth R101_50_50 variants.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmtool.errors import UserError
from mmtool.models.cnn import _init_torchvision, _shape, _StagedEncoder
from mmtool.models.encoders import ENCODERS

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}  # bottleneck blocks in res2..res5 (_MODEL_STAGE_DEPTH)
STEM_KERNELS = (1, 5)  # temporal kernel of the stem conv: slow, fast
STAGE_KERNELS = ((1, 3), (1, 3), (3, 3), (3, 3))  # temporal kernel of each block's "a" conv in res2..res5
SPATIAL_STRIDES = (1, 2, 2, 2)  # res2..res5, in the 1x3x3 "b" conv of a stage's first block
Pair = list[torch.Tensor]  # [slow (B, C_s, T / alpha, H, W), fast (B, C_f, T, H, W)]


def _conv_bn(cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int] = (1, 1, 1)) -> tuple:
    """A bias-free Conv3d with 'same' padding in every dimension, and the BN that follows it."""
    conv = nn.Conv3d(cin, cout, tuple(kernel), stride=tuple(stride), padding=tuple(k // 2 for k in kernel),
                     bias=False)  # fmt: skip
    return conv, nn.BatchNorm3d(cout)


class _Bottleneck(nn.Module):
    """``a`` (t x 1 x 1) -> ``b`` (1 x 3 x 3, strided) -> ``c`` (1 x 1 x 1), each followed by its BN."""

    def __init__(self, cin: int, cout: int, inner: int, t_kernel: int, stride: int) -> None:
        super().__init__()
        self.a, self.a_bn = _conv_bn(cin, inner, (t_kernel, 1, 1))
        self.b, self.b_bn = _conv_bn(inner, inner, (1, 3, 3), (1, stride, stride))
        self.c, self.c_bn = _conv_bn(inner, cout, (1, 1, 1))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.a_bn(self.a(x)))
        x = self.relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class _ResBlock(nn.Module):
    """``relu(branch2(x) + shortcut(x))``; the shortcut projects (``branch1``) where width or stride change."""

    def __init__(self, cin: int, cout: int, inner: int, t_kernel: int, stride: int) -> None:
        super().__init__()
        self.branch1 = self.branch1_bn = None
        if cin != cout or stride != 1:
            self.branch1, self.branch1_bn = _conv_bn(cin, cout, (1, 1, 1), (1, stride, stride))
        self.branch2 = _Bottleneck(cin, cout, inner, t_kernel, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.branch1 is None else self.branch1_bn(self.branch1(x))
        return self.relu(self.branch2(x) + shortcut)


class _Stage(nn.Module):
    """One residual stage of both pathways: blocks ``pathway{p}_res{i}``, pathway by pathway."""

    def __init__(self, cins: Sequence[int], couts: Sequence[int], inners: Sequence[int],
                 t_kernels: Sequence[int], blocks: int, stride: int) -> None:  # fmt: skip
        super().__init__()
        self.names: list[list[str]] = [[], []]
        for p in (0, 1):
            for i in range(blocks):
                cin, block_stride = (cins[p], stride) if i == 0 else (couts[p], 1)
                name = f"pathway{p}_res{i}"
                self.add_module(name, _ResBlock(cin, couts[p], inners[p], t_kernels[p], block_stride))
                self.names[p].append(name)

    def forward(self, pair: Pair) -> Pair:
        out = []
        for p, x in enumerate(pair):
            for name in self.names[p]:
                x = getattr(self, name)(x)
            out.append(x)
        return out


class _StemPathway(nn.Module):
    """conv (t x 7 x 7, stride (1, 2, 2)) -> BN -> ReLU -> max pool (1 x 3 x 3, stride (1, 2, 2))."""

    def __init__(self, cin: int, cout: int, t_kernel: int) -> None:
        super().__init__()
        self.conv, self.bn = _conv_bn(cin, cout, (t_kernel, 7, 7), (1, 2, 2))
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn(self.conv(x))))


class _Stem(nn.Module):
    """Both pathways' stems, ``pathway0_stem`` (slow) and ``pathway1_stem`` (fast)."""

    def __init__(self, cin: int, couts: Sequence[int]) -> None:
        super().__init__()
        self.pathway0_stem = _StemPathway(cin, couts[0], STEM_KERNELS[0])
        self.pathway1_stem = _StemPathway(cin, couts[1], STEM_KERNELS[1])

    def forward(self, pair: Pair) -> Pair:
        return [self.pathway0_stem(pair[0]), self.pathway1_stem(pair[1])]


class _FastToSlow(nn.Module):
    """Lateral connection: the fast features, time-strided by alpha, concatenated to the slow channels."""

    def __init__(self, fast_channels: int, ratio: int, kernel: int, alpha: int) -> None:
        super().__init__()
        self.conv_f2s, self.bn = _conv_bn(fast_channels, fast_channels * ratio, (kernel, 1, 1), (alpha, 1, 1))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, pair: Pair) -> Pair:
        slow, fast = pair
        lateral = self.relu(self.bn(self.conv_f2s(fast)))  # (B, ratio * C_f, T / alpha, H, W)
        return [torch.cat([slow, lateral], dim=1), fast]


class _SplitPathways(nn.Module):
    """(B, C, T, H, W) -> [slow: T // alpha frames at linspace(0, T - 1) rounded down, fast: all T]."""

    def __init__(self, alpha: int) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> Pair:
        frames = x.shape[2]
        index = torch.linspace(0, frames - 1, frames // self.alpha, device=x.device).long()
        return [x.index_select(2, index), x]


class _PairPool(nn.Module):
    """[slow, fast] -> (B, C_s + C_f): each pathway averaged over (T, H, W), slow channels first."""

    def forward(self, pair: Pair) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3, 4)) for x in pair], dim=1)


class SlowFast(_StagedEncoder):
    """SlowFast-R50/R101 backbone as PySlowFast names it: (B, C, T, H, W) clips -> (B, 32 w (1 + 1/beta_inv)).

    Args:
        in_dim: per-sample shape ``[C, T, H, W]``; T (fast-pathway frames) a multiple of ``alpha``.
        depth: 50 or 101 (bottleneck blocks 3-4-6-3 or 3-4-23-3).
        width: slow-pathway stem channels (WIDTH_PER_GROUP, 64); smaller for tiny test models.
        alpha: frame-rate ratio fast / slow (SLOWFAST.ALPHA).
        beta_inv: channel ratio slow / fast (SLOWFAST.BETA_INV); must divide ``width``.
        fusion_ratio: lateral output channels per fast channel (SLOWFAST.FUSION_CONV_CHANNEL_RATIO).
        fusion_kernel: temporal kernel of the lateral convolutions (SLOWFAST.FUSION_KERNEL_SZ), odd.
        zero_init_final_bn: start every bottleneck's last BN weight at 0 (RESNET.ZERO_INIT_FINAL_BN).
    """

    def __init__(self, in_dim: Sequence[int], depth: int = 50, width: int = 64, alpha: int = 4, beta_inv: int = 8,
                 fusion_ratio: int = 2, fusion_kernel: int = 7, zero_init_final_bn: bool = True) -> None:  # fmt: skip
        super().__init__()
        name = f"slowfast{depth}"
        channels, frames = _shape(name, in_dim, "CTHW")[:2]
        _check(name, depth, width, alpha, beta_inv, fusion_ratio, fusion_kernel, frames)
        fast = width // beta_inv
        self.split = _SplitPathways(alpha)
        self.s1 = _Stem(channels, (width, fast))
        self.s1_fuse = _FastToSlow(fast, fusion_ratio, fusion_kernel, alpha)
        cins, dims = (width + fast * fusion_ratio, fast), []
        for k, blocks in enumerate(DEPTHS[depth]):
            scale = 2**k  # widths double from stage to stage
            couts, inners = (4 * width * scale, 4 * fast * scale), (width * scale, fast * scale)
            stage = _Stage(cins, couts, inners, STAGE_KERNELS[k], blocks, SPATIAL_STRIDES[k])
            self.add_module(f"s{k + 2}", stage)
            if k < 3:
                self.add_module(f"s{k + 2}_fuse", _FastToSlow(couts[1], fusion_ratio, fusion_kernel, alpha))
            cins = (couts[0] + couts[1] * fusion_ratio, couts[1]) if k < 3 else couts
            dims.append(sum(cins))
        self.pool = _PairPool()
        self.block_dims = [width + fast * (fusion_ratio + 1), *dims]
        self.out_dim = self.block_dims[-1]
        self.mmtm_after = ()
        _init_torchvision(self)
        if zero_init_final_bn:
            for module in self.modules():
                if isinstance(module, _Bottleneck):
                    nn.init.zeros_(module.c_bn.weight)

    def _stages(self) -> list[list[nn.Module]]:
        return [[self.split, self.s1, self.s1_fuse], [self.s2, self.s2_fuse], [self.s3, self.s3_fuse],
                [self.s4, self.s4_fuse], [self.s5]]  # fmt: skip


def _check(name: str, depth: int, width: int, alpha: int, beta_inv: int, ratio: int, kernel: int,
           frames: int) -> None:  # fmt: skip
    """One-line errors for settings PySlowFast's layout cannot take, or that would fail on the first forward."""
    if depth not in DEPTHS:
        raise UserError(f"encoder {name!r}: depth must be one of {sorted(DEPTHS)}, got {depth}")
    if min(width, alpha, beta_inv, ratio, kernel) < 1 or width % beta_inv:
        raise UserError(f"encoder {name!r}: width, alpha, beta_inv, fusion_ratio and fusion_kernel must be positive "
                        f"and beta_inv must divide width (got width={width}, beta_inv={beta_inv})")  # fmt: skip
    if kernel % 2 == 0:
        raise UserError(f"encoder {name!r}: fusion_kernel must be odd (to keep time aligned), got {kernel}")
    if frames % alpha:
        raise UserError(f"encoder {name!r}: the clip's {frames} frames must be a multiple of alpha={alpha}")


@ENCODERS.register("slowfast50")
class SlowFast50Encoder(SlowFast):
    """SLOWFAST_8x8_R50's backbone (fusion kernel 7): (B, C, T, H, W) -> (B, 2304); see :class:`SlowFast`."""

    def __init__(self, in_dim: Sequence[int], width: int = 64, alpha: int = 4, beta_inv: int = 8,
                 fusion_ratio: int = 2, fusion_kernel: int = 7, zero_init_final_bn: bool = True) -> None:  # fmt: skip
        super().__init__(in_dim, 50, width, alpha, beta_inv, fusion_ratio, fusion_kernel, zero_init_final_bn)


@ENCODERS.register("slowfast101")
class SlowFast101Encoder(SlowFast):
    """SLOWFAST_8x8_R101_101_101's backbone: as R50 with 23 res4 blocks and fusion kernel 5 (that config's
    FUSION_KERNEL_SZ); (B, C, T, H, W) -> (B, 2304); see :class:`SlowFast`."""

    def __init__(self, in_dim: Sequence[int], width: int = 64, alpha: int = 4, beta_inv: int = 8,
                 fusion_ratio: int = 2, fusion_kernel: int = 5, zero_init_final_bn: bool = True) -> None:  # fmt: skip
        super().__init__(in_dim, 101, width, alpha, beta_inv, fusion_ratio, fusion_kernel, zero_init_final_bn)
