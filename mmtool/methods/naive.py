"""Cross-entropy methods without regularisers: naive late fusion, uni-modal training, and UME."""

from __future__ import annotations

import torch

from mmtool.data import Batch
from mmtool.errors import UserError
from mmtool.methods import METHODS, Method
from mmtool.methods.common import branch_losses, fused_mask, present_ce, present_kw
from mmtool.methods.params import (
    METHOD_REFERENCES,
    METHOD_SUMMARIES,
    NaiveParams,
    UniModalEnsembleParams,
    UniModalParams,
)
from mmtool.models import MultiModalNet
from mmtool.models.heads import head_name


def fused_ce(model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
    """CE on the model's fused prediction: ``{"task_loss": ...}``."""
    out = model(batch.inputs, **present_kw(batch))
    return {"task_loss": present_ce(out["logits"], batch.target, fused_mask(batch))}


@METHODS.register("naive")
class NaiveFusion(Method):
    """Naive late fusion: cross-entropy on the fused prediction, trained end to end from scratch."""

    Params = NaiveParams
    summary, reference = METHOD_SUMMARIES["naive"], METHOD_REFERENCES["naive"]
    handles_missing = True

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        return fused_ce(model, batch)


@METHODS.register("unimodal")
class UniModal(Method):
    """Uni-modal training: a one-modality model with cross-entropy (what `pretrain-unimodal` runs)."""

    Params = UniModalParams
    summary, reference = METHOD_SUMMARIES["unimodal"], METHOD_REFERENCES["unimodal"]
    handles_missing = True

    def setup(self, model: MultiModalNet) -> None:
        if len(model.modalities) != 1:
            raise UserError(f"method 'unimodal' trains one modality, the model has {model.modalities}")

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        return fused_ce(model, batch)


@METHODS.register("ume")
class UniModalEnsemble(Method):
    """UME trained in one run: the sum of independent uni-modal CE losses over disjoint parameters.

    With the ``ensemble`` head every modality has its own encoder and classifier and no parameter is
    shared, so each modality's gradient is exactly that of training it alone; the fused prediction
    averages the uni-modal softmax outputs (App. A.2: "directly average the uni-modal models'
    predictions"). `mmtool ensemble` does the same with separately pre-trained models.
    """

    Params = UniModalEnsembleParams
    summary, reference = METHOD_SUMMARIES["ume"], METHOD_REFERENCES["ume"]
    handles_missing = True

    def setup(self, model: MultiModalNet) -> None:
        if head_name(model.head) != "ensemble":
            raise UserError("method 'ume' needs model.head: ensemble (independent per-modality classifiers)")

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        return branch_losses(model(batch.inputs, **present_kw(batch)), batch.target, batch.present)
