"""Kim et al. 2019's four-convolution network for (colored) MNIST, registered as encoder ``convnet4``.

Paper 002 (Sec. 6.1) uses "a neural network with four convolutional layers as the uni-modal branch and
employ[s] three MMTMs to connect them" on Colored-and-gray MNIST, without the layers' sizes; its released code
(github nyukat/greedy_multimodal_learning @cf28c4c) holds only the ModelNet40 model. The dataset is Kim et al.'s,
and so is the four-convolution network mmtool takes for it: ``convnet`` of github feidfoe/learning-not-to-learn
models.py @2d9f2c5 (our choice, data_prep/colored-mnist.md):

    bn0 (input BatchNorm) -> conv1 5x5, 32, pad 2 -> ReLU -> max-pool 3/2      28x28 -> 14x14
    conv2 3x3, 32 -> ReLU                                                         14x14
    conv3 3x3, 64, stride 2 -> ReLU                                               7x7
    conv4 3x3, 64 -> ReLU                                                         7x7
    global average pool -> (B, 64) features (their 7x7 AvgPool on 28x28 inputs)

Convolutions have biases and no BatchNorm after them, and keep PyTorch's default initialisation, as theirs.
The blocks are the four convolutions; the MMTMs (and, with ``se: true``, the SE blocks) follow the first three
(``mmtm_after = (0, 1, 2)``), the paper's "three MMTMs".
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mmtool.models.cnn import _global_pool, _shape, _StagedEncoder
from mmtool.models.encoders import ENCODERS

WIDTHS = (32, 32, 64, 64)


@ENCODERS.register("convnet4")
class ConvNet4Encoder(_StagedEncoder):
    """(B, C, H, W) images -> (B, 64) features (module docstring); any C (3: colored digits, 1: gray ones).

    Args:
        in_dim: per-sample shape ``[C, H, W]``.
        se: a Squeeze-and-Excitation block after each of the first three blocks (the uni-modal network).
        se_reduction, se_scale: see :class:`mmtool.models.cnn.SqueezeExcite`.
    """

    def __init__(self, in_dim: Sequence[int], se: bool = False, se_reduction: int = 2, se_scale: float = 1.0) -> None:
        super().__init__()
        channels = _shape("convnet4", in_dim, "CHW")[0]
        self.bn0 = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, WIDTHS[0], kernel_size=5, stride=1, padding=2)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(WIDTHS[0], WIDTHS[1], kernel_size=3, stride=1, padding=1)
        self.conv3 = nn.Conv2d(WIDTHS[1], WIDTHS[2], kernel_size=3, stride=2, padding=1)
        self.conv4 = nn.Conv2d(WIDTHS[2], WIDTHS[3], kernel_size=3, stride=1, padding=1)
        self.relu = nn.ReLU()  # not in place: an MMTM or SE block reads the activations it rescales
        self.pool = _global_pool(2)
        self.out_dim = WIDTHS[-1]
        self.block_dims = list(WIDTHS)
        self.mmtm_after = (0, 1, 2)
        self._add_se(se, se_reduction, se_scale)

    def _stages(self) -> list[list[nn.Module]]:
        return [
            [self.bn0, self.conv1, self.relu, self.maxpool],
            [self.conv2, self.relu],
            [self.conv3, self.relu],
            [self.conv4, self.relu],
        ]
