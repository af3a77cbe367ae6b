"""UCF101 prep and loader: split-list quirks, official splits, App. A.1 inputs, broken inputs, kill/resume."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmtool.data import PrepOptions, cache_dir, load_dataset, prepare
from mmtool.data.pipeline_io import file_sha256, read_jsonl
from mmtool.data.ucf101 import ClipFiles, ClipReader, carve_splits
from mmtool.data.ucf101_layout import frame_name, parse_split_lists
from mmtool.data_config import DataConfig
from mmtool.errors import UserError
from tests.fixtures.files import tree
from tests.fixtures.media import (
    UCF_OFFICIAL_TEST_GROUPS,
    render_frames,
    ucf_split_of,
    write_broken,
    write_broken_frames,
    write_ucf101,
)

REPO = Path(__file__).resolve().parents[2]
CLASSES = ("ApplyEyeMakeup", "Archery", "HandstandPushups", "YoYo")
GROUPS = (1, 8, 15, 22)  # the smallest set with train and test clips in every official split
SIZE = 16  # data.image_size of most tests: small and fast


def data_cfg(root: Path, raw: Path, **overrides) -> DataConfig:
    fields = {"image_size": SIZE, "val_fraction": 0.34, **overrides}  # 0.34 of 3 train groups = 1 val group
    return DataConfig.of(name="ucf101", root=str(root), raw=str(raw), **fields)


def prep_cli(root: Path, raw: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MMTOOL_FAULT", None)
    if fault:
        env["MMTOOL_FAULT"] = fault
    cmd = [sys.executable, "-m", "mmtool.cli", "prep", "ucf101", "--root", str(root), "--raw", str(raw), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def reasons(folder: Path) -> dict[str, str]:
    return {row["key"]: row["reason"] for row in read_jsonl(folder / "skipped.jsonl")}


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict:
    """Frames + flow (no videos), with the real archive's quirks."""
    return write_ucf101(tmp_path_factory.mktemp("ucf") / "raw", classes=CLASSES, groups=GROUPS, videos=False)


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory) -> DataConfig:
    cfg = data_cfg(tmp_path_factory.mktemp("data"), raw["root"])
    prepare(cfg)
    return cfg


# --------------------------------------------------------------------------------------------- split lists
def test_split_lists_parse_through_crlf_blank_lines_and_case_mismatch(raw):
    lists = raw["root"] / "ucfTrainTestlist"
    assert b"\r\n\r\n" in (lists / "trainlist01.txt").read_bytes()  # CRLF and a trailing blank line
    classes, clips = parse_split_lists(lists)
    assert classes == list(CLASSES)
    assert [c.name for c in clips] == sorted(raw["clips"])  # every clip once, though listed in 3 splits
    odd = {c.name: c for c in clips}["v_HandStandPushups_g08_c01"]  # folder "HandstandPushups", file "HandStand"
    assert (odd.class_name, odd.label, odd.group) == ("HandstandPushups", 2, 8)
    for clip in clips:
        assert clip.label == raw["clips"][clip.name]["label"]
        assert clip.splits == tuple(ucf_split_of(clip.group, s) for s in (1, 2, 3))  # official group rule


def test_a_wrong_label_names_the_file_and_line(tmp_path):
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Archery\r\n2 YoYo\r\n")
    (lists / "trainlist01.txt").write_text("Archery/v_Archery_g08_c01.avi 1\r\nyoyo/v_YoYo_g08_c01.avi 1\r\n")
    with pytest.raises(UserError, match=r"trainlist01\.txt:2: label 1 but classInd\.txt numbers YoYo as 2"):
        parse_split_lists(lists)


# --------------------------------------------------------------------------------------------- prep output
def test_prep_indexes_each_clip_once_for_all_three_splits(prepared, raw):
    folder = cache_dir(prepared)
    manifest = json.loads((folder / "manifest.json").read_text())
    rows = read_jsonl(folder / "index.jsonl")
    assert manifest["n"] == len(rows) == 16 and [r["key"] for r in rows] == sorted(r["key"] for r in rows)
    assert manifest["class_names"] == list(CLASSES) and manifest["class_counts"] == [4, 4, 4, 4]
    assert manifest["modalities"] == {"rgb": [3, "image_size", "image_size"], "flow": [20, "image_size", "image_size"]}
    for s, test_groups in UCF_OFFICIAL_TEST_GROUPS.items():
        n_test = sum(r["group"] in test_groups for r in rows)
        assert manifest["split_sizes"][str(s)] == {"train": 16 - n_test, "test": n_test}
        assert sum(manifest["split_counts"][str(s)]["test"]) == n_test
    row = {r["key"]: r for r in rows}["v_HandStandPushups_g01_c01"]
    assert row["rgb_dir"] == "jpegs_256/v_HandstandPushups_g01_c01"  # the spelling found on disk
    assert (row["rgb_frames"], row["flow_frames"]) == (12, 11)  # flow: one frame fewer
    assert "jpegs_256: HandStandPushups -> HandstandPushups" in manifest["case_mismatches"]
    lists = raw["root"] / "ucfTrainTestlist"
    assert manifest["files"]["ucfTrainTestlist/testlist02.txt"] == file_sha256(lists / "testlist02.txt")
    assert manifest["files"]["index.jsonl"] == file_sha256(folder / "index.jsonl")
    assert manifest["skipped"] == [] and manifest["missing"] == 0 and manifest["layout"]["flow"] == "tvl1_flow"


def test_val_holds_out_whole_train_groups_and_never_touches_test(prepared):
    rows = read_jsonl(cache_dir(prepared) / "index.jsonl")
    for split in (1, 2, 3):
        parts = carve_splits(rows, split, 0.34, seed=3)
        groups = {k: {rows[i]["group"] for i in ix} for k, ix in parts.items()}
        assert groups["test"] == set(UCF_OFFICIAL_TEST_GROUPS[split]) & set(GROUPS)
        assert len(groups["val"]) == 1 and not groups["val"] & (groups["train"] | groups["test"])
        assert {rows[i]["label"] for i in parts["val"]} == {0, 1, 2, 3}  # a held-out group spans every class
        assert sorted(i for ix in parts.values() for i in ix) == list(range(len(rows)))
    sizes = {k: len(v) for k, v in load_dataset(prepared).splits.items()}
    assert sizes == {"train": 8, "val": 4, "test": 4}  # split 1: g01 test, one of g08/g15/g22 val


# --------------------------------------------------------------------------------------------- reading
def test_app_a1_input_shapes_at_image_size_224(prepared):
    cfg = data_cfg(Path(prepared.root), Path(prepared.raw), image_size=224)
    assert cache_dir(cfg) == cache_dir(prepared)  # image_size is a load-time setting: same cache
    data = load_dataset(cfg)
    assert data.modalities == ("rgb", "flow") and data.input_dims == {"rgb": [3, 224, 224], "flow": [20, 224, 224]}
    for train in (True, False):
        batch = next(iter(data.splits["train"].loader(2, train=train, seed=0)))
        assert batch.inputs["rgb"].shape == (2, 3, 224, 224) and batch.inputs["rgb"].dtype == torch.float32
        assert batch.inputs["flow"].shape == (2, 20, 224, 224) and batch.inputs["flow"].dtype == torch.float32


def test_eval_reads_the_middle_frame_resized(prepared):
    source = load_dataset(prepared).splits["test"]
    clip = source.reader.clips[0]
    x = source.reader.read(0, ("rgb",), False, np.random.default_rng(0))["rgb"]
    frame = np.asarray(Image.open(Path(clip.rgb_dir) / frame_name(clip.rgb_frames // 2)).convert("RGB"))
    image = torch.nn.functional.interpolate(
        torch.from_numpy(frame.copy()).permute(2, 0, 1)[None].float() / 255,
        (SIZE, SIZE),
        mode="bilinear",
        antialias=True,
    )[0]
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    torch.testing.assert_close(x, (image - mean) / std)


def test_horizontal_flip_negates_x_flow(tmp_path):
    u = np.full((32, 40), 128, np.uint8)
    u[:, :20] = 200  # x motion on the left half only
    for axis, plane in (("u", u), ("v", np.full((32, 40), 100, np.uint8))):
        (tmp_path / axis).mkdir()
        for t in range(11):
            Image.fromarray(plane).save(tmp_path / axis / frame_name(t), quality=95)
    reader = ClipReader([ClipFiles("", 0, str(tmp_path / "u"), str(tmp_path / "v"), 11)], SIZE, 10)
    seen = set()
    for seed in range(8):
        x = reader.read(0, ("flow",), True, np.random.default_rng(seed))["flow"]  # (20, S, S)
        left, right = x[0::2, :, :4].mean().item(), x[0::2, :, -4:].mean().item()
        flipped = right < -0.4
        assert (left, right) == pytest.approx((0.0, -0.5625) if flipped else (0.5625, 0.0), abs=0.05)
        assert x[1::2].mean().item() == pytest.approx(-28 / 128, abs=0.02)  # y flow keeps its sign
        seen.add(flipped)
    assert seen == {True, False}


def test_batches_are_the_same_with_0_and_2_workers(prepared):
    source = load_dataset(prepared).splits["train"]
    inline = list(source.loader(4, train=True, seed=5, epoch=2, workers=0))
    parallel = list(source.loader(4, train=True, seed=5, epoch=2, workers=2))
    assert len(inline) == len(parallel) == 2
    for a, b in zip(inline, parallel, strict=True):
        assert torch.equal(a.ids, b.ids) and torch.equal(a.target, b.target)
        assert all(torch.equal(a.inputs[m], b.inputs[m]) for m in ("rgb", "flow"))


def test_worker_processes_end_when_released_not_at_a_later_garbage_collection(prepared):
    """Persistent workers outlive an epoch; release_workers (every command calls it as it ends) stops them
    at once, and a loader used again afterwards starts new ones."""
    from mmtool.data.source import release_workers

    loader = load_dataset(prepared).splits["train"].loader(4, train=True, workers=2)
    first = [b.ids for b in loader]
    workers = list(loader._iterator._workers)
    assert len(workers) == 2 and all(w.is_alive() for w in workers)
    release_workers()
    assert not any(w.is_alive() for w in workers) and loader._iterator is None
    assert all(torch.equal(a, b.ids) for a, b in zip(first, loader, strict=True))  # new workers, same batches
    release_workers()


def test_load_checks_index_and_raw_paths_cheaply(prepared, tmp_path):
    shutil.copytree(Path(prepared.root), tmp_path / "data")
    cfg = data_cfg(tmp_path / "data", Path(prepared.raw))
    index = cache_dir(cfg) / "index.jsonl"
    with pytest.raises(UserError, match="does not exist: pass data.raw"):
        load_dataset(data_cfg(tmp_path / "data", tmp_path / "elsewhere"))
    index.write_text(index.read_text().replace('"label": 0', '"label": 1', 1))
    with pytest.raises(UserError, match=rf"{re.escape(str(index))} is missing or does not match"):
        load_dataset(cfg)


# --------------------------------------------------------------------------------------------- broken inputs
@pytest.fixture(scope="module")
def broken_raw(tmp_path_factory) -> Path:
    """Frames + flow with one clip of each broken kind and one clip absent from disk."""
    root = write_ucf101(tmp_path_factory.mktemp("broken") / "raw", groups=GROUPS, videos=False)["root"]
    write_broken_frames(root, "v_Archery_g08_c01", "empty_rgb")
    write_broken_frames(root, "v_YoYo_g15_c01", "corrupt_jpg")
    write_broken_frames(root, "v_ApplyEyeMakeup_g22_c01", "short_flow")
    shutil.rmtree(root / "jpegs_256" / "v_YoYo_g01_c01")  # listed, absent: missing
    return root


def test_broken_frames_get_distinct_reasons_and_missing_clips_do_not_count(broken_raw, tmp_path):
    cfg = data_cfg(tmp_path, broken_raw)
    folder, manifest = prepare(cfg, options=PrepOptions(max_skip_frac=0.2))  # 3/15 items: exactly the budget
    assert reasons(folder) == {
        "v_Archery_g08_c01": "no_video",
        "v_YoYo_g15_c01": "corrupt",
        "v_ApplyEyeMakeup_g22_c01": "too_short",
    }
    missing = read_jsonl(folder / "missing.jsonl")
    assert [m["key"] for m in missing] == ["v_YoYo_g01_c01"] and missing[0]["absent"] == ["jpegs_256/v_YoYo_g01_c01"]
    assert manifest["n"] == 12 and manifest["missing"] == 1
    assert manifest["skipped_counts"] == {"corrupt": 1, "no_video": 1, "too_short": 1}


def test_over_budget_prep_exits_nonzero_with_the_message(broken_raw, tmp_path):
    proc = prep_cli(tmp_path / "data", broken_raw, "--max-skip-frac", "0.1")
    assert proc.returncode == 2, proc.stderr
    folder = tmp_path / "data" / "ucf101" / "auto-stack10"
    assert re.search(rf"too many failures: \d+ of the first \d+ items skipped \(15 listed; .*\); see "
                     rf"{re.escape(str(folder / 'skipped.jsonl'))}", proc.stderr)
    assert not (folder / "manifest.json").exists()


# --------------------------------------------------------------------------------------------- videos
def test_video_source_decodes_avi_with_decord_and_names_broken_files(tmp_path):
    info = write_ucf101(tmp_path / "raw", groups=GROUPS, rgb_frames=False, flow=False)
    broken = {
        "v_Archery_g08_c01": "truncated",
        "v_Archery_g15_c01": "zero_byte",
        "v_YoYo_g08_c01": "text",
        "v_YoYo_g15_c01": "unreadable",
    }
    for stem, kind in broken.items():
        clip = info["clips"][stem]
        write_broken(clip["video"].parent, kind, clip["video"].name, label=clip["label"], seed=clip["seed"])
    folder, manifest = prepare(data_cfg(tmp_path / "data", info["root"]), options=PrepOptions(max_skip_frac=0.25))
    expected = {**broken, "v_YoYo_g08_c01": "not_media"}
    assert reasons(folder) == expected
    assert manifest["layout"]["rgb_source"] == "video" and manifest["layout"]["flow"] is None
    assert list(manifest["modalities"]) == ["rgb"]  # no tvl1_flow: flow is not computed from videos
    clip = info["clips"]["v_HandStandPushups_g01_c01"]
    frames = sorted((folder / "frames" / "v_HandStandPushups_g01_c01").iterdir())
    assert [f.name for f in frames] == [frame_name(i) for i in range(12)]
    decoded = np.asarray(Image.open(frames[5]), dtype=np.float64)
    assert np.abs(decoded - render_frames(clip["label"], 12, (32, 40), clip["seed"])[5]).mean() < 12
    data = load_dataset(data_cfg(tmp_path / "data", info["root"]))
    assert data.modalities == ("rgb",)
    batch = next(iter(data.splits["test"].loader(3, train=False)))
    assert set(batch.inputs) == {"rgb"} and batch.inputs["rgb"].shape == (3, 3, SIZE, SIZE)


# --------------------------------------------------------------------------------------------- kill/resume

def test_killed_prep_resumes_to_byte_identical_outputs(tmp_path):
    raw = write_ucf101(tmp_path / "raw", groups=GROUPS)["root"]  # videos + frames + flow
    args = ("data.rgb_source=video",)  # frames extracted into the cache: more outputs to compare
    killed = prep_cli(tmp_path / "a", raw, *args, fault="prep_item:3:kill")
    assert killed.returncode == 137, killed.stderr
    folder = tmp_path / "a" / "ucf101" / "video-stack10"
    assert not (folder / "manifest.json").exists() and (folder / ".journal.jsonl").exists()
    resumed = prep_cli(tmp_path / "a", raw, *args)
    assert resumed.returncode == 0, resumed.stderr
    reference, _ = prepare(data_cfg(tmp_path / "b", raw, rgb_source="video"))
    got, want = tree(folder), tree(reference)
    assert sorted(got) == sorted(want) and "frames/v_YoYo_g22_c01/frame000012.jpg" in got
    assert got == want  # every file, the manifest included, byte for byte
    run = json.loads(resumed.stdout)["manifest"]["run"]
    assert (run["reused"], run["processed"]) == (3, 13)  # the 3 clips finished before the kill are not redone


def test_a_complete_cache_is_not_passed_off_as_another_raw_folder(tmp_path):
    first = write_ucf101(tmp_path / "raw1", groups=GROUPS, videos=False)["root"]
    second = write_ucf101(tmp_path / "raw2", groups=GROUPS, videos=False, seed=1)["root"]
    prepare(data_cfg(tmp_path / "data", first))
    with pytest.raises(UserError, match="was prepared from .*raw1, not .*raw2"):
        prepare(data_cfg(tmp_path / "data", second))
    _, manifest = prepare(data_cfg(tmp_path / "data", second), force=True)
    assert manifest["raw"] == str(Path(second).resolve())
