"""Fusion heads: map per-modality features ``{m: (B, D_m)}`` to a dict with ``logits`` (B, C).

With missing modalities (:mod:`mmtool.data.missing`) the heads that sum or average per-modality parts take
``present`` ({m: (B,) bool}) and combine only the parts that are there: sums run over the present parts,
averages are renormalised over them (:data:`~mmtool.models.base.MISSING_HEADS`; the others refuse).

Heads that are a sum of per-modality terms also return ``unimodal_logits``: the prediction each
modality's part of the head makes on its own (paper 000, App. A.7.1 / Table 4). They are built from
separate per-modality layers, so nothing is ever sliced out of a concatenated weight matrix.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmtool.errors import UserError
from mmtool.registry import Registry

HEADS: Registry[type[nn.Module]] = Registry("head")


def head_name(head: nn.Module) -> str | None:
    """The recipe name (``model.head``) of a head module: ``"linear"``, ``"ensemble"``, ..."""
    return HEADS.name_of(head)


@HEADS.register("linear")
class LinearHead(nn.Module):
    """Linear classifier on the concatenated features, stored as one weight block per modality.

    ``logits = sum_m W_m f_m + b``; the uni-modal classifier of modality m is ``W_m f_m + b`` (the shared
    bias is kept with every modality so a one-modality head is an ordinary linear layer).
    """

    def __init__(self, feature_dims: dict[str, int], num_classes: int) -> None:
        super().__init__()
        self.proj = nn.ModuleDict({m: nn.Linear(d, num_classes, bias=False) for m, d in feature_dims.items()})
        self.bias = nn.Parameter(torch.zeros(num_classes))
        bound = 1.0 / sum(feature_dims.values()) ** 0.5  # nn.Linear's default init for the full layer
        for layer in self.proj.values():
            nn.init.uniform_(layer.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, features: dict[str, torch.Tensor], present: Present | None = None) -> dict[str, Any]:
        parts = {m: self.proj[m](f) for m, f in features.items()}  # each (B, C)
        uni = {m: p + self.bias for m, p in parts.items()}
        return {"logits": present_sum(parts, present) + self.bias, "unimodal_logits": uni}


@HEADS.register("mlp")
class MLPHead(nn.Module):
    """Concatenate, Linear(hidden) + ReLU, Linear(C) (Table 11's MLP head; with identity encoders it is
    the 2-layer MLP on concatenated inputs that App. A.10 trains as its multi-modal model)."""

    def __init__(self, feature_dims: dict[str, int], num_classes: int, hidden: int = 200) -> None:
        super().__init__()
        self.order = list(feature_dims)
        self.net = nn.Sequential(
            nn.Linear(sum(feature_dims.values()), hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | dict]:
        return {"logits": self.net(torch.cat([features[m] for m in self.order], dim=1))}


@HEADS.register("ensemble")
class EnsembleHead(nn.Module):
    """One linear classifier per modality; the fused prediction averages their softmax probabilities.

    ``logits`` are the log of the averaged probabilities, so argmax and cross-entropy apply directly.
    """

    def __init__(self, feature_dims: dict[str, int], num_classes: int) -> None:
        super().__init__()
        self.proj = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in feature_dims.items()})

    def forward(self, features: dict[str, torch.Tensor], present: Present | None = None) -> dict[str, Any]:
        uni = {m: self.proj[m](f) for m, f in features.items()}
        return {"logits": average_log_probs(list(uni.values()), present=_masks(uni, present)), "unimodal_logits": uni}


@HEADS.register("members")
class MemberHeads(nn.Module):
    """The heads of separately trained one-modality models, side by side; the fused prediction averages
    their softmax probabilities. This is UME assembled from uni-modal runs (paper 000, App. A.2: "we
    directly average the uni-modal models' predictions and no additional training is added").

    Args:
        heads: ``{modality: {"name": head name, "args": {...}}}``, each built on that modality alone.
    """

    def __init__(self, feature_dims: dict[str, int], num_classes: int, heads: dict[str, dict]) -> None:
        super().__init__()
        self.members = nn.ModuleDict(
            {m: HEADS.get(h["name"])({m: feature_dims[m]}, num_classes, **h.get("args", {})) for m, h in heads.items()}
        )

    def forward(self, features: dict[str, torch.Tensor], present: Present | None = None) -> dict[str, Any]:
        uni = {m: head({m: features[m]})["logits"] for m, head in self.members.items()}
        return {"logits": average_log_probs(list(uni.values()), present=_masks(uni, present)), "unimodal_logits": uni}


@HEADS.register("attention")
class AttentionHead(nn.Module):
    """Parameter-free self-attention across modalities, then one linear layer (Table 11's attention head:
    "Attention Layer (without new parameters) + a linear layer"; paper 000, Tables 5 and 9).

    Reading: each modality's feature vector is one token, ``X = stack(f_m)`` of shape (B, M, D) in spec
    order, and the attention layer is scaled dot-product self-attention with ``Q = K = V = X`` (no
    projections, so no parameters): ``A = softmax(X X^T / sqrt(D))``, ``Y = A X``. The attended tokens
    are concatenated in spec order, (B, M * D), and classified by ``nn.Linear(M * D, C)`` -- the same
    size as the linear head, as in Table 11. Concatenation, not mean pooling: attention without
    positional terms is permutation-equivariant over the tokens, and a mean would make the head blind to
    which modality a feature came from. Tokens share one size D: where the modalities' feature sizes
    differ (Kinetics-400: SlowFast's 2304 and the audio ResNet's 512), each token is zero-padded to the
    largest one, D = max(D_m) — our choice, which keeps the layer free of parameters as Table 11 says
    (padding adds nothing to the dot products; the paper does not say how it met unequal sizes).

    The attended tokens mix modalities, so the head is not a sum of per-modality parts and returns no
    ``unimodal_logits``.
    """

    def __init__(self, feature_dims: dict[str, int], num_classes: int) -> None:
        super().__init__()
        self.order = list(feature_dims)
        self.size = max(feature_dims.values())
        self.linear = nn.Linear(len(self.order) * self.size, num_classes)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | dict]:
        padded = [F.pad(features[m], (0, self.size - features[m].shape[-1])) for m in self.order]
        tokens = torch.stack(padded, dim=1)  # (B, M, D)
        return {"logits": self.linear(self_attention(tokens).flatten(1))}  # (B, M * D) -> (B, C)


def self_attention(tokens: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product self-attention with queries, keys and values all equal to ``tokens``.

    Args:
        tokens: (B, M, D).

    Returns:
        (B, M, D): each token replaced by the softmax(similarity)-weighted mean of all tokens.
    """
    scores = tokens @ tokens.transpose(1, 2) / tokens.shape[-1] ** 0.5  # (B, M, M)
    return torch.softmax(scores, dim=-1) @ tokens


@HEADS.register("shared")
class SharedHead(nn.Module):
    """One linear classifier shared by every modality (MLA, paper 003 Eq. 2); the fused prediction is a
    weighted sum of the uni-modal logits. Needs equal feature sizes.

    ``fusion`` picks the weights (:data:`FUSION_RULES`): ``sample`` (default) is the paper's test-time
    fusion, one entropy weight per sample and modality (Eq. 6-8); ``batch`` is the released code's, one
    weight per modality for the whole batch (:func:`batch_entropy_weights`); ``fixed`` uses ``weights``,
    one per modality in the spec's order (the released code without its ``--dynamic`` flag).
    """

    def __init__(
        self, feature_dims: dict[str, int], num_classes: int, fusion: str = "sample", weights: list[float] | None = None
    ) -> None:
        super().__init__()
        sizes = set(feature_dims.values())
        if len(sizes) != 1:
            raise UserError(f"model.head: shared needs one feature size for every modality, got {feature_dims}")
        if fusion not in FUSION_RULES:
            raise UserError(f"shared head: fusion must be one of {', '.join(FUSION_RULES)}, got {fusion!r}")
        if (fusion == "fixed") != (weights is not None) or (weights is not None and len(weights) != len(feature_dims)):
            raise UserError(f"shared head: fusion 'fixed' takes one weight per modality ({len(feature_dims)}), "
                            f"other rules none; got fusion {fusion!r} with weights {weights}")  # fmt: skip
        self.linear = nn.Linear(sizes.pop(), num_classes)
        self.fusion = fusion
        self.fixed = None if weights is None else [float(w) for w in weights]

    def classify(self, features: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, C)
        return self.linear(features)

    def forward(self, features: dict[str, torch.Tensor], present: Present | None = None) -> dict[str, Any]:
        uni = {m: self.linear(f) for m, f in features.items()}
        if len(uni) == 1:  # one modality (MLA's training steps): its weight is 1, so the logits are its own,
            return {"logits": next(iter(uni.values())), "unimodal_logits": uni}  # exactly classify(f)
        if present is not None:  # the rule's weights renormalised over the modalities that are there
            fused = _present_fusion(self.fusion, list(uni.values()), self.fixed, _masks(uni, present))
            return {"logits": fused, "unimodal_logits": uni}
        return {"logits": FUSION_RULES[self.fusion](list(uni.values()), self.fixed), "unimodal_logits": uni}


def entropy_weights(logits: list[torch.Tensor]) -> torch.Tensor:
    """Per-sample modality weights from prediction entropy (paper 003, Eq. 7-8), shape (K, B).

    ``lambda_m = exp(max_v e_v - e_m) / sum_u exp(max_v e_v - e_u)``, i.e. a softmax of ``-e`` over the
    modalities: the less certain a modality's prediction, the smaller its weight.
    """
    logp = torch.stack([F.log_softmax(z.float(), dim=-1) for z in logits])  # (K, B, C)
    entropy = -(logp.exp() * logp).sum(-1)  # (K, B)
    return torch.softmax(-entropy, dim=0)


def entropy_weighted_logits(logits: list[torch.Tensor], present: list[torch.Tensor] | None = None) -> torch.Tensor:
    """``sum_m lambda_m f_m(x)`` (Eq. 6) over the modalities' logits, weights from :func:`entropy_weights`
    (with ``present``, one (B,) mask per modality: a softmax over the modalities that are there)."""
    if present is not None:
        return _present_fusion("sample", logits, None, present)
    w = entropy_weights(logits)  # (K, B)
    return (w.unsqueeze(-1) * torch.stack([z.float() for z in logits])).sum(0)


def batch_entropy_weights(logits: list[torch.Tensor]) -> torch.Tensor:
    """One weight per modality for a whole batch, shape (K,): the released MLA code's test-time fusion.

    Each modality's logits (B, C) become probabilities by a softmax over the *batch* (dim 0, not the
    classes), their entropy is summed over every entry, and the weights are a softmax of minus these
    entropies over the modalities. Unlike Eq. 7-8, a sample's fused prediction depends on which other
    samples share its batch.
    """
    logp = torch.stack([F.log_softmax(z.float(), dim=0) for z in logits])  # (K, B, C), normalised over samples
    entropy = -(logp.exp() * logp).sum(dim=(1, 2))  # (K,)
    return torch.softmax(-entropy, dim=0)


def _sample_fusion(logits: list[torch.Tensor], fixed: list[float] | None) -> torch.Tensor:
    return entropy_weighted_logits(logits)


def _batch_fusion(logits: list[torch.Tensor], fixed: list[float] | None) -> torch.Tensor:
    w = batch_entropy_weights(logits)  # (K,)
    return (w.view(-1, 1, 1) * torch.stack([z.float() for z in logits])).sum(0)


def _fixed_fusion(logits: list[torch.Tensor], fixed: list[float] | None) -> torch.Tensor:
    stacked = torch.stack([z.float() for z in logits])
    return (stacked.new_tensor(fixed).view(-1, 1, 1) * stacked).sum(0)


# the shared head's fusion rules: (uni-modal logits in spec order, fixed weights) -> fused logits (B, C)
FUSION_RULES = {"sample": _sample_fusion, "batch": _batch_fusion, "fixed": _fixed_fusion}


def average_log_probs(
    logits: list[torch.Tensor], weights: list[float] | None = None, present: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """log(sum_i w_i softmax(logits_i)) with weights summing to 1 (plain mean when ``weights`` is None). With
    ``present`` (one (B,) bool mask per member) each sample's weights are renormalised over its members that
    are there."""
    k = len(logits)
    stacked = torch.stack([F.log_softmax(x.float(), dim=-1) for x in logits])  # (K, B, C)
    w = torch.tensor(weights if weights is not None else [1.0 / k] * k, dtype=stacked.dtype, device=stacked.device)
    if present is None:
        return torch.logsumexp(stacked + w.log().view(-1, 1, 1), dim=0)
    per_sample = _renormalised(w.view(-1, 1), _some(present))  # (K, B)
    return torch.logsumexp(stacked + per_sample.log().unsqueeze(-1), dim=0)


# ----------------------------------------------------------------------------------------- missing modalities
Present = dict[str, torch.Tensor]  # {modality: (B,) bool}, True where the modality is there


def _masks(uni: dict[str, torch.Tensor], present: Present | None) -> list[torch.Tensor] | None:
    return None if present is None else [present[m] for m in uni]


def present_sum(parts: dict[str, torch.Tensor], present: Present | None) -> torch.Tensor:
    """``sum_m parts[m]`` over the modalities that are there (all when ``present`` is None): (B, C)."""
    if present is None:
        return torch.stack(list(parts.values())).sum(0)
    return torch.stack([torch.where(present[m].unsqueeze(1), p, torch.zeros_like(p)) for m, p in parts.items()]).sum(0)


def _some(masks: list[torch.Tensor]) -> torch.Tensor:
    """(K, B) float masks; a sample with no member there counts every member (its fused logits are replaced
    by uniform ones in :meth:`~mmtool.models.base.MultiModalNet.fuse`; this only keeps its numbers finite)."""
    mask = torch.stack(masks)  # (K, B) bool
    return torch.where(mask.any(0, keepdim=True), mask, torch.ones_like(mask)).float()


def _renormalised(w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Weights ``w`` (K, B) or (K, 1) kept where ``mask`` (K, B), rescaled to their sum over all K: (K, B)."""
    kept = w * mask
    return kept * (w.sum(0, keepdim=True) / kept.sum(0, keepdim=True))


def _present_fusion(rule: str, logits: list[torch.Tensor], fixed: list[float] | None,
                    masks: list[torch.Tensor]) -> torch.Tensor:  # fmt: skip
    """The shared head's fusion rule over the modalities that are there: the per-sample entropy weights (Eq. 7-8)
    as a softmax over those modalities; the batch rule's entropies over the samples that have each modality,
    then renormalised per sample; fixed weights renormalised per sample to their total."""
    mask = _some(masks)  # (K, B)
    stacked = torch.stack([z.float() for z in logits])  # (K, B, C)
    if rule == "sample":
        w = torch.softmax(-_entropy(stacked).masked_fill(mask == 0, float("inf")), dim=0)  # (K, B)
    elif rule == "batch":
        w = _renormalised(torch.stack([_batch_entropy_weight_scores(z, m) for z, m in zip(stacked, mask, strict=True)])
                          .neg().softmax(0).view(-1, 1), mask)  # fmt: skip
    else:
        w = _renormalised(stacked.new_tensor(fixed).view(-1, 1), mask)
    return (w.unsqueeze(-1) * stacked).sum(0)


def _entropy(stacked: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(stacked, dim=-1)  # (K, B, C)
    return -(logp.exp() * logp).sum(-1)  # (K, B)


def _batch_entropy_weight_scores(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One modality's batch entropy (:func:`batch_entropy_weights`) over the samples that have it: ()."""
    rows = z[mask > 0]
    if rows.shape[0] == 0:
        return z.new_zeros(())
    logp = F.log_softmax(rows, dim=0)
    return -(logp.exp() * logp).sum()
