"""Paired bootstrap over test samples."""

from __future__ import annotations

import torch


def paired_bootstrap_diff(
    correct_a: torch.Tensor, correct_b: torch.Tensor, resamples: int, confidence: float, seed: int
) -> dict[str, float]:
    """Percentile interval of ``acc(a) - acc(b)`` (in points) when test samples are resampled together.

    Args:
        correct_a, correct_b: (N,) booleans, whether each model got test sample i right.
    """
    n = len(correct_a)
    diff = correct_a.float() - correct_b.float()  # (N,) per-sample difference, in {-1, 0, 1}
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (resamples, n), generator=gen)  # (R, N)
    stats = diff[idx].mean(dim=1) * 100  # (R,)
    tail = (1 - confidence) / 2
    lo, hi = torch.quantile(stats, torch.tensor([tail, 1 - tail])).tolist()
    return {"diff": float(diff.mean() * 100), "low": lo, "high": hi, "confidence": confidence, "resamples": resamples}
