"""VGG-Sound through the real CLI: a fixture copy in the published layout (mp4 clips with AAC audio,
the CSV), video and spectrogram encoders trained with the shipped recipes and the SMOKE fragment merged
last (its own file, so that a test runner can place it apart from the UCF101 chain)."""

from __future__ import annotations

import json

import torch

from tests.e2e.test_cli_chain import REPO, mmtool
from tests.fixtures.media import write_vggsound

SMOKE_VGG = str(REPO / "recipes" / "_base" / "smoke" / "vggsound.yaml")


def test_vggsound_trains_video_and_spectrogram_encoders(tmp_path):
    """R3D-18 on clips and ResNet-18 on the STFT of the waveform, UMT from uni-modal teachers."""
    write_vggsound(tmp_path / "raw", train_per_class=3, test_per_class=1, frames=8, size=(32, 40), seconds=1.2)
    mmtool(tmp_path, "prep", "vggsound", "--raw", "raw", "--root", "data/smoke", "data.store_size=32",
           "data.clip_frames=4", "data.audio_seconds=1.0")  # fmt: skip
    args = ("-r", SMOKE_VGG, "train.epochs=1")
    mmtool(tmp_path, "pretrain-unimodal", "-d", "vggsound", *args, "--run-dir", "pre")
    out = json.loads(mmtool(tmp_path, "train", "umt", "-d", "vggsound", *args, "--teachers", "pre",
                            "--run-dir", "umt").stdout)  # fmt: skip
    logged = json.loads((tmp_path / "umt" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train_distill_video_loss", "train_distill_audio_loss"} <= set(logged)
    spec = torch.load(tmp_path / "umt" / "checkpoints" / "best.pt", weights_only=True)["spec"]
    assert spec["encoders"]["audio"]["transform"] == "stft" and spec["encoders"]["video"]["name"] == "r3d18"
    assert 0 <= out["test_accuracy"] <= 100


def test_multi_view_testing_reports_video_and_clip_accuracy(tmp_path):
    """Windows of 4 of 8 stored frames; validation and test read 2 windows x 3 crops of each video: training,
    decide and ensemble score videos (their views' mean) and the training results give single views' too."""
    write_vggsound(tmp_path / "raw", train_per_class=2, test_per_class=1, frames=8, size=(32, 40), seconds=1.2)
    mmtool(tmp_path, "prep", "vggsound", "--raw", "raw", "--root", "data/smoke", "data.store_size=32",
           "data.clip_frames=8", "data.audio_seconds=1.0")  # fmt: skip
    views = ("data.clip_frames=8", "data.window_frames=4", "data.test_clips=2", "data.test_crops=3",
             "data.image_size=24")  # fmt: skip
    args = ("-r", SMOKE_VGG, "train.epochs=1", *views)
    pre = json.loads(mmtool(tmp_path, "pretrain-unimodal", "-d", "vggsound", *args, "--run-dir", "pre").stdout)
    video = pre["modalities"]["video"]
    assert video["views_per_sample"] == {"val": 6, "test": 6} and 0 <= video["test_clip_accuracy"] <= 100
    decided = json.loads(mmtool(tmp_path, "decide", "-d", "vggsound", *args, "--teachers", "pre",
                                "--run-dir", "dec").stdout)  # fmt: skip
    assert decided["test_views"] == {"clips": 2, "crops": 3} and "videos" in decided["accuracy_over"]
    ume = json.loads(mmtool(tmp_path, "ensemble", "-d", "vggsound", *args, "--teachers", "pre",
                            "--run-dir", "ume").stdout)  # fmt: skip
    assert ume["test_views"] == {"clips": 2, "crops": 3}
    assert all(0 <= a <= 100 for a in ume["test_member_accuracy"].values())
