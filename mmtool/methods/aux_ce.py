"""Aux-CE: cross-entropy on the fused prediction plus the cross-entropy of extra uni-modal linear heads
(paper 000, Sec. 4.3 and Tables 5 and 9: "adds extra uni-modal linear heads to receive the uni-modal
features and generating additional losses ... Auxiliary-CEloss gives all losses equal weights").

Design: the auxiliary heads are training-time machinery only -- evaluation and every later stage use
the fused prediction -- so they are not part of the model's spec: ``setup`` attaches them to the model
as ``model.extras["aux"]`` (one ``nn.Linear`` per modality, created once the feature sizes and the
device are known, before the optimizer is built and before any DDP wrapping), the model's forward
returns their predictions as ``out["aux_logits"]``, and the optimizer gets them with the model's
parameters. best.pt and snapshots leave them out (they hold ``model.weights()``, a plain naive-fusion
model with the same head); the resumable last.pt keeps them. The method works with any fusion head
(``linear``, ``mlp``, ``attention``, ...). Reusing the ``linear`` head's ``unimodal_logits`` would not
be the paper's method: those share their weights with the fused classifier, so the extra losses would
train the fusion head itself instead of separate heads.
"""

from __future__ import annotations

import torch

from mmtool.data import Batch
from mmtool.methods import METHODS, Method, MethodContext
from mmtool.methods.common import attach_modality_heads, aux_logits, fused_mask, present_ce, present_kw
from mmtool.methods.params import METHOD_REFERENCES, METHOD_SUMMARIES, AuxiliaryCEParams
from mmtool.models import MultiModalNet


@METHODS.register("aux_ce")
class AuxiliaryCE(Method):
    """CE(fused logits) + aux_weight * sum over modalities of CE(aux_m(f_m)), with one extra linear
    classifier aux_m per modality trained alongside the model (paper 000, Sec. 4.3 / Table 5)."""

    Params = AuxiliaryCEParams
    summary, reference = METHOD_SUMMARIES["aux_ce"], METHOD_REFERENCES["aux_ce"]
    handles_missing = True

    def __init__(self, params: AuxiliaryCEParams, context: MethodContext) -> None:
        self.params = params
        self.num_classes = context.num_classes

    def setup(self, model: MultiModalNet) -> None:
        """Attach one fresh linear classifier per modality to the model (nn.Linear's init)."""
        attach_modality_heads(model, self.num_classes, "aux_ce")

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        out = model(batch.inputs, **present_kw(batch))
        losses = {"task_loss": present_ce(out["logits"], batch.target, fused_mask(batch))}
        for m, z in aux_logits(out, "aux_ce").items():  # (B, C) from modality m's features alone
            mask = None if batch.present is None else batch.present[m]  # the samples that have modality m
            losses[f"aux_{m}_loss"] = self.params.aux_weight * present_ce(z, batch.target, mask)
        return losses
