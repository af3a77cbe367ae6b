"""Finding and comparing runs through the real CLI: every run announces its folder and its end, `mmtool
runs` lists three finished runs, a failed one, an interrupted one and one in progress with their status
and numbers, and `mmtool report` aggregates the finished ones; every number is recomputed here from the
runs' results.json files.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
from pathlib import Path

import pytest

from mmtool.runs import lock_run, unlock_run
from tests.e2e.test_cli_chain import mmtool

TRAIN = ["train", "naive", "-d", "tiny", "train.epochs=5"]
FINISHED = {"a": 1, "b": 2}  # --run-dir name -> seed; seed 3 gets the default runs/train/<dataset>-naive-<time>


def _train(cwd: Path, seed: int, *extra: str, fault: str | None = None, check: bool = True):
    with pytest.MonkeyPatch.context() as mp:
        if fault:  # MMTOOL_FAULT=train_step:3:raise|sigterm: the third optimizer step raises / sends SIGTERM
            mp.setenv("MMTOOL_FAULT", fault)
        return mmtool(cwd, *TRAIN, f"train.seed={seed}", *extra, check=check)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Three finished tiny runs, one that failed after two logged epochs, one stopped by SIGTERM."""
    cwd = tmp_path_factory.mktemp("runs_report")
    mmtool(cwd, "prep", "synth-gamma", "data.n=600")
    procs = {name: _train(cwd, seed, "--run-dir", f"runs/train/{name}") for name, seed in FINISHED.items()}
    procs["c"] = _train(cwd, 3)
    # eval_every=1 logs epochs 1 and 2 before step 3 raises, so the folder is kept (a failure before any
    # progress removes it by design)
    procs["failed"] = _train(cwd, 4, "train.eval_every=1", "--run-dir", "runs/train/failed",
                             fault="train_step:3:raise", check=False)  # fmt: skip
    procs["interrupted"] = _train(cwd, 5, "--run-dir", "runs/train/interrupted", fault="train_step:3:sigterm",
                                  check=False)  # fmt: skip
    default = [line[5:] for line in procs["c"].stderr.splitlines() if line.startswith("run: ")][0]
    paths = {"a": "runs/train/a", "b": "runs/train/b", "c": default, "failed": "runs/train/failed",
             "interrupted": "runs/train/interrupted"}  # fmt: skip
    return cwd, procs, paths


def _results(cwd: Path, path: str) -> dict:
    return json.loads((cwd / path / "results.json").read_text())


def test_each_run_announces_its_folder_and_how_it_ended(tree):
    cwd, procs, paths = tree
    assert paths["c"].startswith("runs/train/synth-gamma-naive-")
    for name, end in (("a", "complete"), ("c", "complete"), ("failed", "failed"), ("interrupted", "interrupted")):
        lines = procs[name].stderr.splitlines()
        assert f"run: {paths[name]}" in lines and f"run: {paths[name]} ({end})" in lines, procs[name].stderr
    assert procs["interrupted"].returncode == 143 and procs["failed"].returncode not in (0, 143)
    failed = json.loads((cwd / "runs/train/failed/failed.json").read_text())
    assert failed["error"] == "InjectedFault: injected fault at train_step #3"
    assert not (cwd / "runs/train/interrupted/failed.json").exists()


def test_runs_lists_status_numbers_and_wall_time_by_start(tree):
    cwd, _, paths = tree
    lock_run(cwd / paths["b"])  # as a command working on b would: b is running
    try:
        rows = json.loads(mmtool(cwd, "runs", "--json").stdout)
    finally:
        unlock_run(cwd / paths["b"])
    assert [r["path"] for r in rows] == [paths[k] for k in ("a", "b", "c", "failed", "interrupted")]
    status = {r["path"]: r["status"] for r in rows}
    assert [status[paths[k]] for k in ("a", "b", "c", "failed", "interrupted")] == [
        "complete", "running", "complete", "failed", "interrupted"]  # fmt: skip
    for row, seed in zip(rows, (1, 2, 3, 4, 5), strict=True):
        assert (row["stage"], row["dataset"], row["method"], row["seed"]) == ("train", "synth-gamma", "naive", seed)
        sessions = json.loads((cwd / row["path"] / "sessions.json").read_text())
        assert row["wall_s"] == pytest.approx(sum(s["seconds"] for s in sessions), abs=0.01)
        if row["status"] in ("complete", "running"):
            results = _results(cwd, row["path"])
            assert (row["val_accuracy"], row["test_accuracy"]) == (results["val_accuracy"], results["test_accuracy"])
        else:
            assert row["test_accuracy"] is None
    assert rows[3]["error"].startswith("InjectedFault")


def test_runs_piped_is_a_plain_table_of_80_columns(tree):
    cwd, _, paths = tree
    out = mmtool(cwd, "runs", env={"COLUMNS": ""}).stdout  # stdout is not a terminal: still a table
    lines = out.splitlines()
    assert lines[0].split() == ["stage", "dataset", "method", "seed", "status", "val", "test", "wall", "path"]
    assert len(lines) == 6 and "\x1b" not in out and max(len(line) for line in lines) <= 80
    # the failed run validated every epoch: the others show the setting in which they differ from it
    assert lines[1].split()[:6] == ["train", "synth-gamma", "naive", "eval_every=5", "1", "complete"]
    assert lines[4].split()[:4] == ["train", "synth-gamma", "naive", "eval_every=1"]
    assert lines[1].split()[-1] in (paths["a"], "…/a")


def test_runs_filters_and_empty_selections(tree):
    cwd, _, _ = tree
    assert len(json.loads(mmtool(cwd, "runs", "--stage", "train", "-d", "synth-gamma", "--json").stdout)) == 5
    probe = mmtool(cwd, "runs", "--stage", "probe", check=False)
    assert probe.returncode == 2
    assert probe.stderr.strip().splitlines() == ["error: no runs in runs with stage probe"]
    other = mmtool(cwd, "runs", "--root", "runs/train", "-d", "synth-lazy", check=False)
    assert other.returncode == 2 and "no runs in runs/train with dataset synth-lazy" in other.stderr
    missing = mmtool(cwd, "runs", "--root", "elsewhere", check=False)
    assert missing.returncode == 2 and "elsewhere" in missing.stderr


def test_report_mean_and_sample_std_over_the_finished_runs(tree):
    cwd, _, paths = tree
    acc = [_results(cwd, paths[k])["test_accuracy"] for k in ("a", "b", "c")]
    mean, std = statistics.mean(acc), statistics.stdev(acc)

    md = mmtool(cwd, "report", "runs")
    assert f"| synth-gamma | naive | {mean:.2f} ± {std:.2f} | 3 | 1, 2, 3 |  |" in md.stdout.splitlines()
    assert "5 runs found, 3 values used" in md.stderr

    table = list(csv.DictReader(io.StringIO(mmtool(cwd, "report", "runs/train", "--format", "csv").stdout)))
    assert len(table) == 1 and table[0]["n"] == "3" and table[0]["seeds"] == "1 2 3" and table[0]["note"] == ""
    assert float(table[0]["mean"]) == pytest.approx(mean, abs=1e-9)
    assert float(table[0]["std"]) == pytest.approx(std, abs=1e-9)

    val = [_results(cwd, paths[k])["val_accuracy"] for k in ("a", "c")]
    two = mmtool(cwd, "report", paths["a"], paths["c"], "--format", "json", "--metric", "val_accuracy")
    rows = json.loads(two.stdout)
    assert [(r["dataset"], r["method"], r["metric"], r["n"], r["seeds"]) for r in rows] == [
        ("synth-gamma", "naive", "val_accuracy", 2, [1, 3])]  # fmt: skip
    assert rows[0]["mean"] == pytest.approx(statistics.mean(val))
    assert rows[0]["std"] == pytest.approx(statistics.stdev(val))


def test_report_of_nothing_finished_is_one_line(tree):
    cwd, _, _ = tree
    none = mmtool(cwd, "report", "runs/train/failed", "runs/train/interrupted", check=False)
    assert none.returncode == 2 and len(none.stderr.strip().splitlines()) == 1
    assert "no finished train, pretrain-unimodal or ensemble run with test_accuracy" in none.stderr
    assert "runs/train/failed, runs/train/interrupted (2 runs found)" in none.stderr
    fmt = mmtool(cwd, "report", "runs", "--format", "xlsx", check=False)
    assert fmt.returncode == 2 and "--format must be md, csv or json" in fmt.stderr


@pytest.fixture(scope="module")
def heads(tree):
    """Under heads/: the tree's runs a and b (tiny's MLP head, seeds 1 and 2), and a linear-head and an
    attention-head run of seed 1: three setups of method naive that differ only in model.head."""
    cwd, _, paths = tree
    for name in ("a", "b"):
        shutil.copytree(cwd / paths[name], cwd / "heads" / f"mlp-{name}")
    for head in ("linear", "attention"):
        _train(cwd, 1, f"model.head={head}", "--run-dir", f"heads/{head}")
    return cwd


def test_report_gives_one_row_per_setup_and_pools_seeds(heads):
    cwd = heads
    rows = json.loads(mmtool(cwd, "report", "heads", "--format", "json").stdout)
    assert [(r["method"], r["setup"], r["n"], r["seeds"]) for r in rows] == [
        ("naive", {"model.head": "attention"}, 1, [1]),
        ("naive", {"model.head": "linear"}, 1, [1]),
        ("naive", {"model.head": "mlp"}, 2, [1, 2]),
    ]  # fmt: skip
    acc = [_results(cwd, f"heads/mlp-{k}")["test_accuracy"] for k in ("a", "b")]
    assert rows[2]["mean"] == pytest.approx(statistics.mean(acc)) and rows[2]["note"] == ""
    md = mmtool(cwd, "report", "heads").stdout.splitlines()
    assert md[0] == "| dataset | method | model.head | test_accuracy | n | seeds | note |"
    assert [line.split(" | ")[2] for line in md[2:5]] == ["attention", "linear", "mlp"]
    pooled = json.loads(mmtool(cwd, "report", "heads", "--group-by", "optim.lr", "--format", "json").stdout)
    assert len(pooled) == 1 and pooled[0]["n"] == 4 and "model.head" in pooled[0]["note"]
    typo = mmtool(cwd, "report", "heads", "--group-by", "model.haed", check=False)
    assert typo.returncode == 2 and "--group-by model.haed" in typo.stderr


def test_runs_shows_the_head_of_each_run(heads):
    lines = mmtool(heads, "runs", "--root", "heads").stdout.splitlines()
    methods = {line.split()[-1].rsplit("/", 1)[-1]: " ".join(line.split()[2:4]) for line in lines[1:]}
    assert methods == {"mlp-a": "naive head=mlp", "mlp-b": "naive head=mlp", "linear": "naive head=linear",
                       "attention": "naive head=attention"}  # fmt: skip
