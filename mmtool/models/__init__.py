"""Models: late-fusion networks assembled from registered encoders and heads.

A model is described by a *spec*, a plain dict saved in every checkpoint, so any later stage can rebuild
it from a run directory without the recipe that trained it::

    {"modalities": {"m1": 200, "m2": 100}, "num_classes": 3,
     "encoder": "mlp", "encoder_args": {"hidden": [100]}, "head": "linear", "head_args": {}}
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from mmtool.config import ModelConfig
from mmtool.models.encoders import ENCODERS
from mmtool.models.heads import HEADS


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


def _accepted(cls: type, candidates: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in candidates.items() if k in params}


def model_spec(
    cfg: ModelConfig, input_dims: dict[str, int], num_classes: int, modalities: list[str] | tuple[str, ...]
) -> dict:
    """Turn the recipe's model section into a spec for the given modalities (flat numbers and names)."""
    encoder_cls, head_cls = ENCODERS.get(cfg.encoder), HEADS.get(cfg.head)
    return {
        "modalities": {m: int(input_dims[m]) for m in modalities},
        "num_classes": int(num_classes),
        "encoder": cfg.encoder,
        "encoder_args": _accepted(encoder_cls, {"hidden": list(cfg.hidden)}),
        "head": cfg.head,
        "head_args": _accepted(head_cls, {"hidden": cfg.head_hidden}),
    }


def build_model(spec: dict) -> MultiModalNet:
    """Build a :class:`MultiModalNet` from a spec (see module docstring)."""
    encoder_cls = ENCODERS.get(spec["encoder"])
    encoders = {m: encoder_cls(d, **spec["encoder_args"]) for m, d in spec["modalities"].items()}
    dims = {m: e.out_dim for m, e in encoders.items()}
    head = HEADS.get(spec["head"])(dims, spec["num_classes"], **spec["head_args"])
    return MultiModalNet(encoders, head)
