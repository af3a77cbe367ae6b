"""RUBi (Cadene et al. 2019, "RUBi: Reducing Unimodal Biases for Visual Question Answering"), as paper 002
(Sec. 6.4, Table 1 "+ RUBi") uses it: a baseline that is "model-agnostic and fusion-method-agnostic".

Cadene et al. (Sec. 3.2, Eq. 3-4) add a question-only branch to a VQA model: ``c_q`` maps the question
encoder's output to answer logits; their sigmoid masks the model's logits, ``f_QM = f(v, q) * sigmoid(c_q(e_q))``;
``c'_q``, one more linear layer, gives the branch's own prediction; the loss is
``L = CE(f_QM, y) + CE(c'_q(c_q(e_q)), y)``, and the branch passes no gradient back into the question encoder
(their code: ``grad_mul_const(q_emb, 0.0)`` before ``c_1``; ``c_2`` reads ``c_1``'s logits). At test time the
branch is dropped: the prediction is ``f(v, q)``.

Paper 002 adapts it to two-modality models without further detail. Here each modality ``m`` of
``params.modalities`` (default: all) gets a branch on its encoder's features ``f_m``, detached:
``q_m = c_m(stopgrad(f_m))``, ``mask = prod_m sigmoid(q_m)``, and

    loss = CE(logits * mask, y) + branch_weight * sum_m CE(c'_m(q_m), y)

named ``task_loss`` and ``rubi_<m>_loss``. ``logits`` is the model's fused output, whatever the fusion (late
heads, MMTM). The stop-gradient is applied to the features, so as in Cadene et al.'s code neither term reaches
the encoders through the branch; the masked task loss still trains the whole model through ``logits``, and
``c_m`` through the mask. Evaluation and every later stage read the model's plain ``logits``. The branches are
training machinery only, attached in ``setup`` as ``model.extras["rubi"]`` (as Aux-CE's heads): best.pt leaves
them out, last.pt keeps them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmtool.data import Batch
from mmtool.errors import UserError
from mmtool.methods import METHODS, Method, MethodContext
from mmtool.methods.params import METHOD_REFERENCES, METHOD_SUMMARIES, RUBiParams
from mmtool.models import MultiModalNet

EXTRA = "rubi"  # model.extras[EXTRA]; the model's output holds its result at "rubi_logits"


class RUBiBranches(nn.Module):
    """One branch per modality: ``c_m`` (linear, features -> class logits) on the detached features, and ``c'_m``
    (linear, logits -> logits) when ``end_classif``. Returns ``{"mask": {m: q_m}, "branch": {m: c'_m(q_m)}}``."""

    def __init__(self, feature_dims: dict[str, int], num_classes: int, end_classif: bool = True) -> None:
        super().__init__()
        self.c = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in feature_dims.items()})
        self.c_end = nn.ModuleDict({m: nn.Linear(num_classes, num_classes) for m in feature_dims}) if end_classif \
            else None  # fmt: skip

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        q = {m: c(features[m].detach()) for m, c in self.c.items()}  # (B, C); no gradient into the encoders
        branch = q if self.c_end is None else {m: self.c_end[m](z) for m, z in q.items()}
        return {"mask": q, "branch": branch}


def rubi_losses(logits: torch.Tensor, rubi: dict, target: torch.Tensor, branch_weight: float) -> dict:
    """Cadene et al.'s Eq. 4 from the fused ``logits`` (B, C) and the branches' output (:class:`RUBiBranches`)."""
    mask = torch.stack([torch.sigmoid(q) for q in rubi["mask"].values()]).prod(0)  # (B, C)
    losses = {"task_loss": F.cross_entropy(logits * mask, target)}
    for m, z in rubi["branch"].items():
        losses[f"rubi_{m}_loss"] = branch_weight * F.cross_entropy(z, target)
    return losses


@METHODS.register("rubi")
class RUBi(Method):
    """CE(fused logits x prod_m sigmoid(q_m)) + sum_m CE(c'_m(q_m)), q_m from a branch on modality m's
    detached features (module docstring)."""

    Params = RUBiParams
    summary, reference = METHOD_SUMMARIES["rubi"], METHOD_REFERENCES["rubi"]

    def __init__(self, params: RUBiParams, context: MethodContext) -> None:
        self.params = params
        self.num_classes = context.num_classes

    def setup(self, model: MultiModalNet) -> None:
        """Attach the branches (nn.Linear's init) to the model as ``model.extras["rubi"]``."""
        chosen = list(self.params.modalities) or list(model.modalities)
        unknown = sorted(set(chosen) - set(model.modalities))
        if unknown:
            raise UserError(f"method 'rubi': method.modalities names {unknown}, the model has {list(model.modalities)}")
        if self.num_classes < 1:
            raise RuntimeError("rubi: MethodContext.num_classes is needed to build the branches")
        dims = {m: model.encoders[m].out_dim for m in chosen}
        device = next(model.parameters()).device
        model.extras[EXTRA] = RUBiBranches(dims, self.num_classes, self.params.end_classif).to(device)

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        out = model(batch.inputs)
        if f"{EXTRA}_logits" not in out:
            raise RuntimeError("rubi: setup(model) attaches the branches to the model; call it first")
        return rubi_losses(out["logits"], out[f"{EXTRA}_logits"], batch.target, self.params.branch_weight)
