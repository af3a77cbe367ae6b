"""ModelNet40 prep and loader: the MVCNN render layout, front/rear pairing, Wu et al.'s split, broken renders,
kill/resume, and prep + train through the command line."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmtool.data import PrepOptions, cache_dir, load_dataset, prepare
from mmtool.data.modelnet40 import carve_splits
from mmtool.data.modelnet40_prep import MODALITIES
from mmtool.data.pipeline_io import file_sha256, read_jsonl
from mmtool.data_config import DataConfig
from mmtool.errors import UserError
from tests.e2e.cli import run_cli
from tests.fixtures.files import tree
from tests.fixtures.modelnet40 import break_render, view_code, write_modelnet40

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "recipes" / "_base" / "smoke" / "modelnet40.yaml")
SIZE = 32  # data.image_size of the tests; the fixture renders are 40 x 40, so the resize path is exercised
MEAN, STD = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def data_cfg(root: Path, raw: Path, **overrides) -> DataConfig:
    fields = {"image_size": SIZE, "val_fraction": 0.25, "seed": 10, **overrides}  # 0.25 of 12 train objects = 3
    return DataConfig.of(name="modelnet40", root=str(root), raw=str(raw), **fields)


def pixels(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, S, S) normalised inputs back to 0-255 levels."""
    return (x * STD + MEAN) * 255


def codes(x: torch.Tensor) -> tuple[list[int], list[int]]:
    """(object codes from red, view codes from green) of a (B, 3, S, S) batch of fixture renders."""
    levels = pixels(x)
    return levels[:, 0].mean((1, 2)).round().int().tolist(), levels[:, 1].mean((1, 2)).round().int().tolist()


def reasons(folder: Path) -> dict[str, str]:
    return {row["key"]: row["reason"] for row in read_jsonl(folder / "skipped.jsonl")}



@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict:
    """3 classes x (4 train + 2 test) objects x 12 renders, plus a stray cache file and a stray top-level file."""
    info = write_modelnet40(tmp_path_factory.mktemp("mn") / "raw")
    (info["renders"] / "airplane" / "train" / "airplane_0001.obj.npy").write_bytes(b"x")  # Wu et al.'s npy cache
    (info["renders"] / "README.txt").write_text("renders\n")
    (info["renders"] / "bed" / "test" / "._bed_0005.obj.shaded_v001.png").write_bytes(b"\0\5")  # a macOS fork
    return info


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory) -> DataConfig:
    cfg = data_cfg(tmp_path_factory.mktemp("data"), raw["root"])  # --raw: the folder above the archive's
    prepare(cfg)
    return cfg


# --------------------------------------------------------------------------------------------- prep output
def test_prep_indexes_front_and_rear_in_wu_order_and_counts_everything_else(prepared, raw):
    folder = cache_dir(prepared)
    assert folder.name == "v001-v007"
    manifest = json.loads((folder / "manifest.json").read_text())
    rows = read_jsonl(folder / "index.jsonl")
    assert manifest["n"] == len(rows) == 18 and manifest["class_names"] == ["airplane", "bed", "chair"]
    assert manifest["class_counts"] == [6, 6, 6] and manifest["split_sizes"] == {"train": 12, "test": 6}
    assert manifest["split_counts"] == {"train": [4, 4, 4], "test": [2, 2, 2]} and not manifest["official_classes"]
    assert manifest["modalities"] == {m: [3, "image_size", "image_size"] for m in MODALITIES}
    assert manifest["views"] == {
        "front": {"index": 0, "file": "shaded_v001"},
        "rear": {"index": 6, "file": "shaded_v007"},
    }
    assert manifest["image_formats"] == {"40x40 RGB": 36} and manifest["renders_per_object"] == {"12": 18}
    assert manifest["layout"]["raw"] == str(raw["renders"].resolve())  # found inside the --raw folder
    assert manifest["unrecognised"] == {"count": 1, "examples": ["airplane/train/airplane_0001.obj.npy"]}
    assert manifest["hidden_files"] == 1 and manifest["ignored_entries"] == ["README.txt"]
    assert manifest["skipped"] == [] and manifest["missing"] == 0
    assert manifest["files"]["index.jsonl"] == file_sha256(folder / "index.jsonl")
    # train objects first, then test, each in (class, name) order: the order Wu et al. shuffle for validation
    want = sorted(raw["objects"], key=lambda o: (raw["objects"][o]["split"] != "train", raw["objects"][o]["label"], o))
    assert [r["key"] for r in rows] == want
    row = rows[-1]
    assert row == {"key": "chair_0006", "class": "chair", "label": 2, "split": "test",
                   "front": "chair/test/chair_0006.obj.shaded_v001.png", "front_image": "40x40 RGB",
                   "rear": "chair/test/chair_0006.obj.shaded_v007.png", "rear_image": "40x40 RGB"}  # fmt: skip


# --------------------------------------------------------------------------------------------- reading
def test_front_and_rear_are_views_0_and_6_of_the_same_object_with_its_label(prepared, raw):
    data = load_dataset(prepared)
    assert data.modalities == MODALITIES and data.input_dims == {m: [3, SIZE, SIZE] for m in MODALITIES}
    assert data.num_classes == 3 and data.class_names == ["airplane", "bed", "chair"]
    by_code = {o["code"]: o for o in raw["objects"].values()}
    seen = {}
    for split, source in data.splits.items():
        batch = next(iter(source.loader(0, train=False)))
        for m in MODALITIES:
            assert batch.inputs[m].shape == (len(source), 3, SIZE, SIZE) and batch.inputs[m].dtype == torch.float32
        front, front_views = codes(batch.inputs["front"])
        rear, rear_views = codes(batch.inputs["rear"])
        assert front == rear  # both inputs of a sample come from one object
        assert set(front_views) == {view_code(0)} and set(rear_views) == {view_code(6)}
        assert batch.target.tolist() == [by_code[c]["label"] for c in front]
        assert {by_code[c]["split"] for c in front} == {"test" if split == "test" else "train"}
        seen[split] = front
    assert sorted(seen["train"] + seen["val"] + seen["test"]) == sorted(by_code)  # every object once


def test_other_views_make_another_cache_and_a_bad_pair_is_refused(raw, tmp_path):
    cfg = data_cfg(tmp_path, raw["renders"], front_view=3, rear_view=9)
    folder, manifest = prepare(cfg)
    assert folder.name == "v004-v010" and manifest["n"] == 18
    batch = next(iter(load_dataset(cfg).splits["test"].loader(0, train=False)))
    assert set(codes(batch.inputs["front"])[1]) == {view_code(3)}
    assert set(codes(batch.inputs["rear"])[1]) == {view_code(9)}
    with pytest.raises(
        UserError, match=r"data.front_view and data.rear_view must be two different renders, both are 2"
    ):
        prepare(data_cfg(tmp_path, raw["root"], front_view=2, rear_view=2))


def test_training_flips_each_view_on_its_own_and_evaluation_is_a_plain_resize(prepared):
    reader = load_dataset(prepared).splits["train"].reader
    flips = set()
    for seed in range(24):
        x = reader.read(0, MODALITIES, True, np.random.default_rng(seed))
        pair = []
        for m in MODALITIES:
            blue = pixels(x[m])[2]
            left, right = blue[:, :4].mean().item(), blue[:, -4:].mean().item()
            assert {round(left), round(right)} == {0, 255}  # the marked quarter, on one side or the other
            pair.append(right > left)
        flips.add(tuple(pair))
    assert flips == {(False, False), (False, True), (True, False), (True, True)}  # independent per view
    x = reader.read(0, MODALITIES, False, np.random.default_rng(0))
    image = np.asarray(Image.open(reader.pairs[0][1]).convert("RGB"))
    resized = torch.nn.functional.interpolate(torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255,
                                              (SIZE, SIZE), mode="bilinear", antialias=True)[0]  # fmt: skip
    torch.testing.assert_close(x["rear"], (resized - MEAN) / STD)
    still = load_dataset(data_cfg(Path(prepared.root), Path(prepared.raw), augment=False)).splits["train"].reader
    plain = still.read(0, MODALITIES, True, np.random.default_rng(1))
    assert all(torch.equal(plain[m], x[m]) for m in MODALITIES)  # augment=false: training reads as evaluation


# --------------------------------------------------------------------------------------------- splits
def test_val_is_carved_from_train_by_wu_rule_and_never_touches_test(prepared):
    rows = read_jsonl(cache_dir(prepared) / "index.jsonl")
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    order = list(range(len(train)))
    random.Random(10).shuffle(order)  # src/dataset.py: random.Random(random_seed_for_validation).shuffle(indices)
    parts = carve_splits(rows, 0.25, seed=10)
    assert parts["val"] == sorted(train[j] for j in order[:3])
    assert parts == carve_splits(rows, 0.25, seed=10) and parts["val"] != carve_splits(rows, 0.25, seed=11)["val"]
    assert sorted(parts["train"] + parts["val"]) == train and parts["test"] == list(range(12, 18))
    assert carve_splits(rows, 0.0, seed=10)["val"] == []
    sizes = {k: len(v) for k, v in load_dataset(prepared).splits.items()}
    assert sizes == {"train": 9, "val": 3, "test": 6}


# --------------------------------------------------------------------------------------------- bad input
def test_broken_renders_are_skipped_with_distinct_reasons_and_other_views_do_not_matter(tmp_path):
    info = write_modelnet40(tmp_path / "raw")
    broken = {"airplane_0002": ("front", "truncated"), "bed_0003": ("rear", "text"),
              "chair_0001": ("rear", "absent"), "bed_0005": ("front", "zero_byte")}  # fmt: skip
    for obj, (view, kind) in broken.items():
        folder = info["objects"][obj]["folder"]
        break_render(folder / f"{obj}.obj.shaded_v{1 if view == 'front' else 7:03d}.png", kind)
    break_render(info["objects"]["chair_0002"]["folder"] / "chair_0002.obj.shaded_v003.png", "truncated")  # not read
    folder, manifest = prepare(data_cfg(tmp_path / "data", info["root"]), options=PrepOptions(max_skip_frac=0.25))
    assert reasons(folder) == {"airplane_0002": "truncated", "bed_0003": "not_media", "chair_0001": "missing_view",
                               "bed_0005": "zero_byte"}  # fmt: skip
    assert manifest["n"] == 14 and manifest["renders_per_object"] == {"11": 1, "12": 17}
    assert manifest["skipped_counts"] == {"missing_view": 1, "not_media": 1, "truncated": 1, "zero_byte": 1}
    detail = {row["key"]: row["detail"] for row in read_jsonl(folder / "skipped.jsonl")}["chair_0001"]
    assert detail.startswith("chair_0001: no render v007 (rear); it has v001, v002, v003, v004, v005, v006, v008")
    over = run_cli(tmp_path, "prep", "modelnet40", "--raw", str(info["root"]), "--root", "over", "--max-skip-frac",
                   "0.1", check=False)  # fmt: skip
    assert over.returncode == 2 and "Traceback" not in over.stderr
    errors = [line for line in over.stderr.splitlines() if line.startswith("error:")]
    message = (r"error: too many failures: 2 of the first 9 items skipped \(18 listed; .*\); see "
               r"over/modelnet40/v001-v007/skipped\.jsonl \(allowed: 10%.*\)")
    assert len(errors) == 1 and re.fullmatch(message, errors[0])
    assert not (tmp_path / "over" / "modelnet40" / "v001-v007" / "manifest.json").exists()


def test_layout_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="no class folder with train/ or test/ inside"):
        prepare(data_cfg(tmp_path / "data", tmp_path))
    info = write_modelnet40(tmp_path / "raw", classes=("bed",), train_objects=1, test_objects=1, views=1)
    leak = info["renders"] / "bed" / "test" / "bed_0001.obj.shaded_v001.png"
    leak.write_bytes((info["renders"] / "bed" / "train" / "bed_0001.obj.shaded_v001.png").read_bytes())
    with pytest.raises(UserError, match=r"object bed_0001 has renders in both .*bed/train and .*bed/test"):
        prepare(data_cfg(tmp_path / "data", info["root"]))


def test_load_checks_the_index_and_the_raw_folder(prepared, tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        load_dataset(data_cfg(Path(prepared.root), tmp_path / "elsewhere"))
    moved = write_modelnet40(tmp_path / "moved", classes=("bed",), train_objects=1, test_objects=0, views=1)
    with pytest.raises(UserError, match="does not exist: pass data.raw"):
        load_dataset(data_cfg(Path(prepared.root), moved["root"]))


# --------------------------------------------------------------------------------------------- kill/resume
def test_killed_prep_resumes_to_byte_identical_outputs(raw, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "MMTOOL_FAULT": "prep_item:5:kill"}
    cmd = [sys.executable, "-m", "mmtool.cli", "prep", "modelnet40", "--raw", str(raw["root"]), "--root", "a"]
    killed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == 137, killed.stderr
    folder = tmp_path / "a" / "modelnet40" / "v001-v007"
    assert not (folder / "manifest.json").exists() and len(read_jsonl(folder / ".journal.jsonl")) == 5
    resumed = run_cli(tmp_path, *cmd[3:])  # the same command, in this process
    run = json.loads(resumed.stdout)["manifest"]["run"]
    assert (run["reused"], run["processed"]) == (5, 13)  # the 5 objects finished before the kill are not redone
    reference, _ = prepare(data_cfg(tmp_path / "b", raw["root"]))
    got, want = tree(folder), tree(reference)
    assert sorted(got) == ["index.jsonl", "manifest.json", "missing.jsonl", "skipped.jsonl"]
    assert got == want  # every file, the manifest included, byte for byte


# --------------------------------------------------------------------------------------------- end to end
def test_prep_then_train_naive_through_the_command_line(raw, tmp_path):
    prep = run_cli(tmp_path, "prep", "modelnet40", "--raw", str(raw["root"]), "--root", "data/smoke")
    assert json.loads(prep.stdout)["cache"].endswith("modelnet40/v001-v007")
    run_cli(tmp_path, "train", "naive", "-d", "modelnet40", "-r", SMOKE, "train.epochs=1", "--run-dir", "run")
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    assert result["dataset"] == "modelnet40" and set(result["unimodal_head_accuracy"]) == set(MODALITIES)
    assert np.asarray(result["test_confusion"]).sum() == 6 and 0 <= result["test_accuracy"] <= 100
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1] and np.isfinite(metrics[0]["val_loss"])
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "name: modelnet40" in config and "image_size: 32" in config


def test_decide_hands_the_views_on_to_the_training_recipe_it_picks():
    """`mmtool decide ... | mmtool train --from-decision -` re-applies every data.* setting of the teachers."""
    from mmtool.config import load_recipe
    from mmtool.stages.decide import _data_overrides

    decide = load_recipe(REPO / "recipes" / "modelnet40" / "decide.yaml", ["data.rear_view=5"])
    ume = load_recipe(REPO / "recipes" / "modelnet40" / "ume.yaml", _data_overrides(decide))
    assert ume.data == decide.data and (ume.data.settings.front_view, ume.data.settings.rear_view) == (0, 5)
