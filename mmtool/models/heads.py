"""Fusion heads: map per-modality features ``{m: (B, D_m)}`` to a dict with ``logits`` (B, C).

Heads that are a sum of per-modality terms also return ``unimodal_logits``: the prediction each
modality's part of the head makes on its own (paper 000, App. A.7.1 / Table 4). They are built from
separate per-modality layers, so nothing is ever sliced out of a concatenated weight matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmtool.registry import Registry

HEADS: Registry[type[nn.Module]] = Registry("head")


@HEADS.register("linear")
class LinearHead(nn.Module):
    """Linear classifier on the concatenated features, stored as one weight block per modality.

    ``logits = sum_m W_m f_m + b``; the uni-modal classifier of modality m is ``W_m f_m + b`` (the shared
    bias is kept with every modality so a one-modality head is an ordinary linear layer).
    """

    def __init__(self, feature_dims: dict[str, int], num_classes: int) -> None:
        super().__init__()
        self.proj = nn.ModuleDict({m: nn.Linear(d, num_classes, bias=False) for m, d in feature_dims.items()})
        self.bias = nn.Parameter(torch.zeros(num_classes))
        bound = 1.0 / sum(feature_dims.values()) ** 0.5  # nn.Linear's default init for the full layer
        for layer in self.proj.values():
            nn.init.uniform_(layer.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | dict]:
        parts = {m: self.proj[m](f) for m, f in features.items()}  # each (B, C)
        uni = {m: p + self.bias for m, p in parts.items()}
        return {"logits": torch.stack(list(parts.values())).sum(0) + self.bias, "unimodal_logits": uni}


@HEADS.register("mlp")
class MLPHead(nn.Module):
    """Concatenate, Linear(hidden) + ReLU, Linear(C) (Table 11's MLP head; with identity encoders it is
    the 2-layer MLP on concatenated inputs that App. A.10 trains as its multi-modal model)."""

    def __init__(self, feature_dims: dict[str, int], num_classes: int, hidden: int = 200) -> None:
        super().__init__()
        self.order = list(feature_dims)
        self.net = nn.Sequential(
            nn.Linear(sum(feature_dims.values()), hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | dict]:
        return {"logits": self.net(torch.cat([features[m] for m in self.order], dim=1))}


@HEADS.register("ensemble")
class EnsembleHead(nn.Module):
    """One linear classifier per modality; the fused prediction averages their softmax probabilities.

    ``logits`` are the log of the averaged probabilities, so argmax and cross-entropy apply directly.
    """

    def __init__(self, feature_dims: dict[str, int], num_classes: int) -> None:
        super().__init__()
        self.proj = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in feature_dims.items()})

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | dict]:
        uni = {m: self.proj[m](f) for m, f in features.items()}
        return {"logits": average_log_probs(list(uni.values())), "unimodal_logits": uni}


def average_log_probs(logits: list[torch.Tensor], weights: list[float] | None = None) -> torch.Tensor:
    """log(sum_i w_i softmax(logits_i)) with weights summing to 1 (plain mean when ``weights`` is None)."""
    k = len(logits)
    stacked = torch.stack([F.log_softmax(x.float(), dim=-1) for x in logits])  # (K, B, C)
    w = torch.tensor(weights if weights is not None else [1.0 / k] * k, dtype=stacked.dtype, device=stacked.device)
    return torch.logsumexp(stacked + w.log().view(-1, 1, 1), dim=0)
