"""Synthetic dataset ``synth-lazy``: an easy modality that shuts learning of a hard one off.

In the spirit of the UMT/UME paper's synthetic sets (Du et al. 2023, App. A.10): two modalities
``m1 = P1 u1`` (200-d) and ``m2 = P2 x2`` (100-d) are random projections (``P ~ U(-0.5, 0.5)``) of
latent vectors in R^d (d=50), with two fixed unit directions ``z1`` (easy) and ``z2`` (hard). Labels are
binary and exactly balanced (``n // 2`` of label 0).

* **m2 carries the hard feature** and defines the label: ``x2`` is a unit vector and
  ``y = [|x2.z2| > 0.1]``. The label depends on the *magnitude* of a projection, so it is not linearly
  separable in m2 (a linear classifier is near chance) and an MLP needs hundreds of full-batch epochs to
  find ``z2``. Each class is drawn by rejection sampling on that condition.
* **m1 carries the easy feature**: ``u1 = x1 + 0.5 s z1`` with the label's sign ``s = 2y - 1`` and ``x1``
  a unit vector with ``|x1.z1| < 0.25`` (a second rejection step). The coordinate ``u1.z1`` is then
  ``0.5 s`` plus at most 0.25 of noise: m1 is linearly separable with a margin on every sample, so a
  fusion model reaches zero training error through m1 within a few epochs and the gradient that would
  teach its m2 encoder vanishes (modality laziness).
* **The easy feature is missing at evaluation time** on a fraction ``q = 0.35`` of samples (a sensor
  dropping out): ``m1_eval`` equals ``m1`` except that those samples have ``s = 0``, so m1 says nothing
  about their label. Training data never shows this, so the shift cannot be learned; it only decides
  what an under-learned m2 costs. A model on m1 alone scores about ``1 - q/2`` (~82%) on val/test; one on
  m2 alone scores well above 90% once trained long enough.

With the shipped recipes (``recipes/synth-lazy/``: 100-unit MLP encoders, full-batch SGD lr 0.2, 1500
epochs; seed 0) the uni-modal models score 82% (m1) and 96% (m2) on test. Naive fusion scores 81%,
relying on m1 only (d_util -0.37), and a linear probe on its m2 encoder scores 52%, against 90% for the
uni-modal m2 encoder; snapshots from epoch 250 to 1500 all probe at 51-52%, so this is not an artefact
of validation picking an early epoch. UMT recovers the m2 features (probe 90%, test 86%); UME scores 94%.

``generate_lazy`` returns ``m1`` (what the training split sees), ``m1_eval`` (what validation and test
see; the loader picks per split, see :mod:`mmtool.data.registry_laziness`), ``m2`` and ``y``. The
projections and directions are drawn first from the seeded stream (:func:`lazy_directions`), so tests can
recover the latent vectors. Rejection sampling and the eval-time drop-out are vectorised.
"""

from __future__ import annotations

import numpy as np

from mmtool.data.synthetic import D1, D2, D, rejection_sample, unit_vectors

EASY_AMPLITUDE = 0.5  # u1.z1 = 0.5 s + noise
EASY_NOISE = 0.25  # |x1.z1| < 0.25: m1 separates the classes with margin 0.25 in latent space
HARD_THRESHOLD = 0.1  # y = [|x2.z2| > 0.1]; P(|x2.z2| > 0.1) is about 0.48 for d=50
EVAL_DROP = 0.35  # fraction of samples whose easy feature is missing in m1_eval
DEFAULT_N = 5000


def lazy_directions(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(P1 (200, 50), P2 (100, 50), z1 (50,), z2 (50,)): drawn first from the generator's stream."""
    p1 = rng.uniform(-0.5, 0.5, (D1, D))
    p2 = rng.uniform(-0.5, 0.5, (D2, D))
    z1, z2 = unit_vectors(rng, 2, D).astype(np.float64)
    return p1, p2, z1, z2


def generate_lazy(seed: int, n: int = DEFAULT_N) -> dict[str, np.ndarray]:
    """``{"m1", "m1_eval": (n, 200) float32, "m2": (n, 100) float32, "y": (n,) int64}`` (see module doc)."""
    rng = np.random.default_rng(seed)
    p1, p2, z1, z2 = lazy_directions(rng)
    n0 = n // 2
    low = rejection_sample(rng, n0, D, lambda v: np.abs(v @ z2) <= HARD_THRESHOLD, rate=0.5)
    high = rejection_sample(rng, n - n0, D, lambda v: np.abs(v @ z2) > HARD_THRESHOLD, rate=0.45)
    order = rng.permutation(n)  # interleave the classes
    x2 = np.concatenate([low, high])[order]  # (n, d)
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(n - n0, np.int64)])[order]
    x1 = rejection_sample(rng, n, D, lambda v: np.abs(v @ z1) < EASY_NOISE, rate=0.9)  # (n, d)
    sign = (2 * y - 1).astype(np.float64)
    kept = rng.random(n) >= EVAL_DROP  # False: easy feature missing at evaluation time
    easy_dir = EASY_AMPLITUDE * (z1 @ p1.T)  # (200,): the easy feature as seen in m1
    m1_noise = x1 @ p1.T  # (n, 200)
    return {
        "m1": (m1_noise + sign[:, None] * easy_dir).astype(np.float32),
        "m1_eval": (m1_noise + (sign * kept)[:, None] * easy_dir).astype(np.float32),
        "m2": (x2 @ p2.T).astype(np.float32),
        "y": y,
    }
