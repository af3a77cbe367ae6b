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

    def __init__(
        self, encoders: dict[str, nn.Module], head: nn.Module, transforms: dict[str, nn.Module] | None = None
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.head = head
        # input transforms run on the training device before a modality's encoder (e.g. waveform ->
        # spectrogram); they hold no state_dict entries, so checkpoints keep torchvision's encoder keys
        self.transforms = nn.ModuleDict(transforms or {})

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def transform_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw batch -> what the encoders read (each modality's input transform, where it has one)."""
        return {m: self.transforms[m](x) if m in self.transforms else x for m, x in inputs.items()}

    def encode(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Features of the modalities present in ``inputs`` (a subset encodes only those)."""
        x = self.transform_inputs(inputs)
        return {m: enc(x[m]) for m, enc in self.encoders.items() if m in x}

    def fuse(self, features: dict[str, torch.Tensor]) -> dict[str, Any]:
        out = dict(self.head(features))
        out["features"] = features
        return out

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        return self.fuse(self.encode(inputs))
