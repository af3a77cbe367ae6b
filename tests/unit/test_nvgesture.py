"""NVGesture prep and loader on a fixture in the released layout: the list format, skips by reason, the colour
start for both modalities, 64-frame-style windows with zero padding, one crop and flip shared by both modalities,
the seeded validation split, and prep -> train mmtm through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmtool.data import load_dataset, prepare
from mmtool.data.nvgesture import GestureReader, pad_or_window
from mmtool.data.nvgesture_prep import parse_list
from mmtool.data.pipeline_io import read_jsonl
from mmtool.data_config import DataConfig
from mmtool.errors import UserError
from tests.e2e.cli import run_cli
from tests.fixtures.nvgesture import START, depth_level, write_nvgesture

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "recipes" / "_base" / "smoke" / "nvgesture.yaml")
STORE, CROP, WINDOW = 16, 12, 12  # the fixture's gestures hold 16 (long) or 8 (short) frames


def data_cfg(root: Path, raw: Path, **overrides) -> DataConfig:
    fields = {"store_size": STORE, "image_size": CROP, "window_frames": WINDOW, "val_fraction": 0.2, "seed": 3}
    return DataConfig.of(name="nvgesture", root=str(root), raw=str(raw), **{**fields, **overrides})


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nvg") / "nvGesture_v1"
    write_nvgesture(root, broken=True)
    return root.parent  # --raw may name the folder above nvGesture_v1/


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory) -> tuple[DataConfig, Path]:
    from mmtool.data import PrepOptions

    cfg = data_cfg(tmp_path_factory.mktemp("data"), raw)
    folder, _ = prepare(cfg, options=PrepOptions(max_skip_frac=0.3))
    return cfg, folder


def test_list_lines_are_read_as_nvidias_reader_does(tmp_path):
    lst = tmp_path / "a.lst"
    lst.write_text(
        "path:./Video_data/class_07/subject3_r1 depth:sk_depth:138:218 color:sk_color:139:219 "
        "duo_left:duo_left:161:241 label:7\r\n\n"
        "path:./Video_data/class_01/subject1_r0 color:sk_color:x:9 label:one\n"
    )
    first, second = parse_list(lst, "train")
    assert first.key == "class_07-subject3_r1" and first.label == 7 and first.line == 1
    assert first.files == {"depth": "sk_depth", "color": "sk_color"}
    assert first.ranges == {"depth": (138, 218), "color": (139, 219)}
    assert second.label is None and second.ranges == {"color": None} and second.line == 3
    lst.write_text("Video_data/class_01/subject1_r0 label:1\n")
    with pytest.raises(UserError, match=r"a.lst:1: expected 'path:"):
        parse_list(lst, "train")


def test_prep_indexes_the_gestures_and_skips_broken_ones_by_reason(prepared):
    _, folder = prepared
    manifest = json.loads((folder / "manifest.json").read_text())
    skipped = {r["key"]: r["reason"] for r in read_jsonl(folder / "skipped.jsonl")}
    assert skipped == {"class_01-subject90_r0": "missing_depth", "class_02-subject91_r0": "bad_label",
                       "class_02-subject92_r0": "bad_range", "class_03-subject93_r0": "not_media"}  # fmt: skip
    assert [m["key"] for m in read_jsonl(folder / "missing.jsonl")] == ["class_03-subject94_r0"]
    assert manifest["split_sizes"] == {"train": 13, "test": 6}  # 3 classes x (4 + 2), plus the kept broken-list one
    assert manifest["num_classes"] == 25 and manifest["class_counts"][:4] == [7, 6, 6, 0]
    assert manifest["start_disagreements"] == ["class_01-subject95_r0"]
    rows = {r["key"]: r for r in read_jsonl(folder / "index.jsonl")}
    assert rows["class_01-subject1_r0"]["label"] == 0 and rows["class_03-subject13_r0"]["label"] == 2
    assert rows["class_01-subject1_r0"]["frames"] == 16 and rows["class_01-subject2_r1"]["frames"] == 8
    assert rows["class_01-subject95_r0"]["start"] == START  # the colour start, not depth's START + 1


def test_depth_frames_are_the_colour_range_of_the_depth_video(prepared):
    _, folder = prepared
    row = next(r for r in read_jsonl(folder / "index.jsonl") if r["key"] == "class_01-subject95_r0")
    reader = GestureReader(str(folder), [row], store_size=STORE, image_size=STORE, window=10, augment=False)
    depth = reader.read(0, ["depth"], False, np.random.default_rng(0))["depth"]  # (1, 10, S, S) in [-1, 1]
    levels = ((depth[0] + 1) * 255 / 2).flatten(1).median(1).values  # the flat grey around the class square
    expected = torch.tensor([depth_level(START + t) for t in range(10)], dtype=torch.float32)
    torch.testing.assert_close(levels, expected, atol=3, rtol=0)


def test_a_batch_holds_windows_of_both_modalities(prepared):
    cfg, _ = prepared
    data = load_dataset(cfg)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 11, "val": 2, "test": 6}
    assert data.input_dims == {"rgb": [3, WINDOW, CROP, CROP], "depth": [1, WINDOW, CROP, CROP]}
    batch = next(iter(data.splits["train"].loader(4, train=True, seed=0, epoch=1)))
    assert batch.inputs["rgb"].shape == (4, 3, WINDOW, CROP, CROP) and batch.inputs["rgb"].dtype == torch.float32
    assert batch.inputs["depth"].shape == (4, 1, WINDOW, CROP, CROP) and batch.target.dtype == torch.long
    assert batch.inputs["rgb"].min() >= -1 and batch.inputs["rgb"].max() <= 1
    train, val = (set(data.splits[s].targets().tolist()) for s in ("train", "val"))
    assert train <= {0, 1, 2} and val <= {0, 1, 2}


def test_short_gestures_are_zero_padded_on_both_sides_and_long_ones_windowed():
    assert pad_or_window(8, 12, None) == (0, 8, 2)
    assert pad_or_window(7, 12, None) == (0, 7, 2)  # one more black frame after
    assert pad_or_window(16, 12, None) == (2, 12, 0)  # centred in evaluation
    assert pad_or_window(16, 12, 4) == (4, 12, 0)


def test_short_gesture_reads_black_frames_around_its_own(prepared):
    _, folder = prepared
    row = next(r for r in read_jsonl(folder / "index.jsonl") if r["key"] == "class_01-subject2_r1")
    reader = GestureReader(str(folder), [row], store_size=STORE, image_size=CROP, window=WINDOW, augment=False)
    x = reader.read(0, ["rgb", "depth"], False, np.random.default_rng(0))
    for clip in x.values():
        assert (clip[:, :2] == -1).all() and (clip[:, -2:] == -1).all()  # zero pixels, scaled to [-1, 1]
        assert (clip[:, 2:-2] > -1).any(dim=(0, 2, 3)).all()


def test_crop_and_flip_are_drawn_once_for_both_modalities(prepared):
    _, folder = prepared
    row = next(r for r in read_jsonl(folder / "index.jsonl") if r["key"] == "class_01-subject2_r1")
    plain = GestureReader(str(folder), [row], store_size=STORE, image_size=STORE, window=WINDOW, augment=False)
    aug = GestureReader(str(folder), [row], store_size=STORE, image_size=STORE, window=WINDOW, augment=True)
    base = plain.read(0, ["rgb", "depth"], False, np.random.default_rng(0))
    flipped = 0
    for seed in range(8):
        x = aug.read(0, ["rgb", "depth"], True, np.random.default_rng(seed))
        same = [torch.equal(x[m], base[m]) for m in ("rgb", "depth")]
        mirrored = [torch.equal(x[m], base[m].flip(-1)) for m in ("rgb", "depth")]
        assert same in ([True, True], [False, False]) and mirrored in ([True, True], [False, False])
        assert same[0] or mirrored[0]
        flipped += mirrored[0]
        alone = aug.read(0, ["depth"], True, np.random.default_rng(seed))["depth"]
        assert torch.equal(alone, x["depth"])  # read alone, a modality is augmented as in the pair
    assert 0 < flipped < 8
    cropper = GestureReader(str(folder), [row], store_size=STORE, image_size=CROP, window=WINDOW, flip=False)
    x = cropper.read(0, ["rgb", "depth"], True, np.random.default_rng(5))
    corners = [(t, left) for t in range(STORE - CROP + 1) for left in range(STORE - CROP + 1)
               if torch.equal(base["depth"][..., t : t + CROP, left : left + CROP], x["depth"])]  # fmt: skip
    assert len(corners) >= 1
    t, left = corners[0]
    assert torch.equal(base["rgb"][..., t : t + CROP, left : left + CROP], x["rgb"])


def test_a_wrong_raw_folder_or_an_unstorable_size_is_one_line(tmp_path, raw):
    with pytest.raises(UserError, match="nvgesture_train_correct_cvpr2016_v2.lst"):
        prepare(data_cfg(tmp_path / "d", tmp_path))
    with pytest.raises(UserError, match="at most 65500, got 300 x 256"):
        prepare(data_cfg(tmp_path / "d", raw, store_size=256, max_frames=300))


def test_prep_then_train_mmtm_from_the_command_line(raw, tmp_path):
    sizes = ["data.store_size=16", "data.image_size=12", "data.window_frames=8"]
    run_cli(tmp_path, "prep", "nvgesture", "--raw", str(raw), "--max-skip-frac", "0.3", "data.root=data/smoke",
            *sizes)  # fmt: skip
    recipe = str(REPO / "recipes" / "nvgesture" / "mmtm.yaml")
    run_cli(tmp_path, "train", "-r", recipe, "-r", SMOKE, "--run-dir", "mmtm", "train.epochs=1", *sizes)
    results = json.loads((tmp_path / "mmtm" / "results.json").read_text())
    spec = torch.load(tmp_path / "mmtm" / "checkpoints" / "best.pt", weights_only=True)["spec"]
    assert spec["fusion"] == "mmtm" and spec["encoders"]["depth"] == {"name": "i3d", "args": {"width": 0.0625}}
    assert spec["modalities"] == {"rgb": [3, 8, 12, 12], "depth": [1, 8, 12, 12]}
    assert np.array(results["test_confusion"]).sum() == 6 and results["method"] == "ume"  # the 6 test gestures


def test_prep_writes_the_same_bytes_with_workers(prepared, raw, tmp_path):
    from mmtool.data import PrepOptions

    _, first = prepared
    again, _ = prepare(data_cfg(tmp_path, raw), options=PrepOptions(max_skip_frac=0.3, workers=2))
    for name in ("index.jsonl", "skipped.jsonl", "missing.jsonl"):
        assert (again / name).read_bytes() == (first / name).read_bytes(), name
