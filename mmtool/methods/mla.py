"""MLA: multimodal learning with alternating uni-modal adaptation (Zhang et al., CVPR 2024; paper 003).

Training alternates modalities step by step (Eq. 1: ``m_t = t mod M``): step t feeds only modality
``m_t`` through its encoder and the *shared* head (``model.head: shared``) and minimises its CE (Eq. 2),
so the other encoders get no gradient. To keep the shared head from forgetting earlier modalities, its
weight gradient is projected with a recursive-least-squares matrix ``P`` before the update (Eq. 3):
``grad_W <- grad_W P_{t-1}``, and then ``P`` absorbs the current modality's mean feature ``h`` (Eq. 4-5):

    q_t = P_{t-1} h / (alpha + h^T P_{t-1} h),   P_t = P_{t-1} - q_t h^T P_{t-1},   P_0 = I.

Reading chosen: Alg. 1 lists "compute P_t" before "update phi with Eq. 3", but the text says the update
direction must be orthogonal to the feature of the *previous* modality; we therefore project step t's
gradient with ``P_{t-1}`` (built from the modalities seen before step t) and fold in the current mean
feature afterwards, so ``grad_W P_{t-1} h_{t-1} ≈ 0``. The head bias is not projected. Test-time fusion
(Eq. 6-8) is the shared head's fused output: entropy-weighted uni-modal logits.

A step runs ``model(inputs, modalities=[m])``: the shared head on one modality gives exactly that
modality's logits. With several processes the mean feature ``h`` is taken over every rank's samples
(summed sums over summed counts), so ``P`` stays the same matrix on every rank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmtool.data import Batch
from mmtool.errors import UserError
from mmtool.methods import METHODS, Method, MethodContext
from mmtool.methods.common import global_mean
from mmtool.methods.params import METHOD_REFERENCES, METHOD_SUMMARIES, AlternatingUnimodalAdaptationParams
from mmtool.models import MultiModalNet
from mmtool.models.heads import head_name
from mmtool.models.mmtm import MMTMNet


def rls_update(p: torch.Tensor, h: torch.Tensor, alpha: float) -> torch.Tensor:
    """One recursive-least-squares step (Eq. 5): returns P_t from P_{t-1} (s, s) and a mean feature (s,)."""
    ph = p @ h  # (s,)
    q = ph / (alpha + h @ ph)
    return p - torch.outer(q, h @ p)


@METHODS.register("mla")
class AlternatingUnimodalAdaptation(Method):
    """One modality per step through a shared head; the head's gradient is projected by RLS."""

    Params = AlternatingUnimodalAdaptationParams
    summary, reference = METHOD_SUMMARIES["mla"], METHOD_REFERENCES["mla"]
    uses_every_parameter = False  # a step runs one modality's encoder
    helpers = ("current",)

    def __init__(self, params: AlternatingUnimodalAdaptationParams, context: MethodContext) -> None:
        if params.alpha <= 0:
            raise UserError("method.alpha must be > 0")
        self.params = params
        self.runtime = context.runtime
        self.modalities = list(context.modalities)
        self.step = 0  # global step counter t
        self.p: torch.Tensor | None = None
        self._mean_feature: torch.Tensor | None = None

    def setup(self, model: MultiModalNet) -> None:
        if head_name(model.head) != "shared":
            raise UserError("method 'mla' needs model.head: shared (one classifier shared by every modality)")
        if isinstance(model, MMTMNet):
            raise UserError("method 'mla' trains one modality per step: it needs model.fusion: late, not mmtm")
        self.modalities = self.modalities or model.modalities
        if self.p is None:
            dim = model.head.linear.in_features
            self.p = torch.eye(dim, device=model.head.linear.weight.device)

    def current(self) -> str:
        return self.modalities[self.step % len(self.modalities)]

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        m = self.current()
        out = model(batch.inputs, modalities=[m])  # modality m only, through the shared head: its own logits
        features = out["features"][m]  # (B, s): the input transform, then the encoder
        self._mean_feature = global_mean(self.runtime, features.detach().float())  # Eq. 4, over every rank
        return {"task_loss": F.cross_entropy(out["logits"], batch.target)}

    def after_backward(self, model: MultiModalNet, step: int) -> None:
        weight = model.head.linear.weight
        if self.params.project and self.step > 0 and weight.grad is not None:
            weight.grad.copy_(weight.grad @ self.p.to(weight.grad.dtype))  # (C, s) @ (s, s), Eq. 3
        if self.params.project:
            self.p = rls_update(self.p, self._mean_feature.to(self.p.device), self.params.alpha)
        self.step += 1

    def state_dict(self) -> dict:
        return {"step": self.step, "p": self.p.cpu() if self.p is not None else torch.empty(0)}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        if state["p"].numel():
            self.p = state["p"].to(self.p.device if self.p is not None else "cpu")
