"""What several methods share, as plain functions and one small module (methods never inherit from
each other): per-branch losses, the per-modality heads Aux-CE and G-Blending attach to the model, and
summing batch statistics across ranks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from mmtool.data.missing import any_present

if TYPE_CHECKING:
    from mmtool.data import Batch
    from mmtool.engine.runtime import Runtime
    from mmtool.models import MultiModalNet

AUX = "aux"  # model.extras[AUX]: the per-modality heads; the model's output holds them at "aux_logits"


def branch_losses(out: dict, target: torch.Tensor, present: dict | None = None) -> dict[str, torch.Tensor]:
    """One CE per modality's own prediction: ``{"ce_<m>_loss": ...}`` (UME, balanced); with missing
    modalities each over the samples that have the modality."""
    return {f"ce_{m}_loss": present_ce(z, target, _mask(present, m)) for m, z in out["unimodal_logits"].items()}


# ------------------------------------------------------------------------------------------ missing modalities
# With data.missing_rate > 0 (mmtool.data.missing) a batch carries ``present`` {m: (B,) bool}: a fused loss
# counts the samples that have at least one of the model's modalities, a modality's own loss the samples
# that have that modality. Without masks these are the plain losses, bit for bit.


def present_kw(batch: Batch) -> dict:
    """The forward's ``present=`` option for ``batch`` (nothing when every modality is there)."""
    return {} if batch.present is None else {"present": batch.present}


def _mask(present: dict | None, m: str) -> torch.Tensor | None:
    return None if present is None else present[m]


def present_ce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy averaged over the rows where ``mask`` is True (every row when None; 0 when none)."""
    if mask is None:
        return F.cross_entropy(logits, target)
    per_row = F.cross_entropy(logits, target, reduction="none")
    return torch.where(mask, per_row, torch.zeros_like(per_row)).sum() / mask.sum().clamp_min(1)


def present_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``F.mse_loss`` (mean over rows and features) over the rows where ``mask`` is True."""
    if mask is None:
        return F.mse_loss(student, teacher)
    per_row = (student - teacher).pow(2).flatten(1).mean(1)
    return torch.where(mask, per_row, torch.zeros_like(per_row)).sum() / mask.sum().clamp_min(1)


def fused_mask(batch: Batch) -> torch.Tensor | None:
    """(B,) True where a sample has at least one of the batch's modalities (None: no masks)."""
    return any_present(batch.present, list(batch.inputs))


class ModalityHeads(nn.ModuleDict):
    """One linear classifier per modality, on that modality's features alone: ``{m: (B, D_m)} ->
    {m: (B, C)}`` (the modalities present in the features)."""

    def __init__(self, feature_dims: dict[str, int], num_classes: int) -> None:
        super().__init__({m: nn.Linear(d, num_classes) for m, d in feature_dims.items()})

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: head(features[m]) for m, head in self.items() if m in features}


def attach_modality_heads(model: MultiModalNet, num_classes: int, who: str) -> None:
    """Put fresh per-modality linear heads (nn.Linear's init, drawn from torch's global generator) on the
    model's device as ``model.extras["aux"]``; the model's forward then returns ``out["aux_logits"]``."""
    if num_classes < 1:
        raise RuntimeError(f"{who}: MethodContext.num_classes is needed to build the auxiliary heads")
    device = next(model.parameters()).device
    dims = {m: enc.out_dim for m, enc in model.encoders.items()}
    model.extras[AUX] = ModalityHeads(dims, num_classes).to(device)


def aux_logits(out: dict, who: str) -> dict[str, torch.Tensor]:
    """The per-modality heads' predictions in a model output, ``{m: (B, C)}``."""
    if f"{AUX}_logits" not in out:
        raise RuntimeError(f"{who}: setup(model) attaches the auxiliary heads to the model; call it first")
    return out[f"{AUX}_logits"]


def distributed(runtime: Runtime | None) -> bool:
    """Whether the run has several ranks whose statistics ``runtime.all_reduce`` combines."""
    return runtime is not None and runtime.world_size > 1


def all_reduce_sum(runtime: Runtime | None, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks (itself in one process)."""
    return runtime.all_reduce(tensor, op="sum") if runtime is not None else tensor


def global_mean(runtime: Runtime | None, x: torch.Tensor) -> torch.Tensor:
    """Mean over the first dimension of ``x`` on every rank together: (N, ...) -> (...). In one process
    this is ``x.mean(0)`` itself (bit for bit); across ranks, the summed sums over the summed counts."""
    if not distributed(runtime):
        return x.mean(0)
    total = torch.cat([x.sum(0).flatten(), x.new_tensor([len(x)])])
    total = all_reduce_sum(runtime, total)
    return (total[:-1] / total[-1]).view(x.shape[1:])
