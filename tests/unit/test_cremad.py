"""CREMA-D: the published clip list and OGM-GE's split, labels from the file names, audio from the .wav and frames
from the .flv of each clip, clips lacking a file or with broken ones, kill/resume, and prep -> train on the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmtool.data import PrepOptions, cache_dir, cremad, load_dataset, prepare
from mmtool.data.cremad import EMOTIONS, grid_names, parse_name, published_clips, split_of
from mmtool.data.pipeline_io import read_jsonl
from mmtool.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from mmtool.data_config import DataConfig
from mmtool.errors import UserError
from tests.e2e.cli import REPO, messages, run_cli
from tests.fixtures.cremad import SPARE_NAMES, TEST_NAMES, TRAIN_NAMES, write_cremad, write_flv, write_wav
from tests.fixtures.files import check_killed_prep_resumes
from tests.fixtures.media import class_tone_hz, write_broken

SMALL = {"store_size": 32, "clip_frames": 3, "audio_seconds": 1.0, "sample_rate": 22050, "image_size": 32}
SETTINGS = [f"data.{k}={v}" for k, v in SMALL.items() if k != "image_size"]  # the prep-time ones
# the fixture holds a dozen of the 7,442 published clips: every other one is missing, on purpose
ALL_MISSING_OK = PrepOptions(max_missing_frac=1.0)
ALL_MISSING_OK_ARGS = ["--max-missing-frac", "1"]
SMOKE = str(REPO / "recipes" / "_base" / "smoke" / "cremad.yaml")


def data_cfg(root: Path, raw: Path) -> DataConfig:
    return DataConfig.of(name="cremad", root=str(root), raw=str(raw), **SMALL, val_fraction=0.25)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict:
    """6 emotions x (1 clip of OGM-GE's train list + 1 of its test list)."""
    return write_cremad(tmp_path_factory.mktemp("cremad") / "CREMA-D")


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory) -> DataConfig:
    cfg = data_cfg(tmp_path_factory.mktemp("data"), raw["root"])
    prepare(cfg, options=ALL_MISSING_OK)
    return cfg



# ------------------------------------------------------------------------------------- clip list, split
def test_published_list_split_and_names():
    names = published_clips()
    assert len(grid_names()) == 7462 and len(names) == 7442 and len(set(names)) == 7442
    assert len({n.split("_")[0] for n in names}) == 91 and "1008_WSI_ANG_XX" not in names  # the 20 never recorded
    test = cremad.test_clips()
    assert len(test) == 744 and test < set(names)
    for emotion in EMOTIONS:  # names copied by hand from OGM-GE's train.csv and test.csv
        assert {split_of(n) for n in TRAIN_NAMES[emotion]} == {"train"}
        assert {split_of(n) for n in TEST_NAMES[emotion]} == {"test"}
    assert {split_of(n) for n in SPARE_NAMES} == {"train"}
    assert parse_name("1009_IEO_HAP_HI") == {"actor": 1009, "sentence": "IEO", "emotion": "HAP", "level": "HI"}
    for bad in ("1001_DFA_XYZ_XX", "1001_DFA_ANG", "1001_ABC_ANG_XX"):
        with pytest.raises(UserError, match="is not a CREMA-D clip name"):
            parse_name(bad)


def test_raw_layout_errors(tmp_path):
    with pytest.raises(UserError, match="give --raw DIR"):
        prepare(DataConfig.of(name="cremad", root=str(tmp_path)))
    (tmp_path / "raw").mkdir()
    with pytest.raises(UserError, match=r"raw/AudioWAV: not found \(--raw DIR holds the CREMA-D copy"):
        prepare(data_cfg(tmp_path / "data", tmp_path / "raw"))
    (tmp_path / "raw" / "AudioWAV").mkdir()
    with pytest.raises(UserError, match=r"raw/VideoFlash: not found, nor VideoMP4/"):
        prepare(data_cfg(tmp_path / "data", tmp_path / "raw"))


# ------------------------------------------------------------------------------------------- prep output
def test_prep_layout_manifest_labels_and_split(raw, prepared):
    folder = cache_dir(prepared)
    assert folder.name == "s32-t3-sr22050-a1"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["class_names"] == ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"] and manifest["num_classes"] == 6
    assert manifest["n"] == 12 and manifest["split_sizes"] == {"train": 6, "test": 6}
    assert manifest["split_counts"] == {"train": [1] * 6, "test": [1] * 6}
    assert manifest["missing"] == 7442 - 12 and manifest["skipped"] == [] and "run" not in manifest
    assert len(read_jsonl(folder / "missing.jsonl")) == 7430  # every published clip the copy lacks, listed
    assert manifest["input_dims"] == {"audio": [22050], "visual": [9, "image_size", "image_size"]}
    index = {row["key"]: row for row in read_jsonl(folder / "index.jsonl")}
    assert {k: (r["label"], r["split"]) for k, r in index.items()} == {
        c["key"]: (c["label"], c["split"]) for c in raw["clips"]
    }
    row = index["1016_IEO_HAP_LO"]
    assert [row[k] for k in ("emotion", "label", "sentence", "level", "split")] == ["HAP", 3, "IEO", "LO", "test"]
    assert row["source"] == f"VideoFlash/{row['key']}.flv" and row["audio_source"] == f"AudioWAV/{row['key']}.wav"
    frames = np.asarray(Image.open(folder / row["frames"]))
    assert frames.shape == (3 * 32, 32, 3)  # 3 frames of the 24x32 flv, resized to 32x32, stacked
    wave = np.load(folder / row["audio"])
    assert wave.dtype == np.float32 and len(wave) == row["audio_samples"] == round(1.5 * 22050)  # the wav, resampled
    peak_hz = np.argmax(np.abs(np.fft.rfft(wave))) * 22050 / len(wave)
    assert abs(peak_hz - class_tone_hz(3)) < 5  # the wav's tone, not the flv's soundtrack


def test_loader_modalities_and_views(prepared):
    ds = load_dataset(prepared)
    assert ds.modalities == ("audio", "visual") and ds.class_names == list(EMOTIONS)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 4, "val": 2, "test": 6}
    assert ds.input_dims == {"audio": [22050], "visual": [9, 32, 32]}
    test = ds.splits["test"]
    batch = next(iter(test.loader(0, train=False)))
    assert batch.inputs["visual"].shape == (6, 9, 32, 32) and batch.inputs["audio"].shape == (6, 22050)
    reader = test.reader.clips
    stored = np.asarray(Image.open(Path(reader.folder) / reader.frames[0]).convert("RGB")).reshape(3, 32, 32, 3)
    frame1 = normalize(torch.from_numpy(stored[1].copy()).permute(2, 0, 1).float() / 255, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.allclose(batch.inputs["visual"][0, 3:6], frame1, atol=1e-6)  # channels 3-5: the second frame
    train = ds.splits["train"]
    views = [next(iter(train.loader(4, train=True, seed=3, epoch=e))) for e in (1, 1, 2)]
    views = [b.inputs["visual"][torch.argsort(b.ids)] for b in views]
    assert torch.equal(views[0], views[1]) and not torch.equal(views[0], views[2])  # random crops and flips
    only = next(iter(test.select(["visual"]).loader(0, train=False)))
    assert set(only.inputs) == {"visual"} and torch.equal(only.inputs["visual"], batch.inputs["visual"])


# ---------------------------------------------------------------------------------------------- failures
def test_missing_views_broken_files_and_the_budget(tmp_path):
    root = write_cremad(tmp_path / "raw")["root"]  # 12 good clips: 6 of the train list, 6 of the test list
    wav_dir, flv_dir = root / "AudioWAV", root / "VideoFlash"
    s = SPARE_NAMES
    write_wav(wav_dir / f"{s[0]}.wav", 4, 1.5, 0)  # no video file
    write_flv(flv_dir / f"{s[1]}.flv", 3, 0)  # no wav
    for key in s[2:10]:
        write_wav(wav_dir / f"{key}.wav", 0, 1.5, 1)
        write_flv(flv_dir / f"{key}.flv", 0, 1)
    (wav_dir / f"{s[2]}.wav").write_bytes(b"")
    write_broken(flv_dir, "text", f"{s[3]}.flv")
    (wav_dir / f"{s[4]}.wav").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    (wav_dir / f"{s[5]}.wav").unlink()
    (wav_dir / f"{s[5]}.wav").mkdir()
    write_broken(flv_dir, "no_video", f"{s[6]}.flv")
    write_wav(wav_dir / f"{s[7]}.wav", 0, 0.5, 1)
    (flv_dir / f"{s[8]}.flv").unlink()
    write_broken(root / "VideoMP4", "truncated", f"{s[8]}.mp4", size=(24, 32))  # the fallback copy, cut short
    (flv_dir / f"{s[9]}.flv").unlink()
    write_broken(root / "VideoMP4", "no_audio", f"{s[9]}.mp4", size=(24, 32), frames=12)  # a good fallback copy
    write_wav(wav_dir / "1009_MTI_ANG_XX.wav", 0, 1.5, 2)  # a grid name the published copy lacks
    write_wav(wav_dir / "1001_DFA_ANG_XX (1).wav", 0, 1.5, 2)
    expected = {s[0]: ("missing_view", "AudioWAV/"), s[1]: ("missing_view", "VideoFlash/"),
                s[2]: ("zero_byte", "AudioWAV/"), s[3]: ("not_media", "VideoFlash/"),
                s[4]: ("not_media", "AudioWAV/"), s[5]: ("unreadable", "AudioWAV/"), s[6]: ("no_video", "VideoFlash/"),
                s[7]: ("too_short", "AudioWAV/"), s[8]: ("truncated", "VideoMP4/")}  # fmt: skip
    done = run_cli(tmp_path, "prep", "cremad", "--raw", "raw", "--root", "ok", *SETTINGS, "--max-skip-frac", "0.6",
                   *ALL_MISSING_OK_ARGS)
    manifest = json.loads(done.stdout)["manifest"]
    assert manifest["n"] == 13 and manifest["missing"] == 7442 - 22  # 9 broken of 22 present is within 60%
    folder = tmp_path / json.loads(done.stdout)["cache"]
    skipped = {r["key"]: r for r in read_jsonl(folder / "skipped.jsonl")}
    assert {k: r["reason"] for k, r in skipped.items()} == {k: v[0] for k, v in expected.items()}
    for key, (_, where) in expected.items():  # the detail names the file at fault (or the one present)
        assert f"{where}{key}." in skipped[key]["detail"], skipped[key]
    assert "git lfs pull" in skipped[s[4]]["detail"]
    rows = {r["key"]: r for r in read_jsonl(folder / "index.jsonl")}
    assert rows[s[9]]["source"] == f"VideoMP4/{s[9]}.mp4"  # no .flv: the mp4 is read
    assert manifest["source"]["unlisted_files"] == 2
    assert manifest["source"]["unlisted_shown"] == ["AudioWAV/1001_DFA_ANG_XX (1).wav", "AudioWAV/1009_MTI_ANG_XX.wav"]
    over = run_cli(tmp_path, "prep", "cremad", "--raw", "raw", "--root", "over", *SETTINGS, "--max-skip-frac", "0.3",
                   *ALL_MISSING_OK_ARGS, check=False)  # fmt: skip
    errors = [line for line in messages(over.stderr) if line.startswith("error")]
    assert over.returncode == 2 and len(errors) == 1 and "too many failures:" in errors[0]
    assert "skipped.jsonl" in errors[0] and not (tmp_path / "over" / "cremad" / folder.name / "manifest.json").exists()


def test_killed_prep_resumes_byte_identical(raw, prepared, tmp_path):
    check_killed_prep_resumes(tmp_path, "cremad", raw["root"], [*SETTINGS, *ALL_MISSING_OK_ARGS], cache_dir(prepared),
                              decoded=9)


# ------------------------------------------------------------------------------------------ command line
def test_cli_prep_then_train_naive(raw, tmp_path):
    """`mmtool prep cremad --raw DIR`, then `mmtool train naive -d cremad` with the SMOKE sizes. The recipe's
    ResNet-18s are swapped for MLPs on the command line to keep this file within seconds; the recipe's STFT
    front end and the 9-channel visual input are kept."""
    shutil.copytree(raw["root"], tmp_path / "CREMA-D")
    run_cli(tmp_path, "prep", "cremad", "--raw", "CREMA-D", "--root", "data/smoke", *SETTINGS, *ALL_MISSING_OK_ARGS)
    out = json.loads(run_cli(tmp_path, "train", "naive", "-d", "cremad", "-r", SMOKE, "train.epochs=1",
                             "model.encoders.visual.name=mlp", "model.encoders.audio.name=mlp",
                             "--run-dir", "naive").stdout)  # fmt: skip
    assert out["dataset"] == "cremad" and 0 <= out["test_accuracy"] <= 100
    assert np.asarray(out["test_confusion"]).sum() == 6 and len(out["test_confusion"]) == 6  # test.csv's 6 clips
    spec = torch.load(tmp_path / "naive" / "checkpoints" / "best.pt", weights_only=True)["spec"]
    assert spec["modalities"]["visual"] == [9, 32, 32]
    audio = spec["encoders"]["audio"]
    assert audio["transform"] == "stft" and audio["transform_args"]["n_fft"] == 128  # the SMOKE settings' STFT


def test_settings_defaults_are_the_recipes_prep_time_settings():
    """`mmtool prep cremad` with no data.* settings builds the cache recipes/_base/cremad.yaml reads: the
    defaults of CREMA-D's settings class are its recipes' prep-time sizes."""
    from mmtool.config import load_recipe
    from mmtool.data.settings import CremadSettings

    recipe = load_recipe(REPO / "recipes" / "cremad" / "pretrain.yaml")
    defaults = CremadSettings()
    assert (defaults.clip_frames, defaults.audio_seconds, defaults.sample_rate) == (3, 3.0, 22050)
    assert cache_dir(DataConfig(name="cremad")).name == cache_dir(recipe.data).name
