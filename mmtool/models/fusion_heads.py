"""The fusion heads of paper 003's baselines (Tables 1-3): Sum, Concat, FiLM, BiGated, and QMF's energy-weighted
late fusion. Registered in :data:`~mmtool.models.heads.HEADS` as ``sum``, ``concat``, ``film``, ``gated``, ``qmf``.

Sum, Concat, FiLM and gated fusion follow the fusion modules of the OGM-GE code (GeWu-Lab/OGM-GE_CVPR2022,
``models/fusion_modules.py``, commit edee4a5), which MLA's released code copies unchanged
(Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation, ``models/fusion_modules.py``, commit 4735bbc).
Those modules take two features ``(x, y)``; the AV classifiers call them as ``fusion(audio, visual)`` and the
image-text ones as ``fusion(text, image)``, so ``x`` is audio or text -- "either audio or text serves as the
condition encoder's input" (paper 003, App. A.2). Here ``x`` is the first modality in the dataset's order
(CREMA-D: audio, then visual) unless ``condition``/``gate`` names another.

* ``sum``: ``fc_x(x) + fc_y(y)``, one ``nn.Linear(D_m, C)`` per modality (any number of modalities). Each
  ``fc_m(f_m)`` is modality m's own classifier: the head returns them as ``unimodal_logits``, which is how
  paper 003 (Sec. 4.1.1, after [26]) reads a uni-modal accuracy off a Sum model.
* ``concat``: ``fc_out(cat(x, y))`` with ``nn.Linear(sum D_m, C)``, stored as one weight block per modality
  (nothing is sliced out of a matrix); the fused logits are those of the ``linear`` head. ``unimodal_logits``
  are the "sub-heads" paper 003 uses for uni-modal accuracy, as the OGM-GE/MLA code computes them:
  ``W_m f_m + b / M`` (the bias shared out equally; ``linear`` gives each modality the whole bias).
* ``film`` (Perez et al. 2018): ``gamma, beta = split(fc(x))``, ``fc_out(gamma * y + beta)``. The original has
  ``fc = nn.Linear(D, 2 * D)`` and ``fc_out = nn.Linear(D, C)`` with every feature size D = 512 and
  ``x_film=True`` by default (x conditions y). Here ``fc = nn.Linear(D_x, 2 * D_y)``, which is the original
  when the sizes are equal.
* ``gated`` (Kiela et al. 2018; "BiGated" in paper 003): ``h_x = fc_x(x)``, ``h_y = fc_y(y)`` (``nn.Linear(D_m,
  dim)``), ``fc_out(sigmoid(h_x) * h_y)`` with ``x_gate=True`` by default (x gives the gate). The original sets
  ``dim`` = the feature size (512); here ``dim`` defaults to the gating modality's feature size.

FiLM and gated fusion mix the two modalities before the classifier, so they return no ``unimodal_logits``
(paper 003 "deactivates" the other modality instead, Sec. 4.1.1); they are defined for exactly two modalities
and refuse any other number when built.

``qmf`` is QMF's dynamic late fusion (Zhang et al., ICML 2023; method ``qmf``, :mod:`mmtool.methods.qmf`): one
``nn.Linear(D_m, C)`` per modality, and the fused logits ``sum_m w_m z_m`` with the per-sample weight
``w_m = logsumexp(z_m) / T`` -- minus the energy of the modality's logits over a temperature T = 10 -- taken as
a constant (detached), as in the QMF code (QingyangZhang/QMF, ``RGBD-scene-recognition/models/QMF.py``, commit
d7f31dd: ``conf = -0.1 * energy``; ``src/models/late_fusion.py``, commit 4d13bf1: ``energy / 10``) and MLA's
``main.py`` (commit 11ae1ee). The weights are not normalised over the modalities, as in both codes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmtool.errors import UserError
from mmtool.models.heads import HEADS, Present, present_sum

QMF_TEMPERATURE = 10.0  # QMF code: conf = logsumexp(z) / 10 (RGBD models/QMF.py: -0.1 * energy)


def energy(logits: torch.Tensor) -> torch.Tensor:
    """The energy of each sample's logits, ``-logsumexp(z)``: (B, C) -> (B,). Lower energy, more confidence."""
    return -torch.logsumexp(logits.float(), dim=-1)


def energy_confidence(logits: torch.Tensor, temperature: float = QMF_TEMPERATURE) -> torch.Tensor:
    """QMF's per-sample confidence of one modality, ``-energy / T``: (B, C) -> (B,)."""
    return -energy(logits) / temperature


def _two(feature_dims: dict[str, int], head: str, first: str | None, role: str) -> tuple[str, str]:
    """(x, y) of a two-modality head: x is ``first`` (default: the first modality in order), y the other."""
    if len(feature_dims) != 2:
        n, names = len(feature_dims), list(feature_dims)
        raise UserError(f"model.head: {head} fuses exactly two modalities, got {n} ({names})")
    names = list(feature_dims)
    x = names[0] if first is None else first
    if x not in names:
        raise UserError(f"model.head: {head}'s {role} modality {x!r} is not one of {names}")
    return x, next(m for m in names if m != x)


@HEADS.register("sum")
class SumHead(nn.Module):
    """``logits = sum_m fc_m(f_m)``, one ``nn.Linear(D_m, C)`` per modality; ``unimodal_logits = {m: fc_m(f_m)}``."""

    def __init__(self, feature_dims: dict[str, int], num_classes: int) -> None:
        super().__init__()
        self.fc = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in feature_dims.items()})

    def forward(self, features: dict[str, torch.Tensor], present: Present | None = None) -> dict[str, Any]:
        uni = {m: self.fc[m](f) for m, f in features.items()}  # each (B, C)
        return {"logits": present_sum(uni, present), "unimodal_logits": uni}  # missing modalities: the others' sum


@HEADS.register("concat")
class ConcatHead(nn.Module):
    """``logits = W [f_1; ...; f_M] + b = sum_m W_m f_m + b``; ``unimodal_logits = {m: W_m f_m + b / M}``.

    ``W_m`` and ``b`` get ``nn.Linear(sum D_m, C)``'s default initialisation (uniform, bound 1/sqrt(sum D_m)).
    """

    def __init__(self, feature_dims: dict[str, int], num_classes: int) -> None:
        super().__init__()
        self.proj = nn.ModuleDict({m: nn.Linear(d, num_classes, bias=False) for m, d in feature_dims.items()})
        self.bias = nn.Parameter(torch.zeros(num_classes))
        bound = 1.0 / sum(feature_dims.values()) ** 0.5
        for layer in self.proj.values():
            nn.init.uniform_(layer.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)
        self.share = 1.0 / len(feature_dims)  # each sub-head's part of the bias (the OGM-GE/MLA code: b / M)

    def forward(self, features: dict[str, torch.Tensor], present: Present | None = None) -> dict[str, Any]:
        parts = {m: self.proj[m](f) for m, f in features.items()}  # each (B, C)
        uni = {m: p + self.share * self.bias for m, p in parts.items()}
        return {"logits": present_sum(parts, present) + self.bias, "unimodal_logits": uni}


@HEADS.register("film")
class FiLMHead(nn.Module):
    """FiLM: ``gamma, beta = split(fc(f_x), D_y)``; ``logits = fc_out(gamma * f_y + beta)``.

    Args:
        condition: the modality x that conditions the other (default: the first; the original's ``x_film=True``).
    """

    def __init__(self, feature_dims: dict[str, int], num_classes: int, condition: str | None = None) -> None:
        super().__init__()
        self.x, self.y = _two(feature_dims, "film", condition, "condition")
        self.dim = feature_dims[self.y]
        self.fc = nn.Linear(feature_dims[self.x], 2 * self.dim)
        self.fc_out = nn.Linear(self.dim, num_classes)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | dict]:
        gamma, beta = torch.split(self.fc(features[self.x]), self.dim, dim=1)  # each (B, D_y)
        return {"logits": self.fc_out(gamma * features[self.y] + beta)}


@HEADS.register("gated")
class GatedHead(nn.Module):
    """Gated fusion ("BiGated"): ``logits = fc_out(sigmoid(fc_x(f_x)) * fc_y(f_y))``.

    Args:
        gate: the modality x whose hidden state gives the gate (default: the first; the original's ``x_gate=True``).
        dim: the hidden width of ``fc_x``/``fc_y`` (default: x's feature size, as the original's 512 = 512).
    """

    def __init__(
        self, feature_dims: dict[str, int], num_classes: int, gate: str | None = None, dim: int | None = None
    ) -> None:
        super().__init__()
        self.x, self.y = _two(feature_dims, "gated", gate, "gate")
        width = feature_dims[self.x] if dim is None else int(dim)
        self.fc_x = nn.Linear(feature_dims[self.x], width)
        self.fc_y = nn.Linear(feature_dims[self.y], width)
        self.fc_out = nn.Linear(width, num_classes)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | dict]:
        gate = torch.sigmoid(self.fc_x(features[self.x]))  # (B, dim)
        return {"logits": self.fc_out(gate * self.fc_y(features[self.y]))}


@HEADS.register("qmf")
class QMFHead(nn.Module):
    """QMF's late fusion: ``logits = sum_m w_m z_m`` with ``z_m = fc_m(f_m)`` and the detached per-sample weight
    ``w_m = logsumexp(z_m) / temperature`` (:func:`energy_confidence`); ``unimodal_logits = {m: z_m}``."""

    def __init__(self, feature_dims: dict[str, int], num_classes: int, temperature: float = QMF_TEMPERATURE) -> None:
        super().__init__()
        if temperature <= 0:
            raise UserError(f"qmf head: temperature must be > 0, got {temperature}")
        self.fc = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in feature_dims.items()})
        self.temperature = float(temperature)

    def forward(self, features: dict[str, torch.Tensor], present: Present | None = None) -> dict[str, Any]:
        uni = {m: self.fc[m](f) for m, f in features.items()}  # each (B, C)
        weighted = {m: energy_confidence(z, self.temperature).detach().unsqueeze(1) * z.float() for m, z in uni.items()}
        if present is None:  # as it always was (bit for bit)
            return {"logits": torch.stack(list(weighted.values())).sum(0), "unimodal_logits": uni}
        return {"logits": present_sum(weighted, present), "unimodal_logits": uni}  # missing: the others' terms
