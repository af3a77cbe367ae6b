"""What a researcher meets every day, through the real CLI: loggers they already use (CSV, TensorBoard
read back by its own reader), progress lines in a non-terminal log, and what results.json records."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.e2e.test_cli_chain import REPO, TINY, mmtool


@pytest.fixture(scope="module")
def cwd(tmp_path_factory):
    path = tmp_path_factory.mktemp("daily")
    mmtool(path, "prep", "synth-gamma", *TINY)
    return path


def test_csv_and_tensorboard_follow_a_killed_and_resumed_run(cwd):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["train", "naive", "-d", "tiny", "train.epochs=20", "train.eval_every=5", "train.checkpoint_every=10",
            "train.loggers=[csv, tensorboard]", "--run-dir", "logged"]  # fmt: skip
    env = {**os.environ, "MMTOOL_RECIPES": str(REPO / "recipes"), "PYTHONPATH": str(REPO),
           "MMTOOL_FAULT": "train_step:17:kill"}  # fmt: skip
    killed = subprocess.run([sys.executable, "-m", "mmtool.cli", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert killed.returncode == 137  # epoch 15 was logged, the checkpoint is epoch 10's
    mmtool(cwd, "train", "--resume", "logged")
    jsonl = [json.loads(line) for line in (cwd / "logged" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in jsonl] == [5, 10, 15, 20]
    with (cwd / "logged" / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [5, 10, 15, 20]
    assert [float(r["val_accuracy"]) for r in rows] == [r["val_accuracy"] for r in jsonl]
    events = EventAccumulator(str(cwd / "logged" / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/task_loss", "val/accuracy", "val/loss", "lr"} <= set(events.Tags()["scalars"])
    accuracy = events.Scalars("val/accuracy")
    assert [e.step for e in accuracy] == [5, 10, 15, 20]  # epoch 15, logged twice, is there once
    assert [e.value for e in accuracy] == pytest.approx([r["val_accuracy"] for r in jsonl])


def test_a_log_that_is_not_a_terminal_gets_progress_lines_and_results_say_where_they_ran(cwd):
    env = {**os.environ, "MMTOOL_RECIPES": str(REPO / "recipes"), "PYTHONPATH": str(REPO),
           "MMTOOL_PROGRESS_SECONDS": "0"}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "mmtool.cli", "train", "naive", "-d", "tiny", "train.epochs=40",
                           "--run-dir", "progress"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("naive: epoch ")]
    assert [line.split()[2] for line in lines] == [f"{e}/40" for e in range(2, 41, 2)]  # every 5%
    assert all("ETA " in line and "elapsed " in line and "loss " in line for line in lines)
    assert "val 68.8%" in lines[-1]
    result = json.loads(proc.stdout)
    assert result["runtime"]["device"] == "cpu" and result["runtime"]["precision"] == "fp32"
    assert result["runtime"]["threads"] >= 1 and result["wall_seconds"] > 0
