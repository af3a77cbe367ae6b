"""Encoders: one module per modality, mapping a (B, ...) input to (B, D) features; ``out_dim`` is D."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmtool.registry import Registry

ENCODERS: Registry[type[nn.Module]] = Registry("encoder")


@ENCODERS.register("mlp")
class MLPEncoder(nn.Module):
    """Linear+ReLU layers; with a linear head on top this is the paper's 2-layer MLP (App. A.10).

    Args:
        in_dim: input size.
        hidden: widths of the hidden layers; the last one is the feature size.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int] = (100,)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.net = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_dim) -> (B, out_dim)
        return self.net(x)

    @property
    def blocks(self) -> list[nn.Module]:
        """The Linear+ReLU pairs in order: where intermediate fusion modules (MMTM) can sit between."""
        return [self.net[i : i + 2] for i in range(0, len(self.net), 2)]

    @property
    def block_dims(self) -> list[int]:
        return [self.net[i].out_features for i in range(0, len(self.net), 2)]


@ENCODERS.register("identity")
class IdentityEncoder(nn.Module):
    """Passes the input through: early fusion of raw inputs, or a head trained on cached features."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
