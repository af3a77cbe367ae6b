"""Synthetic datasets alpha, beta and gamma of the UMT/UME paper (Du et al. 2023, App. A.10).

Each data point has two modalities ``m1 = P1 x1`` (d1=200) and ``m2 = P2 x2`` (d2=100), where
``P1, P2 ~ U(-0.5, 0.5)`` are random projections and ``x1, x2`` are unit vectors in R^d (d=50):

* alpha — uni-modal features only: ``x1 = x2 = x`` with ``|x.z| > 0.1``; ``y = [x.z > 0.1]``. N=5000.
* beta — paired features only: independent ``x1, x2`` with ``|x1.x2| > 0.25``; ``y = [x1.x2 > 0.25]``. N=5000.
* gamma — both: 2500 points ``x1 = x2 = x`` with ``x.z >= 0.1`` (label 0), then 5000 pairs with
  ``x1.z <= -0.1`` and ``x2.z <= -0.1`` and ``|x1.x2| > 0.25``, labelled 2 if ``x1.x2 > 0.25`` else 1.

Rejection sampling is vectorised: whole batches are drawn and filtered at once. For gamma's pairs the
per-vector conditions are applied to ``x1`` and ``x2`` separately before pairing, which draws from the same
conditional distribution as resampling the pair (the two vectors are independent) at a fraction of the cost.

Reading chosen where the paper is ambiguous: gamma's step 5 is implemented as written ("if x1.z > -0.1 or
x2.z > -0.1, resample"). Both vectors then lean the same way along -z, so ``x1.x2 > 0.25`` (label 2) is
about three times as common as label 1; the paper's Table 21 suggests near-balanced labels 1 and 2, which
their released script may have produced differently. We keep the written procedure as the default and
report the label counts in the manifest. ``balanced=True`` (``data.balanced: true``) is the other reading:
steps 5-8 as written, but a pair is kept only while its label has fewer than half of the 5000 pairs, so
labels 1 and 2 come out 2500 each (in draw order), the split the paper's Table 21 and its uni-modal
accuracy of about 70% imply.
"""

from __future__ import annotations

import math

import numpy as np

D1, D2, D = 200, 100, 50
THRESH_UNI, THRESH_PAIR = 0.1, 0.25


def unit_vectors(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """``n`` points drawn uniformly on the unit sphere of R^d, shape (n, d)."""
    v = rng.standard_normal((n, d), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def rejection_sample(rng: np.random.Generator, n: int, d: int, accept, rate: float) -> np.ndarray:
    """Draw ``n`` unit vectors satisfying ``accept(v) -> bool mask``; ``rate`` guesses the acceptance rate."""
    out: list[np.ndarray] = []
    have = 0
    while have < n:
        batch = unit_vectors(rng, max(64, math.ceil((n - have) / rate * 1.1)), d)
        kept = batch[accept(batch)]
        out.append(kept)
        have += len(kept)
    return np.concatenate(out)[:n]


def sample_pairs(rng: np.random.Generator, n: int, d: int, single, pair_rate: float, single_rate: float = 1.0):
    """``n`` pairs (x1, x2), each vector satisfying ``single`` and the pair ``|x1.x2| > 0.25``."""
    x1s, x2s = [], []
    have = 0
    while have < n:
        m = max(64, math.ceil((n - have) / pair_rate * 1.1))
        a = rejection_sample(rng, m, d, single, single_rate)
        b = rejection_sample(rng, m, d, single, single_rate)
        keep = np.abs(np.einsum("nd,nd->n", a, b)) > THRESH_PAIR
        x1s.append(a[keep])
        x2s.append(b[keep])
        have += int(keep.sum())
    return np.concatenate(x1s)[:n], np.concatenate(x2s)[:n]


def projections(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(-0.5, 0.5, (D1, D)), rng.uniform(-0.5, 0.5, (D2, D))


def _project(p1: np.ndarray, p2: np.ndarray, x1: np.ndarray, x2: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    return {"m1": (x1 @ p1.T).astype(np.float32), "m2": (x2 @ p2.T).astype(np.float32), "y": y.astype(np.int64)}


def generate_alpha(seed: int, n: int = 5000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    p1, p2 = projections(rng)
    z = unit_vectors(rng, 1, D)[0]
    x = rejection_sample(rng, n, D, lambda v: np.abs(v @ z) > THRESH_UNI, rate=0.45)
    y = (x @ z > THRESH_UNI).astype(np.int64)
    return _project(p1, p2, x, x, y)


def generate_beta(seed: int, n: int = 5000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    p1, p2 = projections(rng)
    x1, x2 = sample_pairs(rng, n, D, lambda v: np.ones(len(v), bool), pair_rate=0.07)
    y = (np.einsum("nd,nd->n", x1, x2) > THRESH_PAIR).astype(np.int64)
    return _project(p1, p2, x1, x2, y)


def generate_gamma(seed: int, n: int = 7500, balanced: bool = False) -> dict[str, np.ndarray]:
    """One third label 0 (shared uni-modal feature), two thirds labels 1/2 (paired feature); ``balanced``:
    labels 1 and 2 in equal numbers (see the module docstring)."""
    rng = np.random.default_rng(seed)
    p1, p2 = projections(rng)
    z = unit_vectors(rng, 1, D)[0]
    n0 = n // 3
    x0 = rejection_sample(rng, n0, D, lambda v: v @ z >= THRESH_UNI, rate=0.22)
    draw = _balanced_pairs if balanced else _pairs
    a, b, y_pair = draw(rng, n - n0, lambda v: v @ z <= -THRESH_UNI)
    x1 = np.concatenate([x0, a])
    x2 = np.concatenate([x0, b])
    y = np.concatenate([np.zeros(n0, np.int64), y_pair])
    return _project(p1, p2, x1, x2, y)


def _pairs(rng: np.random.Generator, n: int, single) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 5-8 as written: ``n`` pairs, labelled 2 if ``x1.x2 > 0.25`` else 1."""
    a, b = sample_pairs(rng, n, D, single, pair_rate=0.1, single_rate=0.22)
    return a, b, np.where(np.einsum("nd,nd->n", a, b) > THRESH_PAIR, 2, 1)


def _balanced_pairs(rng: np.random.Generator, n: int, single) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs drawn as in :func:`_pairs`, each kept while its label has fewer than its share (``n // 2`` for
    label 1, the rest for label 2), in draw order, until both shares are full."""
    want = {1: n // 2, 2: n - n // 2}
    kept: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {1: [], 2: []}
    count = {1: 0, 2: 0}
    while any(count[k] < want[k] for k in want):
        a, b, y = _pairs(rng, n, single)
        for label in (1, 2):
            take = np.flatnonzero(y == label)[: want[label] - count[label]]
            kept[label].append((a[take], b[take]))
            count[label] += len(take)
    a = np.concatenate([x for label in (1, 2) for x, _ in kept[label]])
    b = np.concatenate([x for label in (1, 2) for _, x in kept[label]])
    return a, b, np.repeat(np.array([1, 2], np.int64), [want[1], want[2]])


GENERATORS = {
    "synth-alpha": (generate_alpha, 5000),
    "synth-beta": (generate_beta, 5000),
    "synth-gamma": (generate_gamma, 7500),
}
