"""MLA: multimodal learning with alternating uni-modal adaptation (Zhang et al., CVPR 2024; paper 003).

Training alternates modalities update by update (Eq. 1: ``m_t = t mod M``): update t feeds only modality
``m_t`` through its encoder and the *shared* head (``model.head: shared``) and minimises its CE (Eq. 2),
so the other encoders get no gradient. To keep the shared head from forgetting earlier modalities, its
weight gradient is projected with a recursive-least-squares matrix ``P`` before the update (Eq. 3), and
``P`` absorbs the modality's mean feature ``h`` (Eq. 4-5). Test-time fusion (Eq. 6-8) is the shared
head's fused output.

``method.variant`` chooses between two readings (docs/fidelity.md has the table, with sources):

* ``paper`` (default): one modality per batch; constant ``alpha``; Eq. 5 as written,
  ``q_t = P_{t-1} h / (alpha + h^T P_{t-1} h)``, ``P_t = P_{t-1} - q_t h^T P_{t-1}``, ``P_0 = I``; the
  gradient of update t is projected with ``P_{t-1}`` (built from the modalities seen before it: the text
  asks for orthogonality to the *previous* modality's feature, although Alg. 1 lists "compute P_t" first),
  then ``P`` absorbs the current feature; per-sample entropy fusion (Eq. 6-8).
* ``code``: the authors' released ``main.py`` (``--gs_flag``) and ``utils.GSPlugin``: every modality is
  updated on every batch, one after the other (M optimizer updates per batch); ``alpha = 0.1^(1 + b/n)``
  for batch b of an epoch of n; ``P`` first absorbs the *current* feature with an element-wise division
  by the outer product ``alpha + (P h) h^T``, is divided by its Frobenius norm, and then projects the
  gradient as ``grad P^T``; the very first update of training neither absorbs nor projects; test-time
  fusion with one entropy weight per modality over the batch (or fixed weights). In the released code the
  projection never runs (its parameter-name test matches no name), so ``project`` defaults to off under
  ``code``; ``project: true`` runs it as intended.

A step runs ``model(inputs, modalities=[m])``: the shared head on one modality gives exactly that
modality's logits. Any number M >= 2 of modalities: updates cycle round-robin over them in the model's
order, and the test-time fusion weighs M predictions. Each epoch logs every modality's mean CE over its own
updates (``mla_ce_<m>``), beside the loop's ``train_task_loss`` over all updates. With several
processes the mean feature ``h`` is taken over every rank's samples (summed sums over summed counts), so
``P`` stays the same matrix on every rank.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mmtool.data import Batch
from mmtool.errors import UserError
from mmtool.methods import METHODS, Method, MethodContext
from mmtool.methods.common import all_reduce_sum, distributed, global_mean, present_ce
from mmtool.methods.params import METHOD_REFERENCES, METHOD_SUMMARIES, AlternatingUnimodalAdaptationParams
from mmtool.models import MultiModalNet
from mmtool.models.heads import head_name
from mmtool.models.mmtm import MMTMNet

PAPER_ALPHA = 1.0  # the paper leaves Eq. 5's alpha open


def rls_update(p: torch.Tensor, h: torch.Tensor, alpha: float) -> torch.Tensor:
    """One recursive-least-squares step (Eq. 5): returns P_t from P_{t-1} (s, s) and a mean feature (s,)."""
    ph = p @ h  # (s,)
    q = ph / (alpha + h @ ph)
    return p - torch.outer(q, h @ p)


def released_rls_update(p: torch.Tensor, h: torch.Tensor, alpha: float) -> torch.Tensor:
    """The released code's P update: ``k = P h``, ``P <- P - (k k^T) / (alpha + k h^T)`` with an element-wise
    division by an (s, s) matrix (Eq. 5 divides by the scalar ``h^T P h``), then ``P / ||P||_F``."""
    k = p @ h  # (s,)
    new = p - torch.outer(k, k) / (alpha + torch.outer(k, h))
    return new / torch.linalg.matrix_norm(new)  # Frobenius


def released_alpha(batch: int, batches: int) -> float:
    """The released code's alpha for batch ``batch`` (0-based) of an epoch of ``batches``: 0.1^(1 + b/n)."""
    return 1.0 * 0.1 ** (batch / batches + 1)


def _paper_head_update(p: torch.Tensor, grad: torch.Tensor | None, h: torch.Tensor, alpha: float, first: bool
                       ) -> torch.Tensor:  # fmt: skip
    """Project with P_{t-1} (not on the first update: P_0 = I), then absorb h (Eq. 3-5). Returns P_t."""
    if not first and grad is not None:
        grad.copy_(grad @ p.to(grad.dtype))  # (C, s) @ (s, s), Eq. 3
    return rls_update(p, h, alpha)


def _code_head_update(p: torch.Tensor, grad: torch.Tensor | None, h: torch.Tensor, alpha: float, first: bool
                      ) -> torch.Tensor:  # fmt: skip
    """Absorb h first (renormalised), then project with P^T; the first update of training does nothing."""
    if first:
        return p
    p = released_rls_update(p, h, alpha)
    if grad is not None:
        grad.copy_(grad @ p.T.to(grad.dtype))
    return p


@dataclass(frozen=True)
class _Variant:
    """What differs between the paper's MLA and the released code's, as small strategies."""

    updates_per_batch: Callable[[int], int]  # modalities -> optimizer updates per batch
    alpha: Callable[[float | None, int, int], float]  # (method.alpha, batch, batches per epoch) -> alpha
    head_update: Callable[..., torch.Tensor]  # (P, grad, h, alpha, first update) -> new P; projects grad
    project: bool  # the head-gradient modification's default
    fusion: Callable[[tuple[float, ...]], dict]  # method.fusion_weights -> the shared head's fusion args
    refuses: dict[str, str]  # options this variant has no use for -> why


VARIANTS = {
    "paper": _Variant(
        updates_per_batch=lambda modalities: 1,
        alpha=lambda alpha, batch, batches: PAPER_ALPHA if alpha is None else alpha,
        head_update=_paper_head_update,
        project=True,
        fusion=lambda weights: {},  # the head's default: per-sample entropy weights, Eq. 6-8
        refuses={"fusion_weights": "variant 'paper' fuses by per-sample entropy (Eq. 6-8)"},
    ),
    "code": _Variant(
        updates_per_batch=lambda modalities: modalities,
        alpha=lambda alpha, batch, batches: released_alpha(batch, batches),
        head_update=_code_head_update,
        project=False,  # as released: the name test never matches, so the projection never runs
        fusion=lambda weights: {"fusion": "fixed", "weights": list(weights)} if weights else {"fusion": "batch"},
        refuses={"alpha": "variant 'code' follows the released schedule 0.1^(1 + batch/len)"},
    ),
}


@METHODS.register("mla")
class AlternatingUnimodalAdaptation(Method):
    """One modality per update through a shared head; the head's gradient is projected by RLS."""

    Params = AlternatingUnimodalAdaptationParams
    summary, reference = METHOD_SUMMARIES["mla"], METHOD_REFERENCES["mla"]
    handles_missing = True
    uses_every_parameter = False  # an update runs one modality's encoder
    helpers = ("current",)

    def __init__(self, params: AlternatingUnimodalAdaptationParams, context: MethodContext) -> None:
        _check(params, context)
        self.params = params
        self.variant = VARIANTS[params.variant]
        self.project = self.variant.project if params.project is None else params.project
        self.runtime = context.runtime
        self.modalities = list(context.modalities)
        self.batches = context.batches_per_epoch
        self.updates_per_batch = self.variant.updates_per_batch(len(self.modalities))
        self.step = 0  # global update counter t
        self.p: torch.Tensor | None = None
        self._mean_feature: torch.Tensor | None = None
        self._ce: dict[str, list] = {}  # this epoch's {modality: [sum of its updates' CE, updates]}

    def adapt_spec(self, spec: dict) -> dict:
        fusion = self.variant.fusion(self.params.fusion_weights)
        if not self.params.dynamic_fusion and fusion.get("fusion") != "fixed":  # DF off (Table 3): equal weights
            count = len(spec["modalities"])
            fusion = {"fusion": "fixed", "weights": [1.0 / count] * count}
        return {**spec, "head_args": {**spec["head_args"], **fusion}} if fusion else spec

    def setup(self, model: MultiModalNet) -> None:
        if head_name(model.head) != "shared":
            raise UserError("method 'mla' needs model.head: shared (one classifier shared by every modality)")
        if isinstance(model, MMTMNet):
            raise UserError("method 'mla' trains one modality per step: it needs model.fusion: late, not mmtm")
        self.modalities = self.modalities or model.modalities
        self.updates_per_batch = self.variant.updates_per_batch(len(self.modalities))
        if self.p is None:
            dim = model.head.linear.in_features
            self.p = torch.eye(dim, device=model.head.linear.weight.device)

    def current(self) -> str:
        return self.modalities[self.step % len(self.modalities)]

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        m = self.current()
        mask = None if batch.present is None else batch.present[m]  # missing modalities: the samples that have m
        kw = {} if mask is None else {"present": {m: mask}}
        out = model(batch.inputs, modalities=[m], **kw)  # modality m only, through the shared head: its own logits
        features = out["features"][m]  # (B, s): the input transform, then the encoder
        self._mean_feature = _mean_feature(self.runtime, features.detach().float(), mask)  # Eq. 4, every rank
        loss = present_ce(out["logits"], batch.target, mask)
        total, count = self._ce.get(m, (0.0, 0))
        self._ce[m] = [total + loss.detach().float(), count + 1]  # summed on the device: no sync per step
        return {"task_loss": loss}

    def on_epoch_start(self, model: MultiModalNet, epoch: int) -> None:
        self._ce = {}

    def epoch_metrics(self) -> dict[str, float]:
        """Each modality's mean CE over its updates this epoch (averaged over the ranks)."""
        seen = [m for m in self.modalities if m in self._ce]
        if not seen:
            return {}
        sums = torch.stack([torch.as_tensor(self._ce[m][0], dtype=torch.float32).cpu() for m in seen])
        ranks = self.runtime.world_size if self.runtime is not None else 1
        sums = all_reduce_sum(self.runtime, sums.to(self.p.device)).cpu() / ranks
        return {f"mla_ce_{m}": float(sums[i]) / self._ce[m][1] for i, m in enumerate(seen)}

    def after_backward(self, model: MultiModalNet, step: int) -> None:
        if self.project:
            grad = model.head.linear.weight.grad
            alpha = self.variant.alpha(self.params.alpha, step, max(self.batches, 1))
            h = self._mean_feature.to(self.p.device)
            self.p = self.variant.head_update(self.p, grad, h, alpha, self.step == 0)
        self.step += 1

    def state_dict(self) -> dict:
        ce = {m: [float(total), count] for m, (total, count) in self._ce.items()}  # the epoch in progress
        return {"step": self.step, "p": self.p.cpu() if self.p is not None else torch.empty(0), "ce": ce}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self._ce = {m: [total, int(count)] for m, (total, count) in state.get("ce", {}).items()}
        if state["p"].numel():
            self.p = state["p"].to(self.p.device if self.p is not None else "cpu")


def _mean_feature(runtime, features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Eq. 4's mean feature of the step's modality: over the samples that have it (missing modalities); zeros
    when none has (the head's gradient is then zero too, and the RLS update leaves P as it is)."""
    if mask is None:
        return global_mean(runtime, features)
    rows = features[mask]
    return global_mean(runtime, rows) if len(rows) or distributed(runtime) else features.new_zeros(features.shape[1:])


def _check(params: AlternatingUnimodalAdaptationParams, context: MethodContext) -> None:
    """One-line errors for options that do not belong to the chosen variant."""
    if params.variant not in VARIANTS:
        raise UserError(f"method.variant: expected one of {', '.join(VARIANTS)}, got {params.variant!r}")
    if params.alpha is not None and params.alpha <= 0:
        raise UserError("method.alpha must be > 0")
    for name, why in VARIANTS[params.variant].refuses.items():
        if getattr(params, name) not in (None, ()):
            raise UserError(f"method.{name}: {why}; unset it")
    if params.fusion_weights and context.modalities and len(params.fusion_weights) != len(context.modalities):
        raise UserError(f"method.fusion_weights: one weight per modality ({len(context.modalities)}), "
                        f"got {list(params.fusion_weights)}")  # fmt: skip
