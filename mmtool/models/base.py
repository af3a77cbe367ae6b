"""The late-fusion network every architecture builds on."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class MultiModalNet(nn.Module):
    """Late fusion: one encoder per modality, then a fusion head.

    ``forward`` returns ``{"logits": (B, C), "features": {m: (B, D_m)}}`` plus ``"unimodal_logits"``
    when the head is a sum of per-modality parts. ``encode`` and ``fuse`` are exposed separately so
    analyses can replace a modality's features (utilization) or reuse cached features (probes).
    """

    def __init__(self, encoders: dict[str, nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.head = head

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def encode(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: enc(inputs[m]) for m, enc in self.encoders.items()}

    def fuse(self, features: dict[str, torch.Tensor]) -> dict[str, Any]:
        out = dict(self.head(features))
        out["features"] = features
        return out

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        return self.fuse(self.encode(inputs))
