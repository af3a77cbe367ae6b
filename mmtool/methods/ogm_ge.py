"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022),
a baseline of paper 000 (Tables 1, 5, 8).

Per batch, each modality's confidence in the true class is measured with its part of the linear fusion
head, ``s_m = sum_i softmax(W_m f_m(x_i) + b / M)[y_i]`` (the bias is shared out equally, as in the
original). For two modalities the discrepancy ratio of modality a is ``rho_a = s_a / s_b``; with more,
we compare with the mean of the others. The dominant modality (``rho > 1``) gets the coefficient
``k = 1 - tanh(alpha * rho)``, the others ``k = 1``. Between ``start_epoch`` and ``end_epoch`` every
gradient of a modality's encoder is multiplied by its ``k`` and, with ``gaussian_enhancement``, a
Gaussian noise with the standard deviation of that gradient is added (GE). ``method.modulate`` says which
gradients: ``all`` (default) every encoder parameter; ``conv`` only 4-D tensors (2-D convolution kernels),
as the released code tests ``len(grad.size()) == 4``. For CNN encoders the two differ in biases and
normalisation parameters; with MLP encoders (and 3-D convolutions, whose kernels are 5-D) ``conv``
modulates nothing at all, as the original would (docs/fidelity.md).

With several processes the scores ``s_m`` are summed over every rank's samples before the ratio is
taken, so every rank scales its (already averaged) gradients by the same ``k``. The ratio of sums needs
no sample count.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mmtool.data import Batch
from mmtool.errors import UserError
from mmtool.methods import METHODS, Method, MethodContext
from mmtool.methods.common import all_reduce_sum, fused_mask, present_ce, present_kw
from mmtool.methods.params import METHOD_REFERENCES, METHOD_SUMMARIES, OGMGEParams
from mmtool.models import MultiModalNet
from mmtool.models.heads import head_name

MODULATED: dict[str, Callable[[torch.Tensor], bool]] = {  # method.modulate -> which encoder parameters
    "all": lambda p: True,
    "conv": lambda p: p.dim() == 4,  # the released code's test on the gradient's shape
}


def confidence_scores(uni: dict[str, torch.Tensor], bias: torch.Tensor, target: torch.Tensor,
                      present: dict[str, torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
    """``s_m = sum_i softmax(W_m f_m(x_i) + b / M)[y_i]`` per modality, from the head's ``W_m f_m + b``. With
    missing modalities (``present``) modality m's sum runs over the samples that have it, rescaled to the batch
    size (B / B_m; the plain sum when all are there), so that modalities missing more often are not scored lower
    for it -- our choice: OGM-GE is defined on complete data."""
    share = bias * (1 - 1 / len(uni))  # W_m f_m + b  ->  W_m f_m + b / M
    p = {m: F.softmax(z.float() - share, dim=1).gather(1, target[:, None]).squeeze(1) for m, z in uni.items()}
    if present is None:
        return torch.stack([v.sum() for v in p.values()])
    n = len(target)
    return torch.stack([torch.where(present[m], v, 0).sum() * n / present[m].sum().clamp_min(1) for m, v in p.items()])


def modulation_coefficients(scores: dict[str, float], alpha: float) -> dict[str, float]:
    """``k_m = 1 - tanh(alpha * rho_m)`` for the modality whose score ratio ``rho_m`` exceeds 1, else 1."""
    coeffs = {}
    for m, s in scores.items():
        others = [v for k, v in scores.items() if k != m]
        rho = s / max(sum(others) / len(others), 1e-12)
        coeffs[m] = 1.0 - math.tanh(alpha * rho) if rho > 1 else 1.0
    return coeffs


@METHODS.register("ogm_ge")
class OGMGE(Method):
    """CE on the fused prediction; encoder gradients of the dominant modality are scaled down."""

    Params = OGMGEParams
    summary, reference = METHOD_SUMMARIES["ogm_ge"], METHOD_REFERENCES["ogm_ge"]
    handles_missing = True

    def __init__(self, params: OGMGEParams, context: MethodContext) -> None:
        if params.alpha < 0 or params.start_epoch > params.end_epoch:
            raise UserError("method.alpha must be >= 0 and method.start_epoch <= method.end_epoch")
        self.params = params
        self.modulated = MODULATED[params.modulate]
        self.runtime = context.runtime
        self.epoch = 1
        self.coeffs: dict[str, float] = {}
        self._sums: dict[str, float] = {}
        self._steps = 0

    def setup(self, model: MultiModalNet) -> None:
        if head_name(model.head) != "linear" or len(model.modalities) < 2:
            raise UserError("method 'ogm_ge' needs model.head: linear and at least two modalities")
        if len(model.modalities) > 2 and self.runtime is not None and self.runtime.is_main:
            print(
                f"note: OGM-GE is defined for two modalities (Peng et al. 2022); with {len(model.modalities)} each "
                "modality's score is compared with the mean of the others' (docs/fidelity.md)",
                file=sys.stderr,
            )

    def on_epoch_start(self, model: MultiModalNet, epoch: int) -> None:
        self.epoch, self._sums, self._steps = epoch, {}, 0

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        out = model(batch.inputs, **present_kw(batch))
        uni = out["unimodal_logits"]
        with torch.no_grad():
            sums = confidence_scores(uni, model.head.bias, batch.target, batch.present)  # (M,) this rank's scores
            sums = all_reduce_sum(self.runtime, sums)  # every rank's samples: one ratio, one k, on every rank
        self.coeffs = modulation_coefficients(dict(zip(uni, sums.tolist(), strict=True)), self.params.alpha)
        return {"task_loss": present_ce(out["logits"], batch.target, fused_mask(batch))}

    def after_backward(self, model: MultiModalNet, step: int) -> None:
        active = self.params.start_epoch <= self.epoch <= self.params.end_epoch
        coeffs = self.coeffs if active else {m: 1.0 for m in self.coeffs}
        for m, k in coeffs.items():
            self._sums[m] = self._sums.get(m, 0.0) + k
            if not active:
                continue
            for p in model.encoders[m].parameters():
                if p.grad is None or not self.modulated(p):
                    continue
                noise_std = p.grad.std() + 1e-8 if p.grad.numel() > 1 else None  # of the unmodulated gradient
                p.grad.mul_(k)
                if self.params.gaussian_enhancement and noise_std is not None:
                    p.grad.add_(torch.randn_like(p.grad) * noise_std)
        self._steps += 1

    def epoch_metrics(self) -> dict[str, float]:
        return {f"ogm_coeff_{m}": s / max(self._steps, 1) for m, s in self._sums.items()}

    def state_dict(self) -> dict:
        """The epoch in progress and its coefficient sums (a mid-epoch checkpoint resumes them)."""
        return {"epoch": self.epoch, "sums": dict(self._sums), "steps": self._steps}

    def load_state_dict(self, state: dict) -> None:
        if state:  # checkpoints written at epoch ends before this state existed hold {}
            self.epoch, self._sums, self._steps = int(state["epoch"]), dict(state["sums"]), int(state["steps"])
