"""Cross-entropy methods without regularisers: naive late fusion, uni-modal training, and UME."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mmtool.data import Batch
from mmtool.errors import UserError
from mmtool.methods import METHODS, MethodContext
from mmtool.models import MultiModalNet


@METHODS.register("naive")
class NaiveFusion:
    """Naive late fusion: cross-entropy on the fused prediction, trained end to end from scratch."""

    summary = "naive late fusion: CE on the fused logits (any head)"
    reference = "paper 000, Sec. 3.2 / Table 5"

    @dataclass(frozen=True)
    class Params:
        pass

    def __init__(self, params: Params, context: MethodContext) -> None:
        self.params = params

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        out = model(batch.inputs)
        return {"task_loss": F.cross_entropy(out["logits"], batch.target)}


@METHODS.register("unimodal")
class UniModal(NaiveFusion):
    """Uni-modal training: a one-modality model with cross-entropy (what `pretrain-unimodal` runs)."""

    summary = "uni-modal training of a one-modality model (teachers for UMT, members of UME)"
    reference = "paper 000, Sec. 3.3"

    def check_model(self, model: MultiModalNet) -> None:
        if len(model.modalities) != 1:
            raise UserError(f"method 'unimodal' trains one modality, the model has {model.modalities}")


@METHODS.register("ume")
class UniModalEnsemble(NaiveFusion):
    """UME trained in one run: the sum of independent uni-modal CE losses over disjoint parameters.

    With the ``ensemble`` head every modality has its own encoder and classifier and no parameter is
    shared, so each modality's gradient is exactly that of training it alone; the fused prediction
    averages the uni-modal softmax outputs (App. A.2: "directly average the uni-modal models'
    predictions"). `mmtool ensemble` does the same with separately pre-trained models.
    """

    summary = "UME: independent uni-modal models, predictions averaged (needs head: ensemble)"
    reference = "paper 000, Sec. 3.3 / App. A.2"

    @dataclass(frozen=True)
    class Params:
        # build the ensemble from the uni-modal models of `teachers` as they are, and train nothing
        # (what `train --from-decision` does with a UME verdict)
        from_teachers: bool = False

    def check_model(self, model: MultiModalNet) -> None:
        if type(model.head).__name__ != "EnsembleHead":
            raise UserError("method 'ume' needs model.head: ensemble (independent per-modality classifiers)")

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        return self.branch_losses(model(batch.inputs), batch.target)

    @staticmethod
    def branch_losses(out: dict, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """One CE per modality's own prediction: ``{"ce_<m>_loss": ...}``."""
        return {f"ce_{m}_loss": F.cross_entropy(z, target) for m, z in out["unimodal_logits"].items()}
