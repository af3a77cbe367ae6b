"""Synthetic datasets alpha, beta, gamma (paper 000, App. A.10).

Two kinds of checks: properties visible from the data alone (shapes, ranks, class counts, determinism),
and the defining constraints on the latent unit vectors, recovered from the two modalities by inverting
the random projections (drawn first from the generator's seeded stream) and checked independently.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmtool.data.synthetic import (
    D1,
    D2,
    GENERATORS,
    D,
    generate_alpha,
    generate_beta,
    generate_gamma,
    projections,
    rejection_sample,
    sample_pairs,
    unit_vectors,
)

N = 300
TOL = 1e-3  # latents are recovered from float32 data; constraints are checked with this margin
ALL = [generate_alpha, generate_beta, generate_gamma]


def rank(a: np.ndarray) -> int:
    # torch's LAPACK (single-threaded in these tests) is much faster than numpy's threaded one on a busy box
    return int(torch.linalg.matrix_rank(torch.from_numpy(a.astype(np.float64)), atol=1e-3))


def lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin_x |a x - b|, in float64."""
    ta, tb = (torch.from_numpy(np.asarray(v, dtype=np.float64)) for v in (a, b))
    return torch.linalg.lstsq(ta, tb, driver="gelsd").solution.numpy()


def recover(seed: int, data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x1, x2, z): latents solved from m1 = x1 P1^T and m2 = x2 P2^T; z is the generator's direction."""
    rng = np.random.default_rng(seed)
    p1, p2 = projections(rng)
    z = unit_vectors(rng, 1, D)[0].astype(np.float64)
    x1 = lstsq(p1, data["m1"].T).T
    x2 = lstsq(p2, data["m2"].T).T
    # the fit must be exact: m really is a projection of a 50-dim vector
    assert np.abs(x1 @ p1.T - data["m1"]).max() < 1e-4
    assert np.abs(x2 @ p2.T - data["m2"]).max() < 1e-4
    return x1, x2, z


def rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("nd,nd->n", a, b)


# ------------------------------------------------------------------------------------------ generic
@pytest.mark.parametrize("gen", ALL, ids=lambda g: g.__name__)
def test_shapes_and_dtypes(gen):
    data = gen(0, N)
    assert set(data) == {"m1", "m2", "y"}
    assert data["m1"].shape == (N, D1) == (N, 200)
    assert data["m2"].shape == (N, D2) == (N, 100)
    assert data["y"].shape == (N,)
    assert data["m1"].dtype == np.float32 and data["m2"].dtype == np.float32 and data["y"].dtype == np.int64
    assert np.isfinite(data["m1"]).all() and np.isfinite(data["m2"]).all()


@pytest.mark.parametrize("gen", ALL, ids=lambda g: g.__name__)
def test_deterministic_by_seed_and_seeds_differ(gen):
    a, b, c = gen(5, N), gen(5, N), gen(6, N)
    for k in ("m1", "m2", "y"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.allclose(a["m1"], c["m1"])
    assert not np.allclose(a["m2"], c["m2"])


@pytest.mark.parametrize("gen", ALL, ids=lambda g: g.__name__)
def test_modalities_live_in_50_dim_subspaces(gen):
    data = gen(2, N)
    assert rank(data["m1"]) == D
    assert rank(data["m2"]) == D


def test_registry_sizes_match_paper_defaults():
    assert GENERATORS["synth-alpha"][1] == 5000
    assert GENERATORS["synth-beta"][1] == 5000
    assert GENERATORS["synth-gamma"][1] == 7500


# ------------------------------------------------------------------------------------------ alpha
def test_alpha_both_modalities_project_the_same_vector():
    data = generate_alpha(0, N)
    both = np.concatenate([data["m1"], data["m2"]], axis=1).astype(np.float64)
    # same x behind both modalities: the joint matrix still has rank 50 (independent x's would give 100)
    assert rank(both) == D
    # hence m2 is an exact linear function of m1
    coef = lstsq(data["m1"], data["m2"])
    assert np.abs(data["m1"] @ coef - data["m2"]).max() < 1e-3


def test_alpha_latent_constraints_and_labels():
    seed = 3
    data = generate_alpha(seed, N)
    x1, x2, z = recover(seed, data)
    np.testing.assert_allclose(x1, x2, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(x1, axis=1), 1.0, atol=1e-4)
    s = x1 @ z
    assert (np.abs(s) > 0.1 - TOL).all()  # |x.z| <= 0.1 is rejected
    np.testing.assert_array_equal(data["y"], (s > 0).astype(np.int64))  # y = [x.z > 0.1]
    frac = data["y"].mean()
    assert 0.35 < frac < 0.65  # symmetric around the hyperplane: balanced-ish


# ------------------------------------------------------------------------------------------ beta
def test_beta_modalities_are_independent_projections():
    data = generate_beta(0, N)
    both = np.concatenate([data["m1"], data["m2"]], axis=1).astype(np.float64)
    assert rank(both) == 2 * D


def test_beta_latent_constraints_and_labels():
    seed = 4
    data = generate_beta(seed, N)
    x1, x2, _ = recover(seed, data)
    np.testing.assert_allclose(np.linalg.norm(x1, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(x2, axis=1), 1.0, atol=1e-4)
    dot = rowdot(x1, x2)
    assert (np.abs(dot) > 0.25 - TOL).all()
    np.testing.assert_array_equal(data["y"], (dot > 0).astype(np.int64))  # y = [x1.x2 > 0.25]
    counts = np.bincount(data["y"], minlength=2)
    assert counts.min() > 0.35 * N


# ------------------------------------------------------------------------------------------ gamma
@pytest.mark.parametrize("n", [300, 301, 302])
def test_gamma_class_counts(n):
    data = generate_gamma(0, n)
    y = data["y"]
    assert set(np.unique(y)) == {0, 1, 2}
    assert (y == 0).sum() == n // 3
    assert (y[: n // 3] == 0).all() and (y[n // 3 :] != 0).all()


def test_gamma_latent_constraints_and_labels():
    seed = 5
    n = 450
    data = generate_gamma(seed, n)
    x1, x2, z = recover(seed, data)
    n0 = n // 3
    np.testing.assert_allclose(np.linalg.norm(x1, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(x2, axis=1), 1.0, atol=1e-4)
    # label 0: one shared vector with x.z >= 0.1
    np.testing.assert_allclose(x1[:n0], x2[:n0], atol=1e-4)
    assert (x1[:n0] @ z >= 0.1 - TOL).all()
    # labels 1/2: both vectors on the far side of z, pair condition, label from the sign of x1.x2
    a, b = x1[n0:], x2[n0:]
    assert (a @ z <= -0.1 + TOL).all() and (b @ z <= -0.1 + TOL).all()
    dot = rowdot(a, b)
    assert (np.abs(dot) > 0.25 - TOL).all()
    np.testing.assert_array_equal(data["y"][n0:], np.where(dot > 0, 2, 1))
    # the pairs are distinct vectors (not the shared x of label 0)
    assert np.abs(a - b).max(axis=1).min() > 1e-2


def test_gamma_as_written_has_about_three_label_2_per_label_1_and_balanced_has_equal_counts():
    """The two readings of App. A.10's γ: as written (both vectors lean along -z, so x1.x2 > 0.25 is the
    common case) and with labels 1 and 2 in equal numbers; the balanced pairs obey the same constraints."""
    literal = np.bincount(generate_gamma(0, 1500)["y"])
    assert literal[0] == 500 and literal[2] > 2 * literal[1]
    seed, n = 3, 451
    data = generate_gamma(seed, n, balanced=True)
    assert np.bincount(data["y"]).tolist() == [150, 150, 151]
    x1, x2, z = recover(seed, data)
    a, b = x1[n // 3 :], x2[n // 3 :]
    assert (a @ z <= -0.1 + TOL).all() and (b @ z <= -0.1 + TOL).all()
    np.testing.assert_array_equal(data["y"][n // 3 :], np.where(rowdot(a, b) > 0, 2, 1))
    assert generate_gamma(seed, n)["y"].tolist() != data["y"].tolist()


def test_balanced_is_a_setting_of_gamma_only(tmp_path):
    from mmtool.config import load_recipe
    from mmtool.data import cache_dir
    from mmtool.data_config import DataConfig
    from mmtool.errors import UserError

    cfg = DataConfig.of(name="synth-gamma", root=str(tmp_path), balanced=True)
    assert cache_dir(cfg).name.endswith("-balanced")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stage: prep\ndata: {name: synth-alpha, balanced: true}\n")
    with pytest.raises(UserError, match="unknown key 'data.balanced' for dataset 'synth-alpha'"):
        load_recipe(recipe)


# ------------------------------------------------------------------------------------------ samplers
def test_unit_vectors_have_unit_norm_and_cover_directions():
    v = unit_vectors(np.random.default_rng(0), 2000, D)
    assert v.shape == (2000, D)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.abs(v.mean(axis=0)).max() < 0.05  # uniform on the sphere: mean near 0


@pytest.mark.parametrize("rate", [0.01, 0.45, 1.0])  # the rate guess only affects batch sizes
def test_rejection_sample_returns_exactly_n_accepted_vectors(rate):
    rng = np.random.default_rng(0)
    z = unit_vectors(rng, 1, D)[0]
    out = rejection_sample(rng, 137, D, lambda v: v @ z > 0.2, rate)
    assert out.shape == (137, D)
    assert (out @ z > 0.2).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert len(np.unique(out, axis=0)) == 137


def test_rejection_sample_is_deterministic_for_a_seeded_stream():
    def draw():
        return rejection_sample(np.random.default_rng(7), 50, D, lambda v: v[:, 0] > 0, 0.5)

    np.testing.assert_array_equal(draw(), draw())


def test_sample_pairs_satisfy_single_and_pair_conditions():
    rng = np.random.default_rng(1)
    z = unit_vectors(rng, 1, D)[0]
    x1, x2 = sample_pairs(rng, 120, D, lambda v: v @ z <= -0.1, pair_rate=0.5, single_rate=0.22)
    assert x1.shape == x2.shape == (120, D)
    assert (x1 @ z <= -0.1).all() and (x2 @ z <= -0.1).all()
    assert (np.abs(rowdot(x1, x2)) > 0.25).all()


def test_sample_pairs_without_single_condition():
    rng = np.random.default_rng(2)
    x1, x2 = sample_pairs(rng, 90, D, lambda v: np.ones(len(v), bool), pair_rate=0.07)
    assert x1.shape == (90, D)
    assert (np.abs(rowdot(x1, x2)) > 0.25).all()
    # both signs of the pair feature occur
    assert (rowdot(x1, x2) > 0).any() and (rowdot(x1, x2) < 0).any()
