"""Kinetics-400 and Kinetics-Sounds: the cvdf layout and its annotation quirks, PySlowFast-style frames,
broken and missing clips, kill/resume, and the command line from prep to a trained model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmtool.config import load_recipe
from mmtool.data import PrepOptions, cache_dir, load_dataset, prepare
from mmtool.data.kinetics import clip_key, find_clip_files, read_annotations
from mmtool.data.pipeline_io import read_jsonl
from mmtool.data.settings import KINETICS_SOUNDS
from mmtool.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from mmtool.data_config import DataConfig
from mmtool.errors import UserError
from mmtool.models.transforms import INPUT_TRANSFORMS
from tests.e2e.cli import REPO, messages, run_cli
from tests.fixtures.files import check_killed_prep_resumes
from tests.fixtures.kinetics import CLASSES, add_annotation_rows, write_kinetics
from tests.fixtures.media import class_tone_hz, write_broken

SMALL = {"store_size": 32, "clip_frames": 8, "audio_seconds": 1.0, "image_size": 32}
SETTINGS = [f"data.{k}={v}" for k, v in SMALL.items()]
SMOKE = str(REPO / "recipes" / "_base" / "smoke" / "kinetics400.yaml")
# the broken-file kinds of tests/fixtures/media.py and the skip reason each must get
BROKEN = {"truncated": "truncated", "zero_byte": "zero_byte", "no_audio": "no_audio", "no_video": "no_video",
          "text": "not_media", "unreadable": "unreadable", "too_short": "too_short"}  # fmt: skip


def data_cfg(root: Path, raw: Path, name: str = "kinetics400", **overrides) -> DataConfig:
    return DataConfig.of(name=name, root=str(root), raw=str(raw), **{**SMALL, "val_fraction": 0.25, **overrides})


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict:
    """4 classes x (2 train + 1 val) clips, a replaced corrupt download, an untrimmed one, 2 rows without a file."""
    info = write_kinetics(tmp_path_factory.mktemp("k400") / "k400")
    info["missing"] = [add_annotation_rows(info["csv"][s], [CLASSES[0]])[0] for s in ("train", "val")]
    return info


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory) -> DataConfig:
    cfg = data_cfg(tmp_path_factory.mktemp("data"), raw["root"])
    prepare(cfg)
    return cfg



# ------------------------------------------------------------------------------------ annotations, names
def test_annotations_header_quotes_and_clip_names(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(
        "\ufefflabel,youtube_id,time_start,time_end,split,is_cc\r\n"  # a BOM and CRLF line ends
        '"passing American football (in game)",-a_b-C_d-ef,59,69,train,0\r\n'
        '"frying, then serving",x_Y-z_12345,0,10,train,1\r\n'  # a comma inside the quotes
        "massaging person's head,Ab3,7,17,train,0\r\n"
        '"""quoted"" name",Q1,5.0,15,train,0\r\n'
        "\r\n"
        '"passing American football (in game)",-a_b-C_d-ef,59,69,train,0\r\n'
    )
    rows, repeated = read_annotations(path, "train")
    assert [(r.key, r.label) for r in rows] == [
        ("-a_b-C_d-ef_000059_000069", "passing American football (in game)"),
        ("x_Y-z_12345_000000_000010", "frying, then serving"),
        ("Ab3_000007_000017", "massaging person's head"),
        ("Q1_000005_000015", '"quoted" name'),
    ]
    assert repeated == 1 and clip_key("a", 1234567, 1234577) == "a_1234567_1234577"
    bad = {
        "abseiling,-3B32lodo2M,59,69,train\n": r"train.csv:1: a header naming the columns .* \(no label, youtube_id",
        "label,youtube_id,time_start,time_end,split\nx,abc,5,5,train\n": r"train.csv:2: time_end 5 is not after",
        "label,youtube_id,time_start,time_end,split\nx,abc,5,15,val\n": r"train.csv:2: split 'val' in the train",
        "label,youtube_id,time_start,time_end,split\nx,abc,5,15\n": r"train.csv:2: expected 5 fields",
        "label,youtube_id,time_start,time_end,split\nx,abc,5.5,15,train\n": r"train.csv:2: .* must be whole seconds",
    }
    for text, error in bad.items():
        path.write_text(text)
        with pytest.raises(UserError, match=error):
            read_annotations(path, "train")


def test_clip_files_are_found_by_their_cvdf_name(tmp_path):
    names = ["train/-a_b_000059_000069.mp4", "videos/train/playing bagpipes/x_Y_000001_000011.webm",
             "train/notes_000001_000011.txt", "train/unpadded_1_11.mp4"]  # fmt: skip
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    found = find_clip_files(tmp_path)
    assert sorted(found) == ["-a_b_000059_000069", "x_Y_000001_000011"]
    assert found["x_Y_000001_000011"] == [tmp_path / names[1]]
    with pytest.raises(UserError, match=r"annotations/train.csv: not found \(--raw DIR holds the cvdfoundation"):
        prepare(data_cfg(tmp_path / "data", tmp_path))
    with pytest.raises(UserError, match="give --raw DIR"):
        prepare(DataConfig.of(name="kinetics400", root=str(tmp_path)), options=PrepOptions())


# ------------------------------------------------------------------------------------------- prep output
def test_prep_layout_manifest_and_choices(raw, prepared):
    folder = cache_dir(prepared)
    assert folder.name == "s32-t8-sr16000-a1"  # load-time settings (image_size, val_fraction) are not in it
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["class_names"] == sorted(CLASSES) == raw["labels"] and manifest["num_classes"] == 4
    assert manifest["n"] == 12 and manifest["split_sizes"] == {"train": 8, "test": 4}  # val.csv is the test split
    assert manifest["missing"] == 2 and manifest["skipped"] == [] and "run" not in manifest
    assert manifest["source"]["from_replacement"] == 1 and manifest["source"]["rows_with_several_files"] == 1
    index = {row["key"]: row for row in read_jsonl(folder / "index.jsonl")}
    listed = {r["key"]: (r["label_index"], {"train": "train", "val": "test"}[r["split"]])
              for r in raw["rows"] if r["split"] != "test"}  # fmt: skip
    assert {k: (r["label"], r["split"]) for k, r in index.items()} == listed  # test.csv's clip is not read
    assert index[raw["replaced"]["key"]]["source"].startswith("replacement/replacement_for_corrupted_k400/")
    cut = index[raw["untrimmed"]["key"]]
    assert cut["cut"] == [1, 2] and cut["audio_samples"] == 16000  # the 1 s of its bounds, not the 4 s file
    assert all("cut" not in r and 16000 < r["audio_samples"] <= 32000 for k, r in index.items() if r is not cut)
    row = next(r for r in index.values() if r is not cut)
    frames = np.asarray(Image.open(folder / row["frames"]))
    assert frames.shape == (8 * 32, 40, 3)  # short side 32, the 32x40 aspect ratio kept
    wave = np.load(folder / row["audio"])
    peak_hz = np.argmax(np.abs(np.fft.rfft(wave))) * 16000 / len(wave)  # resampled, not relabelled
    assert wave.dtype == np.float32 and abs(peak_hz - class_tone_hz(row["label"])) < 5


def test_loader_splits_and_views(prepared):
    ds = load_dataset(prepared)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 6, "val": 2, "test": 4}
    assert ds.input_dims == {"video": [3, 8, 32, 32], "audio": [16000]} and ds.class_names == sorted(CLASSES)
    test = ds.splits["test"]
    batch = next(iter(test.loader(0, train=False)))
    assert batch.inputs["video"].shape == (4, 3, 8, 32, 32) and batch.inputs["audio"].shape == (4, 16000)
    # evaluation reads the centred 32x32 crop of the 32x40 frames (no resize: the scale training crops see)
    reader = test.reader
    stored = np.asarray(Image.open(Path(reader.folder) / reader.frames[0]).convert("RGB")).reshape(8, 32, 40, 3)
    expected = normalize(torch.from_numpy(stored[:, :, 4:36].copy()).permute(3, 0, 1, 2).float() / 255,
                         IMAGENET_MEAN, IMAGENET_STD)  # fmt: skip
    assert torch.allclose(batch.inputs["video"][0], expected)
    train = ds.splits["train"]
    epochs = [next(iter(train.loader(6, train=True, seed=3, epoch=e))) for e in (1, 1, 2)]
    views = [b.inputs["video"][torch.argsort(b.ids)] for b in epochs]
    assert torch.equal(views[0], views[1]) and not torch.equal(views[0], views[2])  # random crops and flips


def test_kinetics_sounds_keeps_only_its_classes(raw, tmp_path):
    with pytest.raises(UserError, match=r"the Kinetics-Sounds classes \['blowing nose', .* are not in train.csv"):
        prepare(data_cfg(tmp_path / "data", raw["root"], "kinetics-sounds"))
    copy = tmp_path / "k400"
    shutil.copytree(raw["root"], copy)
    others = [c for c in KINETICS_SOUNDS if c not in CLASSES]
    add_annotation_rows(copy / "annotations" / "train.csv", others)  # the real csv lists all 31
    cfg = data_cfg(tmp_path / "data", copy, "kinetics-sounds")
    _, manifest = prepare(cfg, options=PrepOptions(max_missing_frac=1.0))  # the 25 added rows have no clip
    assert manifest["class_names"] == sorted(KINETICS_SOUNDS) and manifest["num_classes"] == 31
    kept = {r["key"] for r in raw["rows"] if r["label"] in KINETICS_SOUNDS and r["split"] != "test"}
    index = read_jsonl(cache_dir(cfg) / "index.jsonl")
    assert {r["key"] for r in index} == kept and len(kept) == 6  # 2 of the fixture's 4 classes are sound classes
    assert {manifest["class_names"][r["label"]] for r in index} == {"playing bagpipes", "tapping pen"}
    assert manifest["missing"] == len(others) + 2 and manifest["source"]["subset"]["classes"] == 31
    assert load_dataset(cfg).num_classes == 31


def test_kinetics_sounds_class_list_is_a_recipe_key_with_a_cache_of_its_own(raw, tmp_path):
    default = data_cfg(tmp_path / "data", raw["root"], "kinetics-sounds")
    two = default.updated(classes=("tapping pen", "playing bagpipes"))
    _, manifest = prepare(two)
    assert manifest["class_names"] == ["playing bagpipes", "tapping pen"]
    assert manifest["source"]["subset"] == {"classes": 2, "list": "data.classes", "rows": 8}  # test rows too
    assert cache_dir(two) != cache_dir(default) and cache_dir(two).name.startswith(cache_dir(default).name + "-c2-")
    assert load_dataset(two).num_classes == 2
    for bad, why in ((("tapping pen",), "two or more"), (("tapping pen",) * 2, "repeated: tapping pen")):
        with pytest.raises(UserError, match=f"data.classes: expected .*{why}"):
            prepare(default.updated(classes=bad))


# ---------------------------------------------------------------------------------------------- failures
def test_broken_clips_get_distinct_reasons_and_the_budget_holds(tmp_path):
    info = write_kinetics(tmp_path / "raw", classes=CLASSES[:2], quirks=False)  # 6 clips
    rows = add_annotation_rows(info["csv"]["train"], [CLASSES[0]] * len(BROKEN))
    for row, kind in zip(rows, BROKEN, strict=True):
        write_broken(info["root"] / "train", kind, row["path"].name, size=(32, 40))
    add_annotation_rows(info["csv"]["val"], [CLASSES[1]] * 2, seed=1)  # missing: never counted as failures
    done = run_cli(tmp_path, "prep", "kinetics400", "--raw", "raw", "--root", "ok", *SETTINGS, "--max-skip-frac", "0.6")
    manifest = json.loads(done.stdout)["manifest"]
    assert manifest["n"] == 6 and manifest["missing"] == 2  # 7 broken of 13 present is within 60%; 9/13 would not be
    folder = tmp_path / json.loads(done.stdout)["cache"]  # relative to where the command ran
    got = {row["key"]: row["reason"] for row in read_jsonl(folder / "skipped.jsonl")}
    assert got == {row["key"]: BROKEN[kind] for row, kind in zip(rows, BROKEN, strict=True)}
    assert manifest["skipped_counts"] == dict.fromkeys(sorted(BROKEN.values()), 1)
    over = run_cli(tmp_path, "prep", "kinetics400", "--raw", "raw", "--root", "over", *SETTINGS,
                   "--max-skip-frac", "0.3", check=False)  # fmt: skip
    errors = [line for line in messages(over.stderr) if line.startswith("error")]
    assert over.returncode == 2 and len(errors) == 1 and "too many failures:" in errors[0]
    assert (
        "skipped.jsonl" in errors[0]
        and not (tmp_path / "over" / "kinetics400" / folder.name / "manifest.json").exists()
    )


def test_killed_prep_resumes_byte_identical(raw, prepared, tmp_path):
    check_killed_prep_resumes(tmp_path, "kinetics400", raw["root"], SETTINGS, cache_dir(prepared), decoded=9)


def test_load_refuses_a_cache_that_is_not_kinetics_sounds(raw, prepared, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(Path(prepared.root) / "kinetics400", root / "kinetics-sounds")
    cfg = prepared.updated(name="kinetics-sounds", root=str(root))
    with pytest.raises(UserError, match=r"manifest.json: field 'class_names' is not the Kinetics-Sounds list"):
        load_dataset(cfg)


# ------------------------------------------------------------------------------------------ command line
def test_cli_prep_then_train_naive(raw, tmp_path):
    """`mmtool prep kinetics400 --raw DIR`, then `mmtool train naive -d kinetics400` with the SMOKE sizes. The
    recipe's r3d18/resnet18 are swapped for MLPs on the command line to keep this file within seconds (both
    CNNs train on clips in tests/e2e/test_vggsound_chain.py); the recipe's log-mel front end is kept."""
    run_cli(tmp_path, "prep", "kinetics400", "--raw", str(raw["root"]), "--root", "data/smoke",
            "data.store_size=32", "data.clip_frames=8", "data.audio_seconds=1.0")  # fmt: skip
    out = json.loads(run_cli(tmp_path, "train", "naive", "-d", "kinetics400", "-r", SMOKE, "train.epochs=1",
                             "model.encoders.video.name=mlp", "model.encoders.video.args={}",
                             "model.encoders.audio.name=mlp", "data.test_crop_size=24",  # an MLP reads one size
                             "--run-dir", "naive").stdout)  # fmt: skip
    assert out["dataset"] == "kinetics400" and 0 <= out["test_accuracy"] <= 100
    assert np.asarray(out["test_confusion"]).sum() == 4 and len(out["test_confusion"]) == 4  # val.csv's 4 clips
    spec = torch.load(tmp_path / "naive" / "checkpoints" / "best.pt", weights_only=True)["spec"]
    audio = spec["encoders"]["audio"]
    assert audio["transform"] == "logmel" and audio["transform_args"]["sample_rate"] == 16000
    # the full-size recipe: 10 s at 16 kHz through mmaction2's 80-band log-mel (512-sample frames, 256-sample hop)
    recipe = load_recipe(REPO / "recipes" / "kinetics400" / "naive.yaml").model.encoders["audio"]
    logmel = INPUT_TRANSFORMS.get(recipe.transform)([160000], **recipe.transform_args)
    assert logmel.out_shape == [1, 80, 626]
