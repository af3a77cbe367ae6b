"""Parameter penalties the loop adds to a method's losses, and what they do to the parameters.

Paper 002, Sec. 6.3: "we train the networks to optimize the loss L' = L + lambda ||theta||_1, where L is the
classification loss ... theta stands for all model parameters". ``optim.l1`` is lambda; the loop adds
:func:`l1_loss` to every method's losses as the named loss ``l1_loss`` (logged as ``train_l1_loss``), so any
method trains with it. theta: every trainable parameter of the model (encoders, fusion modules, heads and
whatever a method attaches to the model).

"We measure the effect of lambda on the network f by computing the fraction of its parameters smaller than
1e-7. We denote this quantity by R(f)": :func:`sparsity` (|theta| < 1e-7, over every scalar parameter of the
model, trainable or not; the train stage writes it as ``sparsity_r`` for the model selected on validation).
"""

from __future__ import annotations

import torch

SMALL = 1e-7  # paper 002, Sec. 6.3: "parameters smaller than 10^-7"


def l1_loss(model: torch.nn.Module, weight: float) -> torch.Tensor:
    """``weight * sum |theta|`` over the model's trainable parameters, in float32 (a scalar tensor)."""
    norms = [p.float().abs().sum() for p in model.parameters() if p.requires_grad]
    return weight * torch.stack(norms).sum()


@torch.no_grad()
def sparsity(model: torch.nn.Module, threshold: float = SMALL) -> float:
    """R(f): the fraction of the model's scalar parameters with ``|theta| < threshold``."""
    params = list(model.parameters())
    small = sum(int((p.detach().abs() < threshold).sum()) for p in params)
    return small / max(sum(p.numel() for p in params), 1)
