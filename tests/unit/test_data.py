"""Prepared dataset caches: manifest, splits, integrity checks, batching."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np
import pytest
import torch

from mmtool.data import DATASETS, Split, cache_dir, load_dataset, prepare, split_indices
from mmtool.data_config import DataConfig
from mmtool.errors import UserError


def cfg(tmp_path, name="synth-gamma", n=300, **kw) -> DataConfig:
    return DataConfig.of(name=name, root=str(tmp_path / "data"), n=n, **kw)


def rows(*arrays: torch.Tensor) -> list[bytes]:
    return sorted(r.tobytes() for a in arrays for r in a.numpy())


def test_registered_synthetic_datasets():
    assert {"synth-alpha", "synth-beta", "synth-gamma"} <= set(DATASETS.names())


def test_prepare_writes_manifest_and_data(tmp_path):
    c = cfg(tmp_path)
    folder, manifest = prepare(c)
    assert folder == cache_dir(c) == tmp_path / "data" / "synth-gamma" / "seed0-n300"
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk == {k: v for k, v in manifest.items() if k != "run"}  # how prep ran is reported, not stored
    assert manifest["dataset"] == "synth-gamma" and manifest["n"] == 300 and manifest["seed"] == 0
    assert manifest["modalities"] == {"m1": 200, "m2": 100}
    assert manifest["num_classes"] == 3
    assert sum(manifest["class_counts"]) == 300 and manifest["class_counts"][0] == 100
    assert manifest["files"]["data.npz"] == hashlib.sha256((folder / "data.npz").read_bytes()).hexdigest()
    assert sum(manifest["split_sizes"].values()) == 300
    with np.load(folder / "data.npz") as npz:
        assert npz["m1"].shape == (300, 200) and npz["m2"].shape == (300, 100)
        assert np.bincount(npz["y"]).tolist() == manifest["class_counts"]


def test_prepare_is_cached_unless_forced_and_deterministic(tmp_path):
    c = cfg(tmp_path, name="synth-alpha")
    folder, first = prepare(c)
    sha = first["files"]["data.npz"]
    (folder / "data.npz").unlink()
    _, again = prepare(c)  # complete cache (manifest present): nothing regenerated
    assert again["run"] == {"cached": True} and not (folder / "data.npz").exists()
    assert {k: v for k, v in again.items() if k != "run"} == {k: v for k, v in first.items() if k != "run"}
    _, forced = prepare(c, force=True)
    assert forced["files"]["data.npz"] == sha  # same seed, same bytes
    assert (folder / "data.npz").exists()
    _, other = prepare(cfg(tmp_path, name="synth-alpha", seed=1))
    assert other["files"]["data.npz"] != sha


def test_split_indices_are_disjoint_cover_everything_and_val_is_carved_from_train():
    n = 317
    idx = split_indices(n, seed=3, test_fraction=0.2, val_fraction=0.1)
    all_idx = np.concatenate([idx["train"], idx["val"], idx["test"]])
    assert sorted(all_idx.tolist()) == list(range(n))  # disjoint and covering
    assert len(idx["test"]) == round(n * 0.2)
    assert len(idx["val"]) == round((n - len(idx["test"])) * 0.1)
    no_val = split_indices(n, seed=3, test_fraction=0.2, val_fraction=0.0)
    # the test set does not depend on val_fraction; val comes out of the training part
    np.testing.assert_array_equal(no_val["test"], idx["test"])
    assert len(no_val["val"]) == 0
    assert set(no_val["train"].tolist()) == set(idx["train"].tolist()) | set(idx["val"].tolist())
    # the split depends on the seed
    assert not np.array_equal(split_indices(n, 4, 0.2, 0.1)["test"], idx["test"])


@pytest.mark.parametrize("test_fraction, val_fraction", [(0.0, 0.1), (1.0, 0.1), (0.2, 1.0), (0.2, -0.1)])
def test_split_indices_rejects_bad_fractions(test_fraction, val_fraction):
    with pytest.raises(UserError, match="fraction"):
        split_indices(100, 0, test_fraction, val_fraction)


def test_load_dataset_splits_partition_the_cached_data(tmp_path):
    c = cfg(tmp_path, n=400)
    folder, manifest = prepare(c)
    ds = load_dataset(c)
    assert ds.name == "synth-gamma" and ds.modalities == ("m1", "m2")
    assert ds.num_classes == 3 and ds.input_dims == {"m1": 200, "m2": 100}
    sizes = {k: len(s) for k, s in ds.splits.items()}
    assert sizes == manifest["split_sizes"] == {"train": 288, "val": 32, "test": 80}
    with np.load(folder / "data.npz") as npz:
        arrays = {k: torch.from_numpy(npz[k]) for k in npz.files}
    # every sample is in exactly one split, with its own label and both modalities kept together
    splits = ds.splits.values()
    assert rows(*(s.inputs["m1"] for s in splits)) == rows(arrays["m1"])
    joined = {
        a.tobytes(): (b.tobytes(), int(y))
        for s in splits
        for a, b, y in zip(s.inputs["m1"].numpy(), s.inputs["m2"].numpy(), s.target.numpy(), strict=True)
    }
    assert len(joined) == 400
    for a, b, y in zip(arrays["m1"].numpy(), arrays["m2"].numpy(), arrays["y"].numpy(), strict=True):
        assert joined[a.tobytes()] == (b.tobytes(), int(y))
    # splits follow split_indices for the same settings
    idx = split_indices(400, c.seed, c.test_fraction, c.val_fraction)
    for name, split in ds.splits.items():
        torch.testing.assert_close(split.inputs["m2"], arrays["m2"][torch.from_numpy(idx[name])])
        assert split.inputs["m1"].dtype == torch.float32 and split.target.dtype == torch.int64


def test_val_fraction_changes_only_the_train_val_boundary_at_load(tmp_path):
    c = cfg(tmp_path, n=300)
    prepare(c)
    a = load_dataset(c)
    b = load_dataset(dataclasses.replace(c, val_fraction=0.0))
    assert rows(b.splits["test"].inputs["m1"]) == rows(a.splits["test"].inputs["m1"])
    assert len(b.splits["val"]) == 0
    assert rows(b.splits["train"].inputs["m1"]) == rows(a.splits["train"].inputs["m1"], a.splits["val"].inputs["m1"])


def test_an_embedded_dataset_is_prepared_on_first_use(tmp_path, capsys):
    c = cfg(tmp_path, n=300)
    data = load_dataset(c)
    assert sum(len(s) for s in data.splits.values()) == 300
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "on first use" in said[0] and "mmtool prep synth-gamma data.n=300" in said[0]
    assert (cache_dir(c) / "manifest.json").is_file()
    load_dataset(c)  # prepared now: nothing said
    assert capsys.readouterr().err == ""


def test_a_real_dataset_is_not_prepared_behind_the_users_back(tmp_path):
    with pytest.raises(UserError, match=r"not prepared .*mmtool prep vggsound --raw DIR data\.clip_frames=4"):
        load_dataset(DataConfig.of(name="vggsound", root=str(tmp_path), clip_frames=4))


def test_a_same_size_rewrite_with_its_time_put_back_is_caught(tmp_path):
    """The hash of a cache is checked once and then trusted while the file is unchanged; a rewrite that
    keeps the size and puts the modification time back (``cp -p``) changes its ctime, so it is hashed again."""
    c = cfg(tmp_path, name="synth-beta")
    folder, _ = prepare(c)
    load_dataset(c)
    path = folder / "data.npz"
    st = path.stat()
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(UserError, match="does not match its manifest"):
        load_dataset(c)


def test_corrupted_cache_raises(tmp_path):
    c = cfg(tmp_path, name="synth-beta")
    folder, _ = prepare(c)
    load_dataset(c)  # hashed once; later loads compare size and mtime only, until the file changes
    path = folder / "data.npz"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(UserError, match="does not match its manifest"):
        load_dataset(c)
    with pytest.raises(UserError, match="does not match its manifest"):  # and again: a bad file is never stamped
        load_dataset(c)
    path.unlink()
    with pytest.raises(UserError, match="missing"):
        load_dataset(c)


def test_too_small_or_unknown_dataset_raises(tmp_path):
    with pytest.raises(UserError, match="at least 30"):
        prepare(cfg(tmp_path, n=10))
    with pytest.raises(UserError, match="unknown dataset"):
        prepare(cfg(tmp_path, name="synth-delta"))


def test_array_source_loader():
    x = torch.arange(10.0).view(10, 1)
    split = Split({"m1": x, "m2": -x}, torch.arange(10))
    whole = list(split.loader(0, train=False))
    assert len(whole) == 1 and torch.equal(whole[0].target, split.targets())
    assert torch.equal(whole[0].ids, torch.arange(10))
    parts = list(split.loader(4, train=False))
    assert [len(b) for b in parts] == [4, 4, 2]
    assert torch.equal(torch.cat([b.target for b in parts]), torch.arange(10))  # in order for evaluation
    shuffled = list(split.loader(3, train=True, seed=0, epoch=1))
    order = torch.cat([b.target for b in shuffled])
    assert sorted(order.tolist()) == list(range(10)) and order.tolist() != list(range(10))
    for b in shuffled:  # modalities, targets and ids stay aligned
        assert torch.equal(b.inputs["m1"].view(-1), b.target.float())
        assert torch.equal(b.inputs["m2"], -b.inputs["m1"])
        assert torch.equal(b.ids, b.target)
    full_shuffled = list(split.loader(0, train=True, seed=0, epoch=1))
    assert len(full_shuffled) == 1 and sorted(full_shuffled[0].target.tolist()) == list(range(10))
    assert split.select(["m2"]).inputs.keys() == {"m2"}


def test_array_source_epochs_are_a_function_of_seed_and_epoch():
    """Epoch k is the k-th permutation of a generator seeded with the seed (mmtool's order since its first
    release), whether the epochs before it were drawn in this process or not (a resumed run)."""
    x = torch.arange(50.0).view(50, 1)
    gen = torch.Generator().manual_seed(7)
    expected = [torch.randperm(50, generator=gen) for _ in range(4)]
    running = Split({"m1": x}, torch.arange(50))
    seen = [torch.cat([b.ids for b in running.loader(16, train=True, seed=7, epoch=e)]) for e in (1, 2, 3, 4)]
    assert all(torch.equal(a, b) for a, b in zip(seen, expected, strict=True))
    resumed = Split({"m1": x}, torch.arange(50))
    assert torch.equal(torch.cat([b.ids for b in resumed.loader(16, train=True, seed=7, epoch=3)]), expected[2])
    assert torch.equal(torch.cat([b.ids for b in resumed.loader(16, train=True, seed=7, epoch=2)]), expected[1])


def test_shards_cover_the_epoch_once_when_evaluating_and_evenly_when_training():
    from mmtool.data import Shard

    split = Split({"m1": torch.arange(10.0).view(10, 1)}, torch.arange(10))
    evals = [torch.cat([b.ids for b in split.loader(3, train=False, shard=Shard(r, 3))]) for r in range(3)]
    assert sorted(torch.cat(evals).tolist()) == list(range(10))
    trains = [torch.cat([b.ids for b in split.loader(3, train=True, seed=1, shard=Shard(r, 3))]) for r in range(3)]
    assert [len(t) for t in trains] == [4, 4, 4]  # padded by wrapping, as DistributedSampler does
    assert set(torch.cat(trains).tolist()) == set(range(10))


def test_cache_written_by_an_older_generator_format_is_refused(tmp_path, monkeypatch):
    """registry_synthetic.FORMAT is to be bumped "when the generator's output changes" and is written to
    the manifest; a cache of an older format must not be loaded as if it were current data."""
    from mmtool.data import registry_synthetic

    c = cfg(tmp_path)
    _, manifest = prepare(c)
    assert manifest["format"] == registry_synthetic.FORMAT
    monkeypatch.setattr(registry_synthetic, "FORMAT", registry_synthetic.FORMAT + 1)
    with pytest.raises(UserError):
        load_dataset(c)
