"""Aux-CE: cross-entropy on the fused prediction plus the cross-entropy of extra uni-modal linear heads
(paper 000, Sec. 4.3 and Tables 5 and 9: "adds extra uni-modal linear heads to receive the uni-modal
features and generating additional losses ... Auxiliary-CEloss gives all losses equal weights").

Design: the auxiliary heads belong to the method, not to the model. They are training-time machinery
only -- evaluation and every later stage use the fused prediction -- so the model, its spec and its
checkpoints stay those of naive fusion with the same head, and the method works with any fusion head
(``linear``, ``mlp``, ``attention``, ...). Reusing the ``linear`` head's ``unimodal_logits`` would not
be the paper's method: those share their weights with the fused classifier, so the extra losses would
train the fusion head itself instead of separate heads. The heads are created in ``check_model``
(once the feature sizes and the device are known, before the optimizer is built), handed to the
optimizer through ``param_groups`` with the model's parameters, and saved in resumable checkpoints
through ``state_dict``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmtool.data import Batch
from mmtool.methods import METHODS, MethodContext
from mmtool.models import MultiModalNet


@METHODS.register("aux_ce")
class AuxiliaryCE:
    """CE(fused logits) + aux_weight * sum over modalities of CE(aux_m(f_m)), with one extra linear
    classifier aux_m per modality trained alongside the model (paper 000, Sec. 4.3 / Table 5)."""

    summary = "Aux-CE: CE on the fused logits + CE of extra uni-modal linear heads, equal weights"
    reference = "paper 000, Sec. 4.3 / Tables 5, 9"

    @dataclass(frozen=True)
    class Params:
        aux_weight: float = 1.0  # Sec. 4.3: "all losses equal weights"

    def __init__(self, params: Params, context: MethodContext) -> None:
        self.params = params
        self.num_classes = context.num_classes
        self.aux: nn.ModuleDict | None = None

    def check_model(self, model: MultiModalNet) -> None:
        """Create one linear classifier per modality on the model's device (fresh, nn.Linear's init)."""
        if self.num_classes < 1:
            raise RuntimeError("aux_ce: MethodContext.num_classes is needed to build the auxiliary heads")
        device = next(model.parameters()).device
        dims = {m: enc.out_dim for m, enc in model.encoders.items()}
        self.aux = nn.ModuleDict({m: nn.Linear(d, self.num_classes) for m, d in dims.items()}).to(device)

    def param_groups(self, model: MultiModalNet) -> list[dict]:
        return [{"params": [*model.parameters(), *self._heads().parameters()]}]

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        out = model(batch.inputs)
        losses = {"task_loss": F.cross_entropy(out["logits"], batch.target)}
        for m, head in self._heads().items():
            z = head(out["features"][m])  # (B, C) from modality m's features alone
            losses[f"aux_{m}_loss"] = self.params.aux_weight * F.cross_entropy(z, batch.target)
        return losses

    def state_dict(self) -> dict:
        return {"aux": self._heads().state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._heads().load_state_dict(state["aux"])

    def _heads(self) -> nn.ModuleDict:
        if self.aux is None:
            raise RuntimeError("aux_ce: check_model(model) creates the auxiliary heads; call it first")
        return self.aux
