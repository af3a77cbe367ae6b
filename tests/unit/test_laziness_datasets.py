"""Laziness data sets: synth-lazy, digits-colored, digits-twoview.

Besides shapes, determinism and the prepare/load round trip, each set's defining property is computed
from the arrays: synth-lazy's label and easy feature from latents recovered by inverting the seeded
projections; digits-colored's color-label agreement per split; digits-twoview's halves against the
bundled images.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from mmtool.data import DATASETS, load_dataset, prepare, split_indices
from mmtool.data import registry_laziness as reg
from mmtool.data.digits import PALETTE, build_colored, build_twoview, bundled_digits
from mmtool.data.lazy import (
    EASY_AMPLITUDE,
    EASY_NOISE,
    EVAL_DROP,
    HARD_THRESHOLD,
    generate_lazy,
    lazy_directions,
)
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

NAMES = ("synth-lazy", "digits-colored", "digits-twoview")
DIMS = {"synth-lazy": (200, 100), "digits-colored": ([3, 8, 8], [1, 8, 8]), "digits-twoview": ([1, 8, 4], [1, 8, 4])}


def per_sample(d):
    return tuple(d) if isinstance(d, list) else (d,)


TOL = 1e-3  # latents are recovered from float32 data


def cfg(tmp_path, name: str, n: int | None = 300, **kw) -> DataConfig:
    return DataConfig.of(name=name, root=str(tmp_path / "data"), n=n, **kw)


def build(name: str, seed: int, n: int) -> dict[str, np.ndarray]:
    return reg.FAMILIES[name].build(seed, n)


def lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ta, tb = (torch.from_numpy(np.asarray(v, dtype=np.float64)) for v in (a, b))
    return torch.linalg.lstsq(ta, tb, driver="gelsd").solution.numpy()


def fit_score(x_train, y_train, x_test=None, y_test=None) -> tuple[float, float | None]:
    """Logistic regression on flattened inputs: (train accuracy, test accuracy or None)."""
    x_train = np.asarray(x_train).reshape(len(x_train), -1)
    clf = LogisticRegression(C=100.0, max_iter=2000).fit(x_train, y_train)
    test = clf.score(np.asarray(x_test).reshape(len(x_test), -1), y_test) if x_test is not None else None
    return clf.score(x_train, y_train), test


def gray_images(idx: np.ndarray) -> np.ndarray:
    images, _ = bundled_digits()
    return images[idx]  # (n, 8, 8)


# ------------------------------------------------------------------------------------------ generic
def test_registered():
    assert set(NAMES) <= set(DATASETS.names())


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_dtypes(name):
    data = build(name, 0, 200)
    d1, d2 = DIMS[name]
    assert data["m1"].shape == (200, *per_sample(d1)) and data["m2"].shape == (200, *per_sample(d2))
    assert data["y"].shape == (200,)
    for key, x in data.items():
        if key.startswith("m"):
            assert x.dtype == np.float32 and np.isfinite(x).all(), key
    assert data["y"].dtype == np.int64
    if "m1_eval" in data:
        assert data["m1_eval"].shape == data["m1"].shape


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_by_seed_and_seeds_differ(name):
    a, b, c = build(name, 5, 200), build(name, 5, 200), build(name, 6, 200)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["m1"], c["m1"])


@pytest.mark.parametrize("name", NAMES)
def test_prepare_load_round_trip(tmp_path, name):
    c = cfg(tmp_path, name)
    folder, manifest = prepare(c)
    assert json.loads((folder / "manifest.json").read_text()) == {k: v for k, v in manifest.items() if k != "run"}
    assert manifest["dataset"] == name and manifest["n"] == 300 and manifest["format"] == reg.FORMAT
    assert manifest["files"]["data.npz"] == hashlib.sha256((folder / "data.npz").read_bytes()).hexdigest()
    assert tuple(manifest["modalities"].values()) == DIMS[name]
    assert sum(manifest["class_counts"]) == 300 == sum(manifest["split_sizes"].values())
    assert "construction" in manifest
    ds = load_dataset(c)
    assert ds.modalities == ("m1", "m2") and ds.input_dims == manifest["modalities"]
    assert ds.num_classes == manifest["num_classes"] == len(manifest["class_counts"])
    assert {k: len(s) for k, s in ds.splits.items()} == manifest["split_sizes"]
    idx = split_indices(300, c.seed, c.test_fraction, c.val_fraction)
    # disjoint and covering
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(300))
    with np.load(folder / "data.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    for split_name, split in ds.splits.items():
        ix = idx[split_name]
        np.testing.assert_array_equal(split.target.numpy(), arrays["y"][ix])
        np.testing.assert_array_equal(split.inputs["m2"].numpy(), arrays["m2"][ix])
        m1_key = "m1" if split_name == "train" or "m1_eval" not in arrays else "m1_eval"
        np.testing.assert_array_equal(split.inputs["m1"].numpy(), arrays[m1_key][ix])
        assert split.inputs["m1"].dtype == torch.float32 and split.target.dtype == torch.int64


def test_cache_is_read_through_the_verified_reader(tmp_path, monkeypatch):
    """Loading checks the data format (and so the checksum: both live in the shared reader, tested with
    a corrupted cache in test_data)."""
    c = cfg(tmp_path, "digits-twoview")
    prepare(c)
    monkeypatch.setattr(reg, "FORMAT", reg.FORMAT + 1)
    with pytest.raises(UserError, match="data format"):
        load_dataset(c)


def test_prep_rebuilds_a_cache_of_an_older_format(tmp_path, monkeypatch):
    """`prep` without --force must not report an old-format cache as ready: it rebuilds it."""
    import dataclasses

    from mmtool.data import DATASETS

    c = cfg(tmp_path, "digits-twoview")
    folder, old = prepare(c)
    assert prepare(c)[1] == {**old, "run": {"cached": True}}  # current format: reused as is
    newer = reg.FORMAT + 1
    monkeypatch.setattr(reg, "FORMAT", newer)
    monkeypatch.setitem(
        DATASETS._items, "digits-twoview", dataclasses.replace(DATASETS.get("digits-twoview"), data_format=newer)
    )
    _, manifest = prepare(c)
    assert manifest["format"] == newer == json.loads((folder / "manifest.json").read_text())["format"]
    assert len(load_dataset(c).splits["train"]) == old["split_sizes"]["train"]


@pytest.mark.parametrize("name, n", [("synth-lazy", 10), ("digits-colored", 10), ("digits-twoview", 1798)])
def test_bad_sizes_are_refused(tmp_path, name, n):
    with pytest.raises(UserError, match="data.n"):
        prepare(cfg(tmp_path, name, n=n))


def test_digits_full_size_and_subsample(tmp_path):
    _, full = prepare(cfg(tmp_path, "digits-twoview", n=None))
    assert full["n"] == 1797 and full["num_classes"] == 10
    assert full["class_counts"] == np.bincount(bundled_digits()[1]).tolist()
    _, a = prepare(cfg(tmp_path, "digits-twoview", n=500))
    _, b = prepare(cfg(tmp_path, "digits-twoview", n=500, seed=1))
    assert a["n"] == 500 and a["files"] != b["files"]  # the subsample depends on the seed


# ------------------------------------------------------------------------------------------ synth-lazy
def test_lazy_latent_constraints_and_labels():
    seed, n = 3, 600
    data = generate_lazy(seed, n)
    p1, p2, z1, z2 = lazy_directions(np.random.default_rng(seed))
    u1, x2 = lstsq(p1, data["m1"].T).T, lstsq(p2, data["m2"].T).T  # (n, 50) each, exact fits
    assert np.abs(x2 @ p2.T - data["m2"]).max() < 1e-4
    y, sign = data["y"], 2 * data["y"] - 1
    assert np.bincount(y).tolist() == [300, 300]
    # hard feature: the label is the magnitude of a projection of m2's latent
    np.testing.assert_allclose(np.linalg.norm(x2, axis=1), 1.0, atol=1e-4)
    s = np.abs(x2 @ z2)
    clear = np.abs(s - HARD_THRESHOLD) > TOL
    np.testing.assert_array_equal(y[clear], (s[clear] > HARD_THRESHOLD).astype(np.int64))
    # easy feature: m1's latent carries the label's sign along z1 with margin EASY_AMPLITUDE - EASY_NOISE
    easy = u1 @ z1
    assert (sign * easy > EASY_AMPLITUDE - EASY_NOISE - TOL).all()
    # eval version: the easy feature is gone on about EVAL_DROP of the samples, untouched elsewhere
    easy_eval = lstsq(p1, data["m1_eval"].T).T @ z1
    dropped = np.any(data["m1"] != data["m1_eval"], axis=1)
    assert abs(dropped.mean() - EVAL_DROP) < 0.06
    assert (np.abs(easy_eval[dropped]) < EASY_NOISE + TOL).all()
    np.testing.assert_allclose(easy_eval[~dropped], easy[~dropped], atol=1e-4)


def test_lazy_m1_is_linearly_separable_on_train_m2_is_not(tmp_path):
    c = cfg(tmp_path, "synth-lazy", n=1000)
    prepare(c)
    ds = load_dataset(c)
    tr, te = ds.splits["train"], ds.splits["test"]
    train_acc, test_acc = fit_score(tr.inputs["m1"].numpy(), tr.target.numpy(), te.inputs["m1"], te.target)
    assert train_acc == 1.0  # zero training error from m1 alone, with a linear classifier
    assert 0.7 < test_acc < 0.92  # about 1 - EVAL_DROP / 2: the easy feature is missing on part of test
    train_acc_m2, _ = fit_score(tr.inputs["m2"].numpy(), tr.target.numpy())
    assert train_acc_m2 < 0.7  # the hard feature is not linear in m2


# ------------------------------------------------------------------------------------------ digits-colored
def recovered_color_index(m1: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """Palette index of each sample's color, solved from colored = color x gray."""
    colored = m1.reshape(len(m1), 3, -1).astype(np.float64)  # (n, 3, 64)
    gray = gray.reshape(len(gray), -1)  # (n, 64)
    rgb = np.einsum("ncp,np->nc", colored, gray) / np.einsum("np,np->n", gray, gray)[:, None]  # (n, 3)
    np.testing.assert_allclose(colored, rgb[:, :, None] * gray[:, None, :], atol=1e-5)  # one color per digit
    return np.argmin(((rgb[:, None, :] - PALETTE[None]) ** 2).sum(-1), axis=1)


def test_colored_digits_agree_with_label_in_train_only(tmp_path):
    c = cfg(tmp_path, "digits-colored", n=None)
    _, manifest = prepare(c)
    ds = load_dataset(c)
    agreement = {}
    for name, split in ds.splits.items():
        gray = split.inputs["m2"].numpy().astype(np.float64)
        index = recovered_color_index(split.inputs["m1"].numpy(), gray)
        agreement[name] = float((index == split.target.numpy()).mean())
    assert agreement["train"] > 0.9
    assert agreement["val"] < 0.35 and agreement["test"] < 0.35
    assert agreement == pytest.approx(manifest["color_label_agreement"], abs=1e-3)
    # m2 is the bundled gray digit, in the order of the (full) data set
    idx = split_indices(1797, c.seed, c.test_fraction, c.val_fraction)
    np.testing.assert_array_equal(ds.splits["test"].inputs["m2"].numpy(), gray_images(idx["test"])[:, None])


def test_colored_color_indices_match_the_images():
    data = build_colored(0, 400)
    gray = data["m2"].astype(np.float64)
    np.testing.assert_array_equal(recovered_color_index(data["m1"], gray), data["color"])
    np.testing.assert_array_equal(recovered_color_index(data["m1_eval"], gray), data["color_eval"])


# ------------------------------------------------------------------------------------------ digits-twoview
def test_twoview_halves_concatenate_to_the_image():
    images, labels = bundled_digits()
    data = build_twoview(0, None)
    assert data["m1"].shape[1:] == data["m2"].shape[1:] == (1, 8, 4)
    whole = np.concatenate([data["m1"][:, 0], data["m2"][:, 0]], axis=2)
    np.testing.assert_array_equal(whole, images)
    np.testing.assert_array_equal(data["y"], labels)


def test_twoview_each_half_is_strong_alone(tmp_path):
    c = cfg(tmp_path, "digits-twoview", n=None)
    prepare(c)
    ds = load_dataset(c)
    tr, te = ds.splits["train"], ds.splits["test"]
    for m in ("m1", "m2"):
        _, test_acc = fit_score(tr.inputs[m].numpy(), tr.target.numpy(), te.inputs[m].numpy(), te.target.numpy())
        assert test_acc > 0.75, m
