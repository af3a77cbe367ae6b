"""Encoders: one module per modality, mapping a (B, ...) input to (B, D) features; ``out_dim`` is D.

An encoder is built as ``cls(in_dim, **encoder_args)`` where ``in_dim`` is the per-sample input shape: an
int for vectors, a list such as [C, H, W] for images. The MLP and identity encoders flatten shaped inputs;
the CNN encoders (:mod:`mmtool.models.cnn`) need them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mmtool.registry import Registry

ENCODERS: Registry[type[nn.Module]] = Registry("encoder")


def flat_size(in_dim: int | Sequence[int]) -> int:
    """Number of input values per sample: ``in_dim`` itself, or the product of a shape."""
    return int(in_dim) if isinstance(in_dim, int) else math.prod(int(d) for d in in_dim)


@ENCODERS.register("mlp")
class MLPEncoder(nn.Module):
    """Linear+ReLU layers; with a linear head on top this is the paper's 2-layer MLP (App. A.10).

    Args:
        in_dim: input size, or input shape (flattened first).
        hidden: widths of the hidden layers; the last one is the feature size.
    """

    def __init__(self, in_dim: int | Sequence[int], hidden: Sequence[int] = (100,)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = flat_size(in_dim)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.net = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, *in_dim) -> (B, out_dim)
        return self.net(x.flatten(1))

    @property
    def blocks(self) -> list[nn.Module]:
        """The Linear+ReLU pairs in order (the first flattens): where intermediate fusion modules (MMTM)
        can sit between."""
        pairs = [self.net[i : i + 2] for i in range(0, len(self.net), 2)]
        return [nn.Sequential(nn.Flatten(), *pairs[0]), *pairs[1:]]

    @property
    def block_dims(self) -> list[int]:
        return [self.net[i].out_features for i in range(0, len(self.net), 2)]

    @property
    def mmtm_after(self) -> tuple[int, ...]:
        """Every block but the last: the last block's output is the feature vector the head reads."""
        return tuple(range(len(self.net) // 2 - 1))


@ENCODERS.register("identity")
class IdentityEncoder(nn.Module):
    """Passes the input through (flattened): early fusion of raw inputs, or a head on cached features."""

    def __init__(self, in_dim: int | Sequence[int]) -> None:
        super().__init__()
        self.out_dim = flat_size(in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)
