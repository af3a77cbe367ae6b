"""``synth-tri``: a generated three-modality set where each modality carries part of the label, at its own
strength, so that utilization rates, decide and M-modality methods have something to measure.

Construction (seed ``s``, ``n`` samples; all draws from ``numpy.random.default_rng(s)``):

* the label ``y`` is uniform over 4 classes and read as two bits, ``a = y // 2`` and ``b = y % 2``;
* each modality m has a latent ``x_m`` in R^16 with standard normal noise ``e_m ~ N(0, I)`` and random unit
  directions ``u_m, v_m`` (drawn once per seed, shared by every sample):

  - ``m1``: ``x1 = 1.5 (2a - 1) u1 + e1`` -- bit a only, strong;
  - ``m2``: ``x2 = 1.0 (2b - 1) u2 + e2`` -- bit b only, medium;
  - ``m3``: ``x3 = 0.5 (2a - 1) u3 + 0.5 (2b - 1) v3 + e3`` -- both bits, weak;

* the inputs are random projections ``m = P_m x_m`` with ``P_m ~ U(-0.5, 0.5)`` of sizes 40 x 16,
  30 x 16, 20 x 16 (as App. A.10 projects its latents).

What the Bayes classifier reaches (``Phi`` the standard normal CDF; the bits are independent given the
inputs): m1 alone ``Phi(1.5) / 2 = 47%``, m2 alone ``Phi(1) / 2 = 42%``, m3 alone ``Phi(0.5)^2 = 48%``; all
three ``Phi(1.58) Phi(1.12) = 82%``; without m1 ``Phi(0.5) Phi(1.12) = 60%``, without m2
``Phi(1.58) Phi(0.5) = 65%``, without m3 ``Phi(1.5) Phi(1) = 79%``. No modality is enough alone, every one
adds something, and they add unequal amounts: a fusion model's conditional utilization rates come out
ordered m1 > m2 > m3, and a linear classifier on the three encoders beats averaging their predictions
(the bits combine as a product of the modalities' likelihoods, which a sum of logits represents and a mean
of probabilities does not).
"""

from __future__ import annotations

import numpy as np

MODALITIES = ("m1", "m2", "m3")
LATENT = 16
DIMS = {"m1": 40, "m2": 30, "m3": 20}  # input size of each modality
STRENGTH = {"m1": (1.5, 0.0), "m2": (0.0, 1.0), "m3": (0.5, 0.5)}  # (weight of bit a, weight of bit b) per modality
NUM_CLASSES = 4
DEFAULT_N = 3000


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(LATENT)
    return v / np.linalg.norm(v)


def generate_tri(seed: int, n: int = DEFAULT_N) -> dict[str, np.ndarray]:
    """``{"m1": (n, 40), "m2": (n, 30), "m3": (n, 20)}`` float32 inputs and ``"y"`` (n,) int64 (module docstring)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, n)
    bits = np.stack([2.0 * (y // 2) - 1, 2.0 * (y % 2) - 1], axis=1)  # (n, 2): a and b as -1/+1
    out: dict[str, np.ndarray] = {"y": y.astype(np.int64)}
    for m in MODALITIES:
        directions = np.stack([_unit(rng), _unit(rng)])  # (2, LATENT): u_m, v_m
        weights = np.asarray(STRENGTH[m])  # (2,)
        latent = (bits * weights) @ directions + rng.standard_normal((n, LATENT))  # (n, LATENT)
        projection = rng.uniform(-0.5, 0.5, (DIMS[m], LATENT))
        out[m] = (latent @ projection.T).astype(np.float32)
    return out
