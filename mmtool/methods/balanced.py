"""Balanced multi-modal learning (Wu et al. 2022, "Characterizing and overcoming the greedy nature of
learning in multi-modal deep neural networks"; paper 002, Sec. 5, Alg. 1), on MMTM intermediate fusion.

Conditional learning speed (Def. 5.1). For modalities (a, b) = the model's (m0, m1):

* θ_a: branch a's parameters, its encoder and its classifier; θ_b likewise;
* θ'_a: the fusion parameters on the path into branch a, every MMTM's shared FC and its FC to ``w_a``;
  θ'_b: the shared FCs and the FCs to ``w_b`` (the shared FCs are in both, paper 002, footnote 2);
* μ(θ; i) = ||∂L/∂θ||² / ||θ(i)||² at step i, with the norms over the whole group and θ(i) the value
  *after* the step; M_θ = Σ_i μ(θ; i) over the regular steps so far;
* s(b|a) = log(M_θ'a / M_θa), s(a|b) = log(M_θ'b / M_θb), d_speed = s(b|a) − s(a|b).

``method.variant`` (docs/fidelity.md has the table):

* ``paper``: MMTM as Eq. 2 (``2σ(w)``, mmtool's (C0 + C1)/4 bottleneck), μ from the weights after the
  step, natural log as Eq. 11-12 are written. ``method.alpha`` keeps the authors' units: the published
  α (0.01, 0.1) were tuned on their log10 d_speed, so the threshold is α·ln 10 on the ln-based d_speed
  (the same rule as theirs; a bare α would be 2.3 times tighter).
* ``code``: what the released code runs: MMTM ``σ(w)·A`` with a (C0 + C1)/2 bottleneck (set in the model
  spec through :meth:`adapt_spec`), μ from the weights *before* the step (measured between backward and
  the optimizer step), log10 and the bare α, and the released code's re-balancing mean: every MMTM keeps a
  running mean of the per-batch means of σ(w), fed by every forward, evaluation and re-balancing steps
  included (``fusion_args.running_mean``, :mod:`mmtool.models.mmtm`). ``method.bug_compatible`` adds the
  released code's running average bug: the second modality's mean is fed from the first modality.

Algorithm 1. The first ``warmup_epochs`` epochs take regular steps only. Then every regular step updates
d_speed, and ``|d_speed|`` above the variant's tolerance opens a window of ``window`` (Q) re-balancing
steps before the next regular step
(the text: "we take Q re-balancing steps"; the pseudo-code's counter would take Q − 1).
d_speed > 0 (the model learns b faster relative to a) accelerates a, else b. A re-balancing step that
accelerates modality m trains on the same loss with m's excitation in every MMTM fixed to w̄_m, the mean
of w_m over the samples of all earlier regular steps (Eq. 13-14): branch m then sees nothing of the other
modality and has to learn from its own input, while the other branch is rescaled as usual. The mean is
taken over ``w`` before the sigmoid, as Eq. 13 is written (variant ``code``: the released code's running
mean of σ(w), above).

More than two modalities (paper 002, Sec. 7: "The conditional learning speed of the ith modality can be
derived using the weight norm and gradient norm of the ith uni-modal network's parameters and the fusion
module's parameters impacting ŷ_i ... We define d_speed by the two most different conditional learning speeds
and accelerate the learning of one modality per time"): θ_m and θ'_m as above for every modality m (θ'_m: the
shared FCs and the FCs to ``w_m``), ``s(rest|m) = log(M_θ'm / M_θm)``, and d_speed = the largest minus the
smallest of them (:func:`speeds_and_pair`). A d_speed above the tolerance opens a window of Q re-balancing
steps for the modality with the largest ``s(rest|m)`` (the slower learner of its own input of the two most
different), one modality per window. ``random`` draws among regular and the M re-balancing kinds, 1/(M + 1)
each. ``method.bug_compatible`` stays two-modality only (the bug it reproduces is in two-modality code).

Modes: ``guided`` is Algorithm 1; ``random`` is the paper's random variant, which the paper does not
spell out: after the warm-up each step is, with probability 1/3 each, a regular step or a re-balancing
step for one of the two modalities (as the authors' released code does); ``vanilla`` takes regular
steps only -- conventional training (the ``ume`` loss) with d_speed logged.

The loss is the sum of the branches' cross-entropies (paper 002, Eq. 4), as ``ume``. Steps run
``model(inputs, excite_record=...)`` (regular) or ``model(inputs, excite_override=...)`` (re-balancing;
``excite_average=[m]`` in variant ``code``).

With several processes every regular step's statistics are combined over the ranks before use: the
excitation sums and their sample counts are summed (w̄ is then the mean over every rank's samples), and
μ is averaged (the gradients DDP averaged are the same on every rank, so this only guards against drift).
Every rank then takes the same d_speed, the same windows and, from the same seeded generator, the same
random step kinds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from mmtool.data import Batch
from mmtool.errors import UserError
from mmtool.methods import METHODS, Method, MethodContext
from mmtool.methods.common import all_reduce_sum, branch_losses, distributed
from mmtool.methods.params import METHOD_REFERENCES, METHOD_SUMMARIES, BalancedMultiModalParams
from mmtool.models import MultiModalNet
from mmtool.models.heads import head_name
from mmtool.models.mmtm import MMTM_DEFAULTS, MMTMNet

MODES = ("guided", "random", "vanilla")
REGULAR = "regular"


def speed_groups(model: MMTMNet) -> dict[str, list[torch.nn.Parameter]]:
    """The parameter groups of Def. 5.1: ``{"branch:<m>": θ_m, "fusion:<m>": θ'_m}`` for both modalities."""
    groups: dict[str, list[torch.nn.Parameter]] = {}
    for k, m in enumerate(model.modalities):
        groups[f"branch:{m}"] = [*model.encoders[m].parameters(), *model.head.proj[m].parameters()]
        groups[f"fusion:{m}"] = [p for t in model.mmtm for p in (*t.shared.parameters(), *t.to_w[k].parameters())]
    return groups


@torch.no_grad()
def effective_update(params: list[torch.nn.Parameter]) -> float:
    """μ(θ) = ||G||² / ||θ||² over the whole group (parameters without a gradient count as zero).
    One device-to-host transfer per group, not one per tensor."""
    grads = [p.grad.float().pow(2).sum() for p in params if p.grad is not None]
    if not grads:
        return 0.0
    grad, weight = torch.stack([torch.stack(grads).sum(), torch.stack([p.float().pow(2).sum() for p in params]).sum()])
    return float(grad) / max(float(weight), 1e-30)


def _log_ratio(sums: dict[str, float], m: str, log: Callable[[float], float]) -> float:
    """log(M_θ'm / M_θm): the conditional learning speed read off branch m (NaN before both are positive)."""
    fusion, branch = sums.get(f"fusion:{m}", 0.0), sums.get(f"branch:{m}", 0.0)
    return log(fusion / branch) if fusion > 0 and branch > 0 else math.nan


def conditional_speeds(
    sums: dict[str, float], a: str, b: str, log: Callable[[float], float] = math.log
) -> dict[str, float]:
    """s(b|a), s(a|b) and d_speed from the accumulated μ of the four groups (Eq. 11-12), in base ``log``."""
    s_b_a, s_a_b = _log_ratio(sums, a, log), _log_ratio(sums, b, log)
    return {f"s({b}|{a})": s_b_a, f"s({a}|{b})": s_a_b, "d_speed": s_b_a - s_a_b}


def speeds_and_pair(
    sums: dict[str, float], modalities: Sequence[str], log: Callable[[float], float] = math.log
) -> tuple[dict[str, float], str, str]:
    """Every modality's conditional learning speed, d_speed, and the pair (a, b) it compares: a d_speed above
    the tolerance accelerates a when positive, b when negative (Alg. 1).

    Two modalities: Eq. 11-12 as written (:func:`conditional_speeds`). More (paper 002, Sec. 7): the speed
    of modality m is ``s(rest|m) = log(M_θ'm / M_θm)``, from m's branch and the fusion parameters on the path
    to its prediction; d_speed compares the two most different speeds, ``d_speed = s(rest|a) - s(rest|b) >= 0``
    with a the largest and b the smallest (ties: the first in the model's order), so a re-balancing window
    accelerates a, the modality whose branch learns slowest from its own input relative to the others, as
    d_speed > 0 accelerates m0 with two. A speed not yet defined (NaN) makes d_speed NaN: no window.
    """
    if len(modalities) == 2:
        a, b = modalities
        return conditional_speeds(sums, a, b, log), a, b
    speed = {m: _log_ratio(sums, m, log) for m in modalities}
    named = {f"s({','.join(o for o in modalities if o != m)}|{m})": v for m, v in speed.items()}
    slow, fast = max(modalities, key=speed.__getitem__), min(modalities, key=speed.__getitem__)
    defined = not any(math.isnan(v) for v in speed.values())
    return {**named, "d_speed": speed[slow] - speed[fast] if defined else math.nan}, slow, fast


@dataclass(frozen=True)
class _Variant:
    """What differs between paper 002's balanced learning and the released code's, as small strategies."""

    fusion_args: dict = field(default_factory=dict)  # the MMTM settings of the model spec (defaults: Eq. 2)
    log: Callable[[float], float] = math.log  # the logarithm of Eq. 11-12
    threshold: Callable[[float], float] = lambda alpha: alpha  # method.alpha -> bound on |d_speed| in that log
    mu_before_step: bool = False  # μ from the weights before the optimizer step (else after it)
    refuses: dict[str, str] = field(default_factory=dict)  # options this variant has no use for -> why


VARIANTS = {
    "paper": _Variant(
        threshold=lambda alpha: alpha * math.log(10),  # the authors' α is on a log10 d_speed
        refuses={"bug_compatible": "variant 'paper' has no running-average bug to reproduce"},
    ),
    "code": _Variant(fusion_args={"excite_scale": 1.0, "bottleneck": 2, "running_mean": "each"}, log=math.log10,
                     mu_before_step=True),  # fmt: skip
}


@METHODS.register("balanced")
class BalancedMultiModal(Method):
    """Sum of branch losses on an MMTM model; re-balancing steps when the conditional speeds drift apart."""

    Params = BalancedMultiModalParams
    summary, reference = METHOD_SUMMARIES["balanced"], METHOD_REFERENCES["balanced"]
    uses_every_parameter = False  # a re-balancing step replaces one branch's excitation by its mean

    def __init__(self, params: BalancedMultiModalParams, context: MethodContext) -> None:
        if params.mode not in MODES:
            raise UserError(f"method.mode must be one of {', '.join(MODES)}, got {params.mode!r}")
        if params.alpha < 0 or params.window < 1 or params.warmup_epochs < 0:
            raise UserError("method.alpha must be >= 0, method.window >= 1 and method.warmup_epochs >= 0")
        if params.variant not in VARIANTS:
            raise UserError(f"method.variant: expected one of {', '.join(VARIANTS)}, got {params.variant!r}")
        self.variant = VARIANTS[params.variant]
        for name, why in self.variant.refuses.items():
            if getattr(params, name):
                raise UserError(f"method.{name}: {why}; unset it")
        self.params = params
        self.runtime = context.runtime
        self.gen = torch.Generator().manual_seed(context.seed)
        self.epoch = 1
        self.kind = REGULAR  # what the current step is: "regular" or the modality being accelerated
        self.pending: list[str] = []  # the re-balancing steps still to take in the current window
        self.sums: dict[str, float] = {}  # M_θ per speed group, over all regular steps
        self.excite_sum: dict[str, list[torch.Tensor]] = {}  # Σ w_m(x) over the samples of regular steps
        self.excite_count = 0
        self._recorded: dict[str, list[torch.Tensor]] = {}
        self._mu: dict[str, float] = {}  # this regular step's μ per speed group
        self._epoch_kinds: dict[str, int] = {}
        self.modalities: list[str] = []

    def setup(self, model: MultiModalNet) -> None:
        if not isinstance(model, MMTMNet) or head_name(model.head) != "ensemble":
            raise UserError("method 'balanced' needs model.fusion: mmtm and model.head: ensemble (paper 002, Sec. 3)")
        self.modalities = list(model.modalities)
        if self.params.bug_compatible and len(self.modalities) != 2:  # also refused before a run: commands/training
            raise UserError(f"method.bug_compatible reproduces the released two-modality code; this model has "
                            f"{len(self.modalities)} modalities, {self.modalities}")  # fmt: skip
        wanted = {**MMTM_DEFAULTS, **self._fusion_args()}
        if model.fusion_args != wanted:
            raise UserError(f"method.variant {self.params.variant!r} needs an MMTM model with {wanted}, "
                            f"this one has {model.fusion_args}")  # fmt: skip

    def _fusion_args(self) -> dict:
        args = dict(self.variant.fusion_args)
        if self.params.bug_compatible:  # the released code feeds the second running mean from the first modality
            args["running_mean"] = "first"
        return args

    def adapt_spec(self, spec: dict) -> dict:
        args = self._fusion_args()
        return {**spec, "fusion_args": {**spec.get("fusion_args", {}), **args}} if args else spec

    def on_epoch_start(self, model: MultiModalNet, epoch: int) -> None:
        self.epoch = epoch
        self._epoch_kinds = {}

    def _next_kind(self, modalities: list[str]) -> str:
        if self.params.mode == "vanilla" or self.epoch <= self.params.warmup_epochs or self.excite_count == 0:
            return REGULAR
        if self.params.mode == "random":
            kinds = [REGULAR, *modalities]  # 1 / (M + 1) each
            return kinds[int(torch.randint(len(kinds), (1,), generator=self.gen))]
        return self.pending.pop(0) if self.pending else REGULAR

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        self.kind = self._next_kind(model.modalities)
        self._epoch_kinds[self.kind] = self._epoch_kinds.get(self.kind, 0) + 1
        if self.kind == REGULAR:
            self._recorded = {}
            out = model(batch.inputs, excite_record=self._recorded)
        elif self.variant.fusion_args.get("running_mean", "none") != "none":  # the model's running mean of σ(w)
            out = model(batch.inputs, excite_average=[self.kind])
        else:
            means = [s / self.excite_count for s in self.excite_sum[self.kind]]
            out = model(batch.inputs, excite_override={self.kind: means})
        return branch_losses(out, batch.target)

    def after_backward(self, model: MultiModalNet, step: int) -> None:
        if self.kind == REGULAR and self.variant.mu_before_step:
            self._mu = {name: effective_update(params) for name, params in speed_groups(model).items()}

    def after_step(self, model: MultiModalNet, step: int) -> None:
        if self.kind != REGULAR:
            return
        if not self.variant.mu_before_step:
            self._mu = {name: effective_update(params) for name, params in speed_groups(model).items()}
        speeds = self._mu
        totals = {m: [w.sum(0) for w in ws] for m, ws in self._recorded.items()}  # {m: [(C_k,)]} this rank's
        count = len(next(iter(self._recorded.values()))[0])
        speeds, totals, count = self._across_ranks(speeds, totals, count, next(model.parameters()).device)
        for name, mu in speeds.items():
            self.sums[name] = self.sums.get(name, 0.0) + mu
        for m, ts in totals.items():
            previous = self.excite_sum.get(m)
            self.excite_sum[m] = ts if previous is None else [s + t for s, t in zip(previous, ts, strict=True)]
        self.excite_count += count
        rates, a, b = speeds_and_pair(self.sums, model.modalities, self.variant.log)
        d = rates["d_speed"]
        tolerance = self.variant.threshold(self.params.alpha)
        if self.params.mode == "guided" and self.epoch > self.params.warmup_epochs and abs(d) > tolerance:
            self.pending = [a if d > 0 else b] * self.params.window

    def _across_ranks(
        self, speeds: dict[str, float], totals: dict[str, list[torch.Tensor]], count: int, device: torch.device
    ) -> tuple[dict[str, float], dict[str, list[torch.Tensor]], int]:
        """Every rank's step statistics together: μ averaged over the ranks (summed, over the summed rank
        count), excitation sums and sample counts summed. Two reductions, whatever the number of MMTMs;
        in one process the numbers come back as they are."""
        if not distributed(self.runtime):
            return speeds, totals, count
        mu = all_reduce_sum(self.runtime, torch.tensor([*speeds.values(), 1.0], dtype=torch.float64, device=device))
        speeds = dict(zip(speeds, (mu[:-1] / mu[-1]).tolist(), strict=True))
        flat = [t for ts in totals.values() for t in ts]
        summed = all_reduce_sum(self.runtime, torch.cat([*flat, flat[0].new_tensor([count])]))
        parts = iter(summed[:-1].split([len(t) for t in flat]))
        totals = {m: [next(parts) for _ in ts] for m, ts in totals.items()}
        return speeds, totals, int(summed[-1])

    def epoch_metrics(self) -> dict[str, float]:
        steps = max(sum(self._epoch_kinds.values()), 1)
        shares = {f"rebalance_{m}_share": self._epoch_kinds.get(m, 0) / steps for m in self.modalities}
        speeds = speeds_and_pair(self.sums, self.modalities, self.variant.log)[0] if self.sums else {}
        return {**speeds, **shares}

    def state_dict(self) -> dict:
        return {
            "gen": self.gen.get_state(),
            "pending": list(self.pending),
            "sums": dict(self.sums),
            "excite_sum": {m: [t.clone() for t in v] for m, v in self.excite_sum.items()},
            "excite_count": self.excite_count,
            "epoch": self.epoch,  # the epoch in progress and its step kinds so far (mid-epoch checkpoints)
            "epoch_kinds": dict(self._epoch_kinds),
        }

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self.pending = list(state["pending"])
        self.sums = dict(state["sums"])
        self.excite_sum = {m: list(v) for m, v in state["excite_sum"].items()}
        self.excite_count = state["excite_count"]
        self.epoch = int(state.get("epoch", self.epoch))
        self._epoch_kinds = dict(state.get("epoch_kinds", {}))
