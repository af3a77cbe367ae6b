"""Inception-I3D (Carreira & Zisserman 2017) as an encoder: (B, C, T, H, W) clips -> (B, 1024) features.

The layers, their names and their ``state_dict`` keys are those of the widely used PyTorch port
(github piergiaj/pytorch-i3d, ``pytorch_i3d.py``, commit b49fadf): ``Conv3d_1a_7x7``, ``MaxPool3d_2a_3x3``,
``Conv3d_2b_1x1``, ``Conv3d_2c_3x3``, ``MaxPool3d_3a_3x3``, ``Mixed_3b``, ``Mixed_3c``, ``MaxPool3d_4a_3x3``,
``Mixed_4b`` .. ``Mixed_4f``, ``MaxPool3d_5a_2x2``, ``Mixed_5b``, ``Mixed_5c``; a ``Unit3D`` is ``conv3d``
(no bias) + ``bn`` (eps 1e-3, momentum 0.01) + ReLU with TensorFlow's "SAME" padding computed from the input
size; an inception module's branches are ``b0``, ``b1a``/``b1b``, ``b2a``/``b2b`` and ``b3a`` (max pool) /
``b3b``, concatenated on channels. So the port's published ``rgb_imagenet.pt`` and ``rgb_charades.pt`` load by
name (``pretrained:`` in a recipe, :meth:`I3DEncoder.load_pretrained`); their classifier (``logits.*``) is
reported as ignored: the port's ``avg_pool`` + ``dropout`` + ``logits`` become mmtool's global average pool
(the features), ``model.head_dropout`` and the head. Old files without BN's ``num_batches_tracked`` load too.

Depth (1 channel) and other non-RGB inputs use the cross-modality initialisation of Wang et al. (TSN), as
Joze et al. (2020) do for depth: ``Conv3d_1a_7x7``'s RGB weights averaged over their input channels and
replicated (:func:`mmtool.models.pretrained.adapt_first_conv`).

MMTM fusion (:class:`~mmtool.models.mmtm.MMTMNet`): paper 002 (Sec. 6.1) puts "MMTMs as fusion modules in
the six final inception modules", following Joze et al. (2020). I3D has nine inception modules (Mixed_3b,
3c, 4b-4f, 5b, 5c); our reading is one MMTM after each of the last six, ``Mixed_4c`` .. ``Mixed_5c`` (the
last one on the final feature maps, as ResNet-18's MMTMs in paper 002 follow layer2, layer3 and layer4).
``mmtm_modules`` names others. The blocks MMTMNet runs end at those modules: the first holds the stem and
every module up to ``Mixed_4c``.

``width`` scales every layer's channels (at least 1 each): a tiny CPU variant for tests and smoke runs
(``width: 0.0625`` has about 50k parameters); weights load at ``width: 1`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mmtool.errors import UserError
from mmtool.models.cnn import _global_pool, _shape, _StagedEncoder
from mmtool.models.encoders import ENCODERS
from mmtool.models.pretrained import adapt_first_conv, read_state_dict

# inception modules: name -> output channels of branches (b0, b1a, b1b, b2a, b2b, b3b) (pytorch_i3d.py)
INCEPTION = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# max pools: name -> (kernel, stride), each placed before the module that follows it in ENDPOINTS
POOLS = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}
ENDPOINTS = (
    "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3", "Mixed_3b",
    "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f", "MaxPool3d_5a_2x2",
    "Mixed_5b", "Mixed_5c",
)  # fmt: skip
SIX_LAST = ("Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f", "Mixed_5b", "Mixed_5c")  # paper 002 Sec. 6.1 (docstring)
FIRST_CONV = "Conv3d_1a_7x7.conv3d.weight"
CLASSIFIER = "logits."  # the port's classifier: not part of the encoder


def same_pad(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    """Zero-pad (B, C, T, H, W) as TensorFlow's "SAME" does (more at the end when odd), as the port's
    ``compute_pad``: ``max(k - s, 0)`` where the size divides by the stride, else ``max(k - size % s, 0)``."""
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride), strict=True):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class Unit3D(nn.Module):
    """The port's ``Unit3D``: "SAME"-padded ``conv3d`` (no bias), ``bn`` and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int] = (1, 1, 1),
                 stride: Sequence[int] = (1, 1, 1)) -> None:  # fmt: skip
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, stride=self.stride, padding=0, bias=False)
        self.bn = nn.BatchNorm3d(out_channels, eps=0.001, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv3d(same_pad(x, self.kernel, self.stride))))


class MaxPool3dSame(nn.MaxPool3d):
    """The port's ``MaxPool3dSamePadding``: zero "SAME" padding, then max pooling (inputs are post-ReLU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(same_pad(x, self.kernel_size, self.stride))


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max pool -> 1x1."""

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, widths[0])
        self.b1a = Unit3D(in_channels, widths[1])
        self.b1b = Unit3D(widths[1], widths[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, widths[3])
        self.b2b = Unit3D(widths[3], widths[4], (3, 3, 3))
        self.b3a = MaxPool3dSame(kernel_size=(3, 3, 3), stride=(1, 1, 1))
        self.b3b = Unit3D(in_channels, widths[5])
        self.out_channels = widths[0] + widths[2] + widths[4] + widths[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))]
        return torch.cat(branches, dim=1)


@ENCODERS.register("i3d")
class I3DEncoder(_StagedEncoder):
    """Inception-I3D without its classifier (module docstring).

    Args:
        in_dim: per-sample shape ``[C, T, H, W]`` (C = 3 for RGB, 1 for depth).
        width: channel multiplier of every layer (1 = the published network).
        mmtm_modules: the inception modules an MMTM follows under ``fusion: mmtm`` (default: the six last).
        se: a Squeeze-and-Excitation block after each of those modules instead (paper 002's uni-modal networks,
            :class:`~mmtool.models.cnn.SqueezeExcite`; ``se_reduction``, ``se_scale`` as there). A published
            checkpoint then loads into the I3D layers; the SE blocks keep their initialisation (reported as ``kept``).
    """

    def __init__(self, in_dim: Sequence[int], width: float = 1.0, mmtm_modules: Sequence[str] = SIX_LAST,
                 se: bool = False, se_reduction: int = 2, se_scale: float = 1.0) -> None:  # fmt: skip
        super().__init__()
        channels = _shape("i3d", in_dim, "CTHW")[0]
        if not 0 < float(width) <= 4:
            raise UserError(f"encoder 'i3d': width must be in (0, 4], got {width}")
        unknown = [m for m in mmtm_modules if m not in INCEPTION]
        if unknown or not mmtm_modules:
            raise UserError(f"encoder 'i3d': mmtm_modules must name inception modules ({', '.join(INCEPTION)}), "
                            f"got {list(mmtm_modules)}")  # fmt: skip
        self.width = float(width)
        dims = self._build(channels)
        self.pool = _global_pool(3)
        self.out_dim = dims["Mixed_5c"]
        ends = sorted({ENDPOINTS.index(m) for m in mmtm_modules} | {len(ENDPOINTS) - 1})
        self._block_ends = [ENDPOINTS[i] for i in ends]
        self.block_dims = [dims[name] for name in self._block_ends]
        self.mmtm_after = tuple(i for i, name in enumerate(self._block_ends) if name in mmtm_modules)
        self._add_se(se, se_reduction, se_scale)

    def _scaled(self, c: int) -> int:
        return max(1, round(c * self.width))

    def _build(self, channels: int) -> dict[str, int]:
        """Register the endpoints under the port's names; returns the channels out of each."""
        c64, c192 = self._scaled(64), self._scaled(192)
        self.add_module("Conv3d_1a_7x7", Unit3D(channels, c64, (7, 7, 7), (2, 2, 2)))
        self.add_module("Conv3d_2b_1x1", Unit3D(c64, c64))
        self.add_module("Conv3d_2c_3x3", Unit3D(c64, c192, (3, 3, 3)))
        for name, (kernel, stride) in POOLS.items():
            self.add_module(name, MaxPool3dSame(kernel_size=kernel, stride=stride))
        dims, current = {}, c192
        for name, widths in INCEPTION.items():
            module = InceptionModule(current, [self._scaled(w) for w in widths])
            self.add_module(name, module)
            dims[name] = current = module.out_channels
        return dims

    def _stages(self) -> list[list[nn.Module]]:
        stages, current = [], []
        for name in ENDPOINTS:
            current.append(self._modules[name])
            if name in self._block_ends:
                stages.append(current)
                current = []
        return stages

    def load_pretrained(self, path: Path, where: str) -> dict[str, list[str]]:
        """Load a checkpoint in the port's key layout (``rgb_imagenet.pt``, ``rgb_charades.pt``, or one of
        mmtool's own); returns the ignored classifier keys and the adapted first convolution."""
        state = read_state_dict(Path(path))
        own = self.state_dict()
        adapted = []
        if FIRST_CONV in state and state[FIRST_CONV].shape[1] != own[FIRST_CONV].shape[1]:
            state[FIRST_CONV] = adapt_first_conv(state[FIRST_CONV], own[FIRST_CONV].shape[1])
            adapted.append(FIRST_CONV)
        ignored = sorted(k for k in state if k not in own)
        extra = [k for k in ignored if not k.startswith(CLASSIFIER)]
        if extra:
            raise UserError(f"{where}: {path} has weights I3D lacks, e.g. {extra[0]!r}")
        for key in own:  # files saved before BN counted its batches (PyTorch < 0.4.1) lack num_batches_tracked
            if key.endswith("num_batches_tracked") and key not in state:
                state[key] = own[key]
        kept = sorted(k for k in own if k not in state and k.startswith("se."))  # SE blocks: not in a published I3D
        missing = sorted(k for k in own if k not in state and k not in kept)
        if missing:
            raise UserError(f"{where}: {path} lacks {len(missing)} of I3D's weights, e.g. {missing[0]!r}")
        for key, value in own.items():
            if key not in kept and state[key].shape != value.shape:
                raise UserError(f"{where}: {key} is {list(state[key].shape)} in {path}, I3D (width "
                                f"{self.width:g}) needs {list(value.shape)}")  # fmt: skip
        self.load_state_dict({k: state[k] for k in own if k not in kept}, strict=not kept)
        return {"ignored": ignored, "adapted": adapted, **({"kept": kept} if kept else {})}
