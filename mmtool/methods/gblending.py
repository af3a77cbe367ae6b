"""G-Blending: gradient blending (Wang et al., CVPR 2020), a baseline of paper 000 (Tables 1, 5, 8).

The fused head and one extra linear head per modality (the Aux-CE heads, attached to the model as
``model.extras["aux"]``; see :mod:`mmtool.methods.aux_ce`) are trained with a weighted sum of their
cross-entropies. The weights follow each head's overfitting-to-generalisation ratio,
re-estimated online every ``super_epoch`` epochs (their Alg. 1, online version): with L_T and L_V a
head's loss on the training and held-out data at the start of two consecutive super-epochs,

    G = L_V(prev) - L_V(now)            (generalisation gained)
    O = (L_V - L_T)(now) - (L_V - L_T)(prev)  (overfitting gained)
    w ∝ G / O^2, normalised to sum to one.

Readings we chose: a head whose held-out loss did not improve (G <= 0) gets no share of the ratio (it would
be meaningless), but every head keeps at least ``min_weight``: ``w = min_weight + (1 - K min_weight) w_ratio``
for K heads. Without the floor, a head still on the starting plateau at the first estimate (the fused head
of a slow seed) gets weight exactly 0, so it receives no gradient, its held-out loss can never improve, and
its weight stays 0 for good -- Wang et al. re-estimate weights to follow the heads, not to switch one off
for ever. A floor keeps every head learning, so a head that starts late re-enters the estimate as soon as
its held-out loss moves; unlike a fixed warm-up it needs no guess of how long a plateau lasts, and unlike
keeping a head's previous weight it still down-weights a head whose held-out loss rises (overfitting).
If every head gets G <= 0, the weights are left unchanged; O^2 is floored at ``eps``. The first
super-epoch uses equal weights. The held-out data is the validation split (the one the loop also uses for
model selection): G-Blending's own extra split would take data away from training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmtool.data import Batch
from mmtool.errors import UserError
from mmtool.methods import METHODS, Method, MethodContext
from mmtool.methods.common import attach_modality_heads, aux_logits
from mmtool.methods.params import METHOD_REFERENCES, METHOD_SUMMARIES, GradientBlendingParams
from mmtool.models import MultiModalNet

FUSED = "fused"


def blend_weights(
    prev: dict[str, tuple[float, float]], now: dict[str, tuple[float, float]], eps: float, min_weight: float = 0.0
) -> dict[str, float] | None:
    """Weights from (train loss, held-out loss) per head at two points, each at least ``min_weight``; None
    when no head generalised."""
    raw = {}
    for k, (lt_now, lv_now) in now.items():
        lt_prev, lv_prev = prev[k]
        gain = lv_prev - lv_now
        overfit = (lv_now - lt_now) - (lv_prev - lt_prev)
        raw[k] = gain / max(overfit**2, eps) if gain > 0 else 0.0
    total = sum(raw.values())
    if total <= 0 or not math.isfinite(total):
        return None
    share = 1.0 - len(raw) * min_weight  # what the ratio distributes above the floors
    return {k: min_weight + share * v / total for k, v in raw.items()}


@METHODS.register("gblending")
class GradientBlending(Method):
    """Weighted CE of the fused head and of one extra linear head per modality; weights from the OGR."""

    Params = GradientBlendingParams
    summary, reference = METHOD_SUMMARIES["gblending"], METHOD_REFERENCES["gblending"]

    def __init__(self, params: GradientBlendingParams, context: MethodContext) -> None:
        if params.super_epoch < 1:
            raise UserError("method.super_epoch must be >= 1")
        self.params = params
        self.num_classes = context.num_classes
        if context.measure is None:
            raise UserError(
                "method 'gblending' measures losses on the train and validation splits: it needs a stage "
                "that provides them"
            )
        self.measure = context.measure
        self.weights: dict[str, float] = {}
        self.measured: dict[str, tuple[float, float]] = {}

    def setup(self, model: MultiModalNet) -> None:
        """Attach the per-modality heads to the model (as Aux-CE does); equal weights to start with."""
        attach_modality_heads(model, self.num_classes, "gblending")
        heads = [FUSED, *model.modalities]
        if len(heads) * self.params.min_weight >= 1:
            raise UserError(f"method.min_weight: {len(heads)} heads need min_weight < {1 / len(heads):.4g}, "
                            f"got {self.params.min_weight}")  # fmt: skip
        self.weights = self.weights or {k: 1.0 / len(heads) for k in heads}

    def on_epoch_start(self, model: MultiModalNet, epoch: int) -> None:
        if (epoch - 1) % self.params.super_epoch:
            return
        now = {k: (lt, lv) for k, lt, lv in self._losses(model)}
        if self.measured:
            self.weights = blend_weights(self.measured, now, self.params.eps, self.params.min_weight) or self.weights
        self.measured = now

    def _losses(self, model: MultiModalNet) -> list[tuple[str, float, float]]:
        """(head, train loss, held-out loss) for the fused head and every auxiliary head."""

        def forward(net: MultiModalNet, inputs: dict) -> dict:
            out = net(inputs)
            return {"logits": out["logits"], "aux": aux_logits(out, "gblending")}

        per_split = {}
        for name in ("train", "val"):
            pred = self.measure(model, name, forward, ("logits", "aux"))
            logits = {FUSED: pred["logits"], **pred["aux"]}
            per_split[name] = {k: float(F.cross_entropy(z, pred["target"])) for k, z in logits.items()}
        return [(k, per_split["train"][k], per_split["val"][k]) for k in per_split["train"]]

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        out = model(batch.inputs)
        losses = {"task_loss": self.weights[FUSED] * F.cross_entropy(out["logits"], batch.target)}
        for m, z in aux_logits(out, "gblending").items():
            losses[f"aux_{m}_loss"] = self.weights[m] * F.cross_entropy(z, batch.target)
        return losses

    def epoch_metrics(self) -> dict[str, float]:
        return {f"blend_weight_{k}": w for k, w in self.weights.items()}

    def state_dict(self) -> dict:
        measured = {k: list(v) for k, v in self.measured.items()}
        return {"weights": dict(self.weights), "measured": measured}

    def load_state_dict(self, state: dict) -> None:
        self.weights = dict(state["weights"])
        self.measured = {k: (v[0], v[1]) for k, v in state["measured"].items()}
