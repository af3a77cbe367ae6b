"""Drives the real CLI through all seven commands on the tiny recipes (in this process, and in child
processes where a kill, a signal or another process is the point: see tests/e2e/cli.py).

The decide accuracies are recomputed here from the checkpoints on disk, independently of the stage code.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.e2e.cli import REPO, messages, run_cli

TINY = ["data.n=600"]  # recipes/tiny use a 600-sample gamma


def mmtool(cwd: Path, *args: str, stdin: str | None = None, check: bool = True, env: dict | None = None,
           process: bool = False) -> subprocess.CompletedProcess:  # fmt: skip
    """The real CLI, in this process unless ``process`` (see tests/e2e/cli.py)."""
    return run_cli(cwd, *args, stdin=stdin, check=check, env=env, process=process)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """prep + pretrain-unimodal once for the module."""
    cwd = tmp_path_factory.mktemp("chain")
    mmtool(cwd, "prep", "synth-gamma", *TINY)
    out = json.loads(mmtool(cwd, "pretrain-unimodal", "--dataset", "tiny", "--run-dir", "pre").stdout)
    assert set(out["modalities"]) == {"m1", "m2"}
    return cwd


def counts(pred: torch.Tensor, target: torch.Tensor, k: int = 3) -> list[list[int]]:
    """A confusion matrix counted by hand: rows actual, columns predicted."""
    cm = [[0] * k for _ in range(k)]
    for t, p in zip(target.tolist(), pred.tolist(), strict=True):
        cm[t][p] += 1
    return cm


def load_split(cwd: Path, split: str):
    from mmtool.data import load_dataset
    from mmtool.data_config import DataConfig

    data = load_dataset(DataConfig(name="synth-gamma", root=str(cwd / "data"), n=600))
    return data.splits[split]


def test_help_lists_seven_commands_with_examples(tmp_path):
    out = mmtool(tmp_path, "--help").stdout
    commands = ["prep", "pretrain-unimodal", "probe", "decide", "train", "ensemble", "utilization"]
    for cmd in commands:
        assert cmd in out
        assert "Example: mmtool" in mmtool(tmp_path, cmd, "--help").stdout


def test_decide_accuracies_recomputed_and_piped_into_train(chain):
    decide = mmtool(chain, "decide", "--dataset", "tiny", "--teachers", "pre", "--run-dir", "decide")
    result = json.loads(decide.stdout)
    assert result["verdict"] in ("UMT", "UME") and result["method"] == result["verdict"].lower()
    assert "verdict:" in decide.stderr

    test = load_split(chain, "test")
    probs = []
    feats = {}
    for m in ("m1", "m2"):
        ckpt = torch.load(chain / "pre" / m / "checkpoints" / "best.pt", weights_only=True)
        sd = ckpt["model"]
        h = torch.relu(test.inputs[m] @ sd[f"encoders.{m}.net.0.weight"].T + sd[f"encoders.{m}.net.0.bias"])
        feats[m] = h
        logits = h @ sd[f"head.proj.{m}.weight"].T + sd["head.bias"]
        probs.append(F.softmax(logits, dim=1))
        assert result["unimodal_accuracy"][m] == pytest.approx(
            (logits.argmax(1) == test.target).float().mean().item() * 100, abs=1e-3
        )
    avg = (sum(probs) / 2).argmax(1)
    assert result["average_accuracy"] == pytest.approx((avg == test.target).float().mean().item() * 100, abs=1e-3)
    clf = torch.load(chain / "decide" / "mm_linear" / "checkpoints" / "best.pt", weights_only=True)["model"]
    z = feats["m1"] @ clf["head.proj.m1.weight"].T + feats["m2"] @ clf["head.proj.m2.weight"].T + clf["head.bias"]
    assert result["mm_linear_accuracy"] == pytest.approx(
        (z.argmax(1) == test.target).float().mean().item() * 100, abs=1e-3
    )
    assert result["verdict"] == ("UMT" if result["mm_linear_accuracy"] > result["average_accuracy"] else "UME")
    assert result["test_confusion"] == {"mm_linear": counts(z.argmax(1), test.target),
                                        "average": counts(avg, test.target)}  # fmt: skip
    ci = result["difference"]
    assert ci["low"] <= ci["diff"] <= ci["high"]

    trained = mmtool(chain, "train", "--from-decision", "-", "--run-dir", "from-decision", stdin=decide.stdout)
    out = json.loads(trained.stdout)
    assert out["method"] == result["method"] and 0 <= out["test_accuracy"] <= 100


def test_umt_keeps_teachers_then_probe_utilization_ensemble(chain):
    before = {m: sha(chain / "pre" / m / "checkpoints" / "best.pt") for m in ("m1", "m2")}
    umt = json.loads(mmtool(chain, "train", "umt", "--dataset", "tiny", "--teachers", "pre", "--run-dir", "umt").stdout)
    assert {m: sha(chain / "pre" / m / "checkpoints" / "best.pt") for m in ("m1", "m2")} == before
    logged = [json.loads(line) for line in (chain / "umt" / "metrics.jsonl").read_text().splitlines()]
    assert {"train_task_loss", "train_distill_m1_loss", "train_distill_m2_loss"} <= set(logged[-1])
    assert (chain / "umt" / "config.yaml").is_file() and (chain / "umt" / "env.json").is_file()
    assert umt["best_epoch"] == max(logged, key=lambda r: r["val_accuracy"])["epoch"]

    probe = json.loads(mmtool(chain, "probe", "--dataset", "tiny", "--run", "umt").stdout)
    assert set(probe["probes"]) == {"m1", "m2"}
    assert all({"train_accuracy", "test_accuracy"} <= set(p) for p in probe["probes"].values())
    for p in probe["probes"].values():  # per-class results: a test confusion matrix that agrees with the accuracy
        cm = p["test_confusion"]
        assert 100 * sum(cm[c][c] for c in range(3)) / sum(map(sum, cm)) == pytest.approx(p["test_accuracy"], abs=1e-3)

    util = json.loads(mmtool(chain, "utilization", "--dataset", "tiny", "--run", "umt").stdout)
    a = util["accuracy"]
    assert util["u(m2|m1)"] == pytest.approx((a - util["accuracy_only_m1"]) / a)
    assert util["d_util"] == pytest.approx(util["u(m2|m1)"] - util["u(m1|m2)"])

    ens = json.loads(mmtool(chain, "ensemble", "--dataset", "tiny", "--teachers", "pre").stdout)
    assert set(ens["test_member_accuracy"]) == {"m1", "m2"} and 0 <= ens["test_accuracy"] <= 100
    only_m1 = json.loads(mmtool(chain, "ensemble", "-d", "tiny", "--teachers", "pre", "ensemble.weights=[1,0]").stdout)
    assert only_m1["test_accuracy"] == pytest.approx(only_m1["test_member_accuracy"]["m1"])
    entropy = json.loads(
        mmtool(chain, "ensemble", "-d", "tiny", "--teachers", "pre", "ensemble.combine=entropy").stdout
    )
    assert entropy["combine"] == "entropy" and "weights" not in entropy
    versus = json.loads(mmtool(chain, "ensemble", "-d", "tiny", "--teachers", "pre", "--run", "umt").stdout)
    rows = versus["per_class"]["accuracy"]
    beyond = [c for c in range(3) if rows["fusion"][c] > rows["uni-modal m1"][c] + rows["uni-modal m2"][c]]
    assert versus["per_class"]["fusion_beats_sum_of_unimodal"] == beyond
    assert versus["per_class"]["average_beats_fusion"] == [
        c for c in range(3) if rows["ensemble"][c] > rows["fusion"][c]
    ]
    test = load_split(chain, "test")
    fused_overall = sum(rows["fusion"][c] * (test.target == c).sum().item() for c in range(3)) / len(test) / 100
    assert fused_overall * 100 == pytest.approx(umt["test_accuracy"], abs=1e-3)
    bad = mmtool(chain, "ensemble", "-d", "tiny", "--teachers", "pre", "ensemble.combine=median", check=False)
    assert bad.returncode == 2 and "ensemble.combine" in bad.stderr


def test_recipe_typo_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {REPO / 'recipes' / 'tiny' / 'naive.yaml'}\ntrain: {{epohcs: 3}}\n")
    proc = mmtool(tmp_path, "train", "naive", "--recipe", str(bad), check=False)
    assert proc.returncode == 2
    lines = messages(proc.stderr)
    assert len(lines) == 1 and "bad.yaml" in lines[0] and "train.epohcs" in lines[0]


def test_unknown_method_and_missing_teachers_exit_2(chain):
    assert mmtool(chain, "train", "nosuch", "--dataset", "tiny", check=False).returncode == 2
    proc = mmtool(chain, "decide", "--dataset", "tiny", "--teachers", "does-not-exist", check=False)
    assert proc.returncode == 2 and "does-not-exist" in proc.stderr
    assert not list((chain / "runs" / "decide").glob("*")), "a refused run leaves no directory behind"
    other = mmtool(chain, "train", "self_distill", "-d", "synth-gamma", "data.n=600", "data.seed=5",
                   "method.teacher_run=pre", check=False)  # fmt: skip
    assert other.returncode == 2 and "method.teacher_run" in other.stderr


KILL_STEPS = {"naive": 23, "umt": 17, "ogm_ge": 29}  # drawn once at random in [7, 35): mid-epoch steps


@pytest.mark.parametrize("method", ["naive", "umt", "ogm_ge"])
def test_killed_run_resumes_exactly(chain, method):
    """kill -9 after a random step; the last checkpoint (one every 6 steps, 5 steps per epoch) is inside an
    epoch, and --resume continues from there (loader position, loss sums, random state) to the metrics and
    weights of an uninterrupted run, every evaluation logged exactly once: for plain fusion, for
    distillation from frozen teachers, and for gradient modulation with random noise."""
    recipe = ["-d", "tiny"] if method != "ogm_ge" else ["-r", str(REPO / "recipes/synth-gamma/ogm_ge.yaml"),
                                                       "-r", str(REPO / "recipes/_base/tiny.yaml")]  # fmt: skip
    extra = ["--teachers", "pre"] if method == "umt" else []
    args = ["train", method, *recipe, *extra, "train.epochs=8", "train.batch_size=100", "train.eval_every=1",
            "train.checkpoint_every=0", "train.checkpoint_every_steps=6",
            "train.keep_optimizer=true"]  # fmt: skip  (last.pt keeps the final weights, compared below)
    whole, killed_dir = f"whole-{method}", f"killed-{method}"
    mmtool(chain, *args, "--run-dir", whole)
    step = KILL_STEPS[method]
    env = {**os.environ, "MMTOOL_RECIPES": str(REPO / "recipes"), "PYTHONPATH": str(REPO),
           "MMTOOL_FAULT": f"train_step:{step}:kill"}  # fmt: skip
    killed = subprocess.run([sys.executable, "-m", "mmtool.cli", *args, "--run-dir", killed_dir], cwd=chain, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert killed.returncode == 137
    saved = torch.load(chain / killed_dir / "checkpoints" / "last.pt", weights_only=True)
    done = step // 6 * 6  # steps at the last checkpoint
    assert saved["step"] == done and saved["partial"]["epoch"] == done // 5 + 1 and saved["partial"]["step"] == done % 5
    out = json.loads(mmtool(chain, "train", "--resume", killed_dir).stdout)
    assert (chain / killed_dir / "metrics.jsonl").read_text() == (chain / whole / "metrics.jsonl").read_text()
    for name in ("best.pt", "last.pt"):
        a, b = (torch.load(chain / r / "checkpoints" / name, weights_only=True)["model"] for r in (killed_dir, whole))
        assert all(torch.equal(a[k], b[k]) for k in b)
    reference = json.loads((chain / whole / "results.json").read_text())
    assert out["test_accuracy"] == reference["test_accuracy"] and out["best_epoch"] == reference["best_epoch"]


@pytest.mark.parametrize(("fault", "code", "name"), [("train_step:7:sigterm,save_last:1:sigint", 143, "SIGTERM"),
                                                     ("train_step:12:sigint", 130, "SIGINT")])  # fmt: skip
def test_a_signal_saves_within_one_step_and_resumes_exactly(chain, fault, code, name):
    """SIGTERM (a scheduler's preemption; here with a Ctrl-C arriving in the middle of the save) or SIGINT
    after step N: a checkpoint at step N, one line naming it and the resume command, exit 143 / 130; the
    resumed run is the uninterrupted one."""
    args = ["train", "naive", "-d", "tiny", "train.epochs=4", "train.batch_size=100", "train.eval_every=1",
            "train.keep_optimizer=true"]  # a finished run's last.pt then keeps the final weights, compared below
    whole, stopped = f"whole-{code}", f"stopped-{code}"
    mmtool(chain, *args, "--run-dir", whole)
    env = {**os.environ, "MMTOOL_RECIPES": str(REPO / "recipes"), "PYTHONPATH": str(REPO), "MMTOOL_FAULT": fault}
    proc = subprocess.run([sys.executable, "-m", "mmtool.cli", *args, "--run-dir", stopped], cwd=chain, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == code
    step = int(fault.split(":")[1])
    epoch, within = step // 5 + 1, step % 5
    last = chain / stopped / "checkpoints" / "last.pt"
    saved_at = Path(stopped) / "checkpoints" / "last.pt"
    line = f"interrupted by {name} at epoch {epoch}, step {within}; saved {saved_at}; resume with: mmtool train"
    assert f"{line} --resume {stopped}" in proc.stderr
    assert "Traceback" not in proc.stderr
    saved = torch.load(last, weights_only=True)
    assert saved["step"] == step and (saved["partial"]["epoch"], saved["partial"]["step"]) == (epoch, within)
    mmtool(chain, "train", "--resume", stopped)
    assert (chain / stopped / "metrics.jsonl").read_text() == (chain / whole / "metrics.jsonl").read_text()
    a, b = (torch.load(chain / r / "checkpoints" / "last.pt", weights_only=True)["model"] for r in (stopped, whole))
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_resume_refuses_other_settings_and_a_second_writer(chain):
    from mmtool.runs import lock_run, unlock_run

    mmtool(chain, "train", "naive", "-d", "tiny", "train.epochs=3", "--run-dir", "short")
    changed = mmtool(chain, "train", "--resume", "short", "optim.lr=0.5", "train.epochs=9", check=False)
    assert changed.returncode == 2 and len(messages(changed.stderr)) == 1
    assert "optim.lr: 0.2 -> 0.5" in changed.stderr and "train.epochs: 3 -> 9" in changed.stderr
    other = mmtool(chain, "train", "umt", "--resume", "short", check=False)
    assert other.returncode == 2 and "method: naive -> umt" in other.stderr
    stage = mmtool(chain, "pretrain-unimodal", "--resume", "short", check=False)
    assert stage.returncode == 2 and "stage: train -> pretrain" in stage.stderr
    lock_run(chain / "short")  # this process holds the run, as a training process would
    try:
        busy = mmtool(chain, "train", "--resume", "short", check=False, process=True)
    finally:
        unlock_run(chain / "short")
    assert busy.returncode == 2 and f"in use by pid {os.getpid()}" in busy.stderr
    assert mmtool(chain, "train", "--resume", "short").returncode == 0  # free again


def test_failures_before_the_first_epoch_leave_no_run_and_bad_checkpoints_are_one_line(chain, tmp_path):
    env_fault = {"MMTOOL_FAULT": "train_step:1:raise"}
    proc = subprocess.run(
        [sys.executable, "-m", "mmtool.cli", "train", "naive", "-d", "tiny", "--run-dir", str(tmp_path / "early")],
        cwd=chain, env={**os.environ, "MMTOOL_RECIPES": str(REPO / "recipes"), "PYTHONPATH": str(REPO), **env_fault},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0 and "injected fault" in proc.stderr
    assert not (tmp_path / "early").exists()
    best = chain / "short" / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:100])
    bad = mmtool(chain, "probe", "-d", "tiny", "--run", "short", "--run-dir", str(tmp_path / "p"), check=False)
    assert bad.returncode == 2 and len(messages(bad.stderr)) == 1
    assert "best.pt is truncated or not a checkpoint" in bad.stderr and "weights_only" not in bad.stderr
    assert not (tmp_path / "p").exists()


def test_ume_verdict_assembles_the_teachers_and_scores_what_decide_reported(chain):
    """paper 000, App. A.2: UME "directly average[s] the uni-modal models' predictions and no additional
    training is added". A linear classifier that cannot learn (lr 1e-9) makes decide pick UME; the run that
    train builds from the verdict trains nothing and scores exactly decide's averaged-predictions accuracy."""
    decide = mmtool(chain, "decide", "-d", "tiny", "--teachers", "pre", "--run-dir", "decide-ume", "probe.lr=1.0e-9")
    verdict = json.loads(decide.stdout)
    assert verdict["verdict"] == "UME"
    before = {m: sha(chain / "pre" / m / "checkpoints" / "best.pt") for m in ("m1", "m2")}
    out = json.loads(mmtool(chain, "train", "--from-decision", "-", "--run-dir", "ume", stdin=decide.stdout).stdout)
    assert out["method"] == "ume" and out["assembled_from"] == "pre"
    assert out["test_accuracy"] == verdict["average_accuracy"]  # exactly: the same computation
    assert {m: a["test"] for m, a in out["unimodal_head_accuracy"].items()} == verdict["unimodal_accuracy"]
    assert not (chain / "ume" / "metrics.jsonl").exists()  # nothing was trained
    assert {m: sha(chain / "pre" / m / "checkpoints" / "best.pt") for m in ("m1", "m2")} == before
    probe = json.loads(mmtool(chain, "probe", "-d", "tiny", "--run", "ume", "--run-dir", "probe-ume").stdout)
    assert set(probe["probes"]) == {"m1", "m2"}  # an ordinary fusion run to every later stage


def test_decide_extracts_features_once_per_teacher(chain):
    first = json.loads(mmtool(chain, "decide", "-d", "tiny", "--teachers", "pre", "--run-dir", "dec-a").stdout)
    cached = sorted((chain / "pre" / "m1" / "features").rglob("*.npy"))
    assert [p.name for p in cached] == ["test-m1.npy", "train-m1.npy", "val-m1.npy"]
    stamps = [p.stat().st_mtime_ns for p in cached]
    again = json.loads(mmtool(chain, "decide", "-d", "tiny", "--teachers", "pre", "--run-dir", "dec-b").stdout)
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # read back, not extracted again
    assert again["mm_linear_accuracy"] == first["mm_linear_accuracy"]


@pytest.mark.parametrize("setting", ["train.precision=fp16", "train.device=cuda"])
def test_impossible_runtime_exits_2_and_leaves_no_run(tmp_path, setting):
    if setting.endswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = mmtool(tmp_path, "train", "naive", "-d", "tiny", setting, "--run-dir", "run", check=False)
    assert proc.returncode == 2
    assert len(messages(proc.stderr)) == 1 and messages(proc.stderr)[0].startswith("error: train.")
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_a_full_disk_is_one_line_and_leaves_complete_checkpoints(chain, tmp_path):
    env = {**os.environ, "MMTOOL_RECIPES": str(REPO / "recipes"), "PYTHONPATH": str(REPO),
           "MMTOOL_FAULT": "write:8:enospc"}  # fmt: skip
    run = tmp_path / "full"
    proc = subprocess.run([sys.executable, "-m", "mmtool.cli", "train", "naive", "-d", "tiny", "train.epochs=30",
                           "train.checkpoint_every=5", "--run-dir", str(run)], cwd=chain, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and len(messages(proc.stderr)) == 1
    assert (
        messages(proc.stderr)[0].startswith(f"error: cannot write {run}") and "No space left on device" in proc.stderr
    )
    assert not list(run.rglob("*.tmp"))
    for ckpt in (run / "checkpoints").glob("*.pt"):
        torch.load(ckpt, weights_only=True)  # every checkpoint on disk is complete


def test_out_of_memory_is_one_line_saying_what_to_lower(chain, tmp_path):
    env = {**os.environ, "MMTOOL_RECIPES": str(REPO / "recipes"), "PYTHONPATH": str(REPO),
           "MMTOOL_FAULT": "train_forward:1:oom"}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "mmtool.cli", "train", "naive", "-d", "tiny", "train.batch_size=64",
                           "--run-dir", str(tmp_path / "oom")], cwd=chain, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 2 and len(messages(proc.stderr)) == 1
    assert messages(proc.stderr)[0].startswith(
        "error: out of memory at epoch 1, step 0 on cpu: lower train.batch_size (now 64)"
    )
    assert not (tmp_path / "oom").exists()  # nothing to resume: the failed start leaves no folder


def test_runs_given_to_a_stage_are_told_apart_by_their_config(chain):
    """One answer to "what kind of run is this": a fusion run is no teacher, an unfinished pretrain run is
    no teacher yet, and utilization needs a fusion run."""
    mmtool(chain, "train", "naive", "-d", "tiny", "train.epochs=2", "--run-dir", "fusion")
    wrong = mmtool(chain, "decide", "-d", "tiny", "--teachers", "fusion", "--run-dir", "d-wrong", check=False)
    assert wrong.returncode == 2
    assert "is a `mmtool train` run (method naive); this needs a `mmtool pretrain-unimodal` run" in wrong.stderr
    util = mmtool(chain, "utilization", "-d", "tiny", "--run", "pre", "--run-dir", "u-wrong", check=False)
    assert util.returncode == 2
    assert "is a `mmtool pretrain-unimodal` run; this needs a `mmtool train` run" in util.stderr
    env = {**os.environ, "MMTOOL_RECIPES": str(REPO / "recipes"), "PYTHONPATH": str(REPO),
           "MMTOOL_FAULT": "train_step:10:kill"}  # fmt: skip
    args = ["pretrain-unimodal", "-d", "tiny", "train.checkpoint_every=5", "train.eval_every=5", "--run-dir", "half"]
    subprocess.run([sys.executable, "-m", "mmtool.cli", *args], cwd=chain, env=env, capture_output=True, timeout=300)
    half = mmtool(chain, "train", "umt", "-d", "tiny", "--teachers", "half", "--run-dir", "u-half", check=False)
    assert half.returncode == 2 and "has not finished" in half.stderr
    assert "mmtool pretrain-unimodal --resume half" in half.stderr
