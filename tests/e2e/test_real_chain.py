"""The paper's chain on the real datasets' layouts, through the real CLI: a fixture copy of UCF101 (VGG-Sound:
test_vggsound_chain.py) written in its published format, the shipped recipes with the SMOKE fragment merged last."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.e2e.test_cli_chain import REPO, mmtool
from tests.fixtures.media import write_ucf101

SMOKE_UCF = str(REPO / "recipes" / "_base" / "smoke" / "ucf101.yaml")


@pytest.fixture(scope="module")
def ucf(tmp_path_factory) -> Path:
    """A prepared UCF101 fixture and uni-modal models trained on it with the shipped recipes."""
    cwd = tmp_path_factory.mktemp("ucf")
    write_ucf101(cwd / "raw", groups=(1, 8, 15, 22), clips_per_group=1, frames=12, size=(32, 40), videos=False)
    mmtool(cwd, "prep", "ucf101", "--raw", "raw", "--root", "data/smoke")
    pre = mmtool(cwd, "pretrain-unimodal", "--dataset", "ucf101", "-r", SMOKE_UCF, "--run-dir", "pre")
    pre = json.loads(pre.stdout)
    assert set(pre["modalities"]) == {"rgb", "flow"}
    return cwd


def test_decide_pipes_into_train_on_ucf101(ucf):
    decide = mmtool(ucf, "decide", "--dataset", "ucf101", "-r", SMOKE_UCF, "--teachers", "pre", "--run-dir", "dec")
    verdict = json.loads(decide.stdout)
    assert verdict["verdict"] in ("UMT", "UME") and set(verdict["unimodal_accuracy"]) == {"rgb", "flow"}
    assert "data.image_size=32" in verdict["data_overrides"]  # the trained model sees the teachers' inputs
    trained = mmtool(ucf, "train", "--from-decision", "-", "-r", SMOKE_UCF, "--run-dir", "fused", stdin=decide.stdout)
    out = json.loads(trained.stdout)
    assert out["method"] == verdict["method"] and 0 <= out["test_accuracy"] <= 100
    env = json.loads((ucf / "fused" / "env.json").read_text())
    assert env["device"] == "cpu" and env["precision"] == "fp32"


def test_ume_verdict_on_ucf101_scores_what_decide_reported(ucf):
    decide = mmtool(ucf, "decide", "-d", "ucf101", "-r", SMOKE_UCF, "--teachers", "pre", "--run-dir", "dec-ume",
                    "probe.lr=1.0e-9")  # fmt: skip
    verdict = json.loads(decide.stdout)
    assert verdict["verdict"] == "UME"  # an untrained classifier (lr 1e-9) loses to the averaged teachers
    out = json.loads(mmtool(ucf, "train", "--from-decision", "-", "-r", SMOKE_UCF, "--run-dir", "ume",
                            stdin=decide.stdout).stdout)  # fmt: skip
    assert out["test_accuracy"] == verdict["average_accuracy"] and not (ucf / "ume" / "metrics.jsonl").exists()


@pytest.fixture(scope="module")
def uninterrupted(ucf):
    """The reference run of the kill tests: read in this process (0 workers); an epoch is the same with any
    number of workers, so it is the reference for both."""
    args = ["train", "naive", "-d", "ucf101", "-r", SMOKE_UCF, "train.epochs=2", "train.batch_size=2",
            "train.checkpoint_every_steps=3", "train.eval_every=1",
            "train.keep_optimizer=true"]  # fmt: skip  (a finished last.pt keeps the final weights, compared)
    mmtool(ucf, *args, "--run-dir", "whole")
    return args


@pytest.mark.parametrize("workers", [0, 2])
def test_a_killed_run_on_video_data_resumes_exactly(ucf, uninterrupted, workers):
    """kill -9 inside an epoch of UCF101 clips read by 0 or 2 loader workers (random crops and flips):
    --resume re-reads the rest of that epoch exactly, and the run ends as the uninterrupted one did. The
    killed process's workers end with it (a worker left behind would keep the pipes open: this call would
    then wait for them until its timeout)."""
    killed = f"killed-w{workers}"
    proc = mmtool(ucf, *uninterrupted, f"train.workers={workers}", "--run-dir", killed, check=False, process=True,
                  env={"MMTOOL_FAULT": "train_step:5:kill"})  # fmt: skip
    assert proc.returncode == 137, proc.stderr[-2000:]
    saved = torch.load(ucf / killed / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == 3 and saved["partial"]["step"] == 3  # inside epoch 1 (4 steps each)
    mmtool(ucf, "train", "--resume", killed)  # in this process: its loader workers end when it is done
    assert (ucf / killed / "metrics.jsonl").read_text() == (ucf / "whole" / "metrics.jsonl").read_text()
    a, b = (torch.load(ucf / r / "checkpoints" / "last.pt", weights_only=True)["model"] for r in (killed, "whole"))
    assert all(torch.equal(a[k], b[k]) for k in b)
