"""The modality gap (paper 003, Sec. 4.3.3 and Fig. 3, after Liang et al. 2022, "Mind the gap").

Liang et al. define the gap between two modalities' embeddings as the difference between the centres of their
L2-normalised embeddings, ``delta = mean_i x_i/|x_i| - mean_i y_i/|y_i|``, and report its length ``|delta|``
(Euclidean). Paper 003 plots that distance for text and image features of Food-101, concatenation against MLA
(Fig. 3): the larger the gap, the more distinguishable the modalities.

Here the embeddings are a run's frozen encoder features (:func:`mmtool.engine.features.frozen_features`, cached
in the run), one vector per sample and modality, on the test split. Two modalities share a space only when
their features have the same size: no projection is made (any learnt one would change what is measured), so
modalities of different sizes are refused in one line. With missing modalities (:mod:`mmtool.data.missing`)
each centre is taken over the samples that have that modality.

`mmtool probe` reports the gaps of every pair of modalities with equal feature sizes (``modality_gap``), says
why the other pairs have none (``modality_gap_undefined``), and draws them (``plots/modality_gap.png``).
"""

from __future__ import annotations

from itertools import combinations

import torch

from mmtool.errors import UserError


def centroid(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the L2-normalised rows of ``x`` (N, D) -> (D,), over the rows where ``mask`` is True."""
    x = x.double()
    if mask is not None:
        x = x[mask]
    if len(x) == 0:
        raise UserError("modality gap: no sample has this modality")
    return (x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)).mean(0)


def modality_gap(x: torch.Tensor, y: torch.Tensor, mask_x: torch.Tensor | None = None,
                 mask_y: torch.Tensor | None = None, names: tuple[str, str] = ("x", "y")) -> float:  # fmt: skip
    """``|mean(x/|x|) - mean(y/|y|)|`` (Liang et al. 2022) of two modalities' embeddings (N, D) each."""
    if x.shape[1] != y.shape[1]:
        raise UserError(f"modality gap: {names[0]} ({x.shape[1]} features) and {names[1]} ({y.shape[1]}) do not "
                        "share a space; the gap needs equal feature sizes")  # fmt: skip
    return float((centroid(x, mask_x) - centroid(y, mask_y)).norm())


def modality_gaps(features: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None) -> dict:
    """The gap of every pair of modalities with equal feature sizes: ``{"modality_gap": {"a-b": float},
    "modality_gap_undefined": {"a-b": why}}`` (the second only when some pair has none)."""
    gaps, undefined = {}, {}
    for a, b in combinations(features, 2):
        key = f"{a}-{b}"
        if features[a].shape[1] != features[b].shape[1]:
            undefined[key] = f"feature sizes differ ({features[a].shape[1]} vs {features[b].shape[1]})"
            continue
        masks = (None, None) if present is None else (present[a], present[b])
        gaps[key] = modality_gap(features[a], features[b], *masks, names=(a, b))
    return {"modality_gap": gaps, **({"modality_gap_undefined": undefined} if undefined else {})}
