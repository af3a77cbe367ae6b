"""Convolutional encoders for image and video modalities, registered in :data:`ENCODERS`.

Every encoder here is built as ``cls(in_dim, **encoder_args)`` where ``in_dim`` is the per-sample input
shape: ``[C, H, W]`` for the 2-D encoders and ``[C, T, H, W]`` for the 3-D one. A flat size (an int)
raises a :class:`~mmtool.errors.UserError`. Each encoder maps a (B, *in_dim) batch to (B, out_dim)
features and exposes its stages for intermediate fusion (MMTM):

* ``blocks``: the stages in order, so that ``pool(blocks[-1](... blocks[0](x)))`` equals ``forward(x)``;
  they are views onto the encoder's own modules (no copies, no extra ``state_dict`` keys);
* ``block_dims``: the output channels of each block;
* ``mmtm_after``: the indices of the blocks after which an MMTM may sit;
* ``pool``: global average pooling over every spatial/temporal dimension, then flatten.

Encoders:

``resnet18`` (:class:`ResNet18Encoder`)
    torchvision's ImageNet ResNet-18 without its final ``fc`` layer, for any number of input channels
    (1 for a spectrogram, 2 for optical flow, 3 for RGB). Blocks: [stem + layer1 + layer2, layer3, layer4]
    with 128, 256 and 512 channels, i.e. MMTMs after layer2, layer3 and layer4 as in paper 002.
``r3d18`` (:class:`R3D18Encoder`)
    torchvision's Kinetics-400 R3D-18 video network (``torchvision.models.video.r3d_18``) without ``fc``;
    input (B, C, T, H, W). Same three blocks and widths as ``resnet18``.
``cnn`` (:class:`SmallCNNEncoder`)
    a small Conv-BN-ReLU stack for tiny images (e.g. 8x8 digits) that trains in seconds on a CPU.
``convnet4`` (:class:`mmtool.models.convnet.ConvNet4Encoder`)
    Kim et al. 2019's four-convolution network for (colored) MNIST: paper 002's Colored-and-gray MNIST branch.

``se: true`` (``resnet18``, ``cnn``, ``convnet4``) adds a Squeeze-and-Excitation block after every block an
MMTM may follow (:class:`SqueezeExcite`): the uni-modal networks of paper 002's "uni-modal (best)" rows.

Compatibility promise: the ``state_dict`` of ``resnet18`` and ``r3d18`` has exactly torchvision's keys
and tensor shapes minus ``fc.weight``/``fc.bias`` (``conv1.weight``, ``layer2.0.downsample.1.running_var``,
``stem.0.weight``, ``layer3.1.conv2.0.weight``, ...), so the published torchvision weights load with
``encoder.load_state_dict(weights, strict=False)``, which reports only the ``fc`` keys as unexpected.
Pretrained RGB weights need ``C == 3``; with other channel counts, load them without ``conv1``/``stem.0``
(or adapt that tensor first). Weights are initialised as torchvision does (Kaiming-normal, fan-out, for
convolutions; BatchNorm weight 1 and bias 0).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import nn

from mmtool.errors import UserError
from mmtool.models.encoders import ENCODERS

RESNET_WIDTHS = (64, 128, 256, 512)  # channels of layer1..layer4
RESNET_DEPTHS = (2, 2, 2, 2)  # residual blocks per layer (the "18" in ResNet-18 / R3D-18)


def _shape(name: str, in_dim: int | Sequence[int], axes: str) -> tuple[int, ...]:
    """Check that ``in_dim`` is a per-sample shape with one positive size per axis (``axes`` is "CHW" or "CTHW")."""
    expected = "[" + ", ".join(axes) + "]"
    kind = "video" if "T" in axes else "image"
    if isinstance(in_dim, numbers.Integral):
        raise UserError(f"encoder {name!r} needs {kind}-shaped input {expected}, got a flat vector of size {in_dim}")
    shape = tuple(int(d) for d in in_dim)
    if len(shape) != len(axes) or any(d < 1 for d in shape):
        raise UserError(f"encoder {name!r} needs {kind}-shaped input {expected}, got shape {list(shape)}")
    return shape


def _init_torchvision(module: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal (fan-out, ReLU) convolutions, BN weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _global_pool(dims: int) -> nn.Sequential:
    """(B, C, *spatial) -> (B, C): adaptive average pooling to size 1 in every spatial dimension, then flatten."""
    avg = nn.AdaptiveAvgPool2d((1, 1)) if dims == 2 else nn.AdaptiveAvgPool3d((1, 1, 1))
    return nn.Sequential(avg, nn.Flatten(1))


class _ResidualBlock2d(nn.Module):
    """ResNet basic block, named as torchvision's: conv1-bn1-relu-conv2-bn2, plus the (downsampled) input."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class _ResidualBlock3d(nn.Module):
    """R3D basic block, named as torchvision's: conv1 = (Conv3d, BN, ReLU), conv2 = (Conv3d, BN), plus the input.

    The 3x3x3 convolution of ``conv1`` and the 1x1x1 ``downsample`` stride all three dimensions (time too).
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv3d(in_channels, channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm3d(channels),
            nn.ReLU(inplace=True),
        )
        self.conv2 = nn.Sequential(
            nn.Conv3d(channels, channels, 3, stride=1, padding=1, bias=False), nn.BatchNorm3d(channels)
        )
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm3d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + shortcut)


def _residual_layers(block: type[nn.Module]) -> list[nn.Sequential]:
    """layer1..layer4 of an 18-layer ResNet: widths 64-512, stride 2 in the first block of layer2..layer4."""
    layers, width = [], RESNET_WIDTHS[0]
    for i, (channels, depth) in enumerate(zip(RESNET_WIDTHS, RESNET_DEPTHS, strict=True)):
        stride = 1 if i == 0 else 2
        units = [block(width, channels, stride)] + [block(channels, channels) for _ in range(depth - 1)]
        layers.append(nn.Sequential(*units))
        width = channels
    return layers


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al. 2018): ``a * scale * sigmoid(FC(ReLU(FC(mean_hw(a)))))`` channel-wise.

    The uni-modal counterpart of an MMTM (paper 002, Sec. 6.4: "Squeeze-and-Excitation blocks ... to obtain
    uni-modal DNNs that are comparable to the multi-modal DNNs with MMTMs"): the same squeeze (the spatial mean)
    and the same FC-ReLU-FC bottleneck, fed by one branch. ``scale`` 1 is Hu et al.'s sigmoid gate (default);
    2 is the MMTM's ``2 sigmoid(w)`` (paper 002, Eq. 2), which starts as the identity map, for a comparison
    with everything equal but the second modality. The hidden width is ``max(1, C // reduction)``; the default
    reduction 2 is the width of mmtool's MMTM, ``(C0 + C1) / 4``, between two branches of C channels each.
    """

    def __init__(self, channels: int, reduction: int = 2, scale: float = 1.0) -> None:
        super().__init__()
        if reduction < 1 or scale <= 0:
            raise UserError(f"se_reduction must be >= 1 and se_scale > 0, got {reduction} and {scale}")
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.scale = float(scale)

    def forward(self, a: torch.Tensor) -> torch.Tensor:  # (B, C, ...) -> (B, C, ...)
        w = self.scale * torch.sigmoid(self.fc(a.flatten(2).mean(-1) if a.dim() > 2 else a))  # (B, C)
        return a * w.view(*w.shape, *([1] * (a.dim() - 2)))


class _StagedEncoder(nn.Module):
    """Shared ``forward``/``blocks`` logic for encoders whose stages are lists of named submodules.

    :meth:`_add_se` puts a :class:`SqueezeExcite` block after every block an MMTM may follow (``mmtm_after``):
    the uni-modal network of paper 002's "uni-modal (best)" rows. It is then part of ``blocks`` and ``forward``.
    """

    out_dim: int
    block_dims: list[int]
    mmtm_after: tuple[int, ...]
    pool: nn.Module

    def _stages(self) -> list[list[nn.Module]]:
        """The modules of each block, in order (references to registered submodules)."""
        raise NotImplementedError

    def _add_se(self, enabled: bool, reduction: int, scale: float) -> None:
        """When ``enabled``, one SE block (``se.<k>``) after each block of ``mmtm_after``, in that order."""
        if enabled:
            self.se = nn.ModuleList([SqueezeExcite(self.block_dims[b], reduction, scale) for b in self.mmtm_after])

    def _staged(self) -> list[list[nn.Module]]:
        stages, se = self._stages(), self._modules.get("se")  # no class attribute: nn.Module keeps it in _modules
        if se is None:
            return stages
        return [mods + [se[self.mmtm_after.index(b)]] if b in self.mmtm_after else mods
                for b, mods in enumerate(stages)]  # fmt: skip

    @property
    def blocks(self) -> list[nn.Module]:
        """The stages in order, as ``nn.Sequential`` views built on each access: they hold the encoder's own
        modules, so they share its parameters and add no ``state_dict`` keys."""
        return [nn.Sequential(*modules) for modules in self._staged()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, *in_dim) -> (B, out_dim)
        for modules in self._staged():
            for module in modules:
                x = module(x)
        return self.pool(x)


@ENCODERS.register("resnet18")
class ResNet18Encoder(_StagedEncoder):
    """torchvision's ResNet-18 without ``fc``: (B, C, H, W) images -> (B, 512) features.

    Args:
        in_dim: per-sample shape ``[C, H, W]``.
        in_channels: input channels; overrides ``in_dim[0]`` when given.
    """

    def __init__(
        self, in_dim: Sequence[int], in_channels: int | None = None, se: bool = False, se_reduction: int = 2,
        se_scale: float = 1.0,
    ) -> None:
        super().__init__()
        shape = _shape("resnet18", in_dim, "CHW")
        channels = shape[0] if in_channels is None else int(in_channels)
        if channels < 1:
            raise UserError(f"encoder 'resnet18': in_channels must be positive, got {channels}")
        self.conv1 = nn.Conv2d(channels, RESNET_WIDTHS[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(RESNET_WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1, self.layer2, self.layer3, self.layer4 = _residual_layers(_ResidualBlock2d)
        self.pool = _global_pool(2)
        _init_torchvision(self)
        self.out_dim = RESNET_WIDTHS[-1]
        self.block_dims = list(RESNET_WIDTHS[1:])
        self.mmtm_after = (0, 1, 2)
        self._add_se(se, se_reduction, se_scale)  # after _init_torchvision: SE keeps nn.Linear's init

    def _stages(self) -> list[list[nn.Module]]:
        stem = [self.conv1, self.bn1, self.relu, self.maxpool, self.layer1, self.layer2]
        return [stem, [self.layer3], [self.layer4]]


@ENCODERS.register("r3d18")
class R3D18Encoder(_StagedEncoder):
    """torchvision's R3D-18 video network without ``fc``: (B, C, T, H, W) clips -> (B, 512) features.

    Args:
        in_dim: per-sample shape ``[C, T, H, W]``.
    """

    def __init__(self, in_dim: Sequence[int]) -> None:
        super().__init__()
        channels = _shape("r3d18", in_dim, "CTHW")[0]
        self.stem = nn.Sequential(
            nn.Conv3d(channels, RESNET_WIDTHS[0], (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(RESNET_WIDTHS[0]),
            nn.ReLU(inplace=True),
        )
        self.layer1, self.layer2, self.layer3, self.layer4 = _residual_layers(_ResidualBlock3d)
        self.pool = _global_pool(3)
        _init_torchvision(self)
        self.out_dim = RESNET_WIDTHS[-1]
        self.block_dims = list(RESNET_WIDTHS[1:])
        self.mmtm_after = (0, 1, 2)

    def _stages(self) -> list[list[nn.Module]]:
        return [[self.stem, self.layer1, self.layer2], [self.layer3], [self.layer4]]


@ENCODERS.register("cnn")
class SmallCNNEncoder(_StagedEncoder):
    """Conv3x3-BN-ReLU blocks for tiny images: (B, C, H, W) -> (B, hidden[-1]).

    Args:
        in_dim: per-sample shape ``[C, H, W]``.
        hidden: output channels of each block; the first block keeps the resolution, later ones halve it.
    """

    def __init__(
        self, in_dim: Sequence[int], hidden: Sequence[int] = (16, 32), se: bool = False, se_reduction: int = 2,
        se_scale: float = 1.0,
    ) -> None:
        super().__init__()
        channels = _shape("cnn", in_dim, "CHW")[0]
        widths = [int(h) for h in hidden]
        if not widths or any(h < 1 for h in widths):
            raise UserError(f"encoder 'cnn': model.hidden must be a non-empty list of positive widths, got {widths}")
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            layers.append(
                nn.Sequential(
                    nn.Conv2d(channels, width, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                )
            )
            channels = width
        self.layers = nn.ModuleList(layers)
        self.pool = _global_pool(2)
        self.out_dim = widths[-1]
        self.block_dims = widths
        self.mmtm_after = tuple(range(len(widths)))
        self._add_se(se, se_reduction, se_scale)

    def _stages(self) -> list[list[nn.Module]]:
        return [[layer] for layer in self.layers]
