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


def test_messages_lead_somewhere(cwd, tmp_path):
    from tests.e2e.cli import messages

    typo = mmtool(cwd, "train", "umtt", "-d", "tiny", check=False)
    assert typo.returncode == 2 and len(messages(typo.stderr)) == 1
    assert "unknown method 'umtt'; did you mean 'umt'?" in typo.stderr and "ogm_ge" in typo.stderr
    assert "no recipe" not in typo.stderr
    missing = mmtool(cwd, "probe", "-d", "tiny", check=False)
    assert missing.returncode == 2 and messages(missing.stderr) == [
        "error: mmtool probe needs --run RUN_DIR (or run=RUN_DIR)"
    ]
    assert not (cwd / "runs" / "probe").exists()  # refused before any run folder was made
    mmtool(cwd, "pretrain-unimodal", "-d", "tiny", "train.epochs=2", "--run-dir", "pre")
    inside = mmtool(cwd, "decide", "-d", "tiny", "--teachers", "pre/m1", check=False)
    assert f"is inside the run {cwd / 'pre'} (a `mmtool pretrain-unimodal` run); pass" in inside.stderr
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "results.json").write_text(json.dumps({"stage": "probe"}))
    loose = mmtool(cwd, "decide", "-d", "tiny", "--teachers", str(tmp_path / "loose"), check=False)
    assert loose.returncode == 2 and "holds the results of a `mmtool probe` run but no config.yaml" in loose.stderr
    version = mmtool(cwd, "--version")
    assert version.stdout.strip().startswith("mmtool ") and version.stdout.split()[1][0].isdigit()
    helptext = mmtool(cwd, "train", "--help").stdout
    assert "--teachers RUN_DIR" in helptext and "KEY=VALUE" in helptext and "-r, --recipe FILE" in helptext


def test_data_and_runs_follow_the_project_root_or_the_environment(cwd, tmp_path):
    """From a sub-folder of a project (marked by recipes/ or .mmtool), data/ and runs/ are the project's;
    MMTOOL_DATA and MMTOOL_RUNS move them; files in a run are readable by the group (umask 027)."""
    project = tmp_path / "project"
    (project / "notes" / "deep").mkdir(parents=True)
    (project / ".mmtool").touch()
    mmtool(project / "notes" / "deep", "prep", "synth-gamma", *TINY)
    assert (project / "data" / "synth-gamma").is_dir() and not (project / "notes" / "deep" / "data").exists()
    old = os.umask(0o027)
    try:
        mmtool(project / "notes", "train", "naive", "-d", "tiny", "train.epochs=1")
    finally:
        os.umask(old)
    (run,) = (project / "runs" / "train").iterdir()
    assert (run / "results.json").stat().st_mode & 0o777 == 0o640
    assert (run / "checkpoints" / "best.pt").stat().st_mode & 0o777 == 0o640
    store, runs = tmp_path / "store", tmp_path / "elsewhere"
    env = {"MMTOOL_DATA": str(store), "MMTOOL_RUNS": str(runs)}
    mmtool(project, "prep", "synth-gamma", *TINY, env=env)
    mmtool(project, "train", "naive", "-d", "tiny", "train.epochs=1", env=env)
    assert (store / "synth-gamma").is_dir() and len(list((runs / "train").iterdir())) == 1
