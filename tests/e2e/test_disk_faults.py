"""A full disk, a read-only folder, a quota or a size limit on every write path of a run, through the real CLI.

Every refused write is one line naming the path and what to do, exit 2, a ``(failed)`` outcome (recorded in
failed.json when the run folder is kept), and never leaves the run unresumable: once the fault is gone,
``--resume`` finishes it. Faults are injected with ``MMTOOL_FAULT`` (see mmtool/faults.py) rather than with
file permissions, which do not stop a process running as root.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from mmtool.engine.checkpoint import load_checkpoint
from mmtool.files import MetricsWriter
from mmtool.runs import LAST
from tests.e2e.cli import messages, run_cli

TINY = ["data.n=600"]
TRAIN = ["train", "naive", "-d", "tiny", "train.eval_every=1", "train.checkpoint_every=3"]


def train(*extra: str, epochs: int = 10) -> list[str]:
    """``mmtool train`` of naive fusion on the tiny recipe: ``epochs`` epochs, each validated, a checkpoint
    every 3."""
    return [*TRAIN, f"train.epochs={epochs}", *extra]


@pytest.fixture(scope="module")
def cwd(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("disk")
    run_cli(path, "prep", "synth-gamma", *TINY)
    return path


def failing(cwd: Path, fault: str, *args: str) -> tuple[list[str], list[str]]:
    """Run ``mmtool ARGS`` under ``fault``; check exit 2 and no traceback; return (messages, run: lines)."""
    proc = run_cli(cwd, *args, env={"MMTOOL_FAULT": fault}, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    runs = [line for line in proc.stderr.splitlines() if line.startswith("run: ")]
    progress = re.compile(r"^[\w -]+: epoch \d+/\d+ ")  # `naive: epoch 10/10 (100%) ...`: not an error line
    return [line for line in messages(proc.stderr) if not progress.match(line)], runs


def finishes(cwd: Path, run: str) -> dict:
    """``train --resume RUN`` succeeds and completes the run; its results."""
    out = json.loads(run_cli(cwd, "train", "--resume", run).stdout)
    assert (cwd / run / "results.json").is_file() and not (cwd / run / "failed.json").exists()
    epochs = [r["epoch"] for r in MetricsWriter(cwd / run / "metrics.jsonl").read()]
    assert epochs == list(range(1, 11))  # every epoch once: the failed attempt's extra records are gone
    return out


# (name, fault, extra args, what the line names, what it says to do): the run is kept (it has progress)
KEPT = [
    ("metrics", "metrics_write:4:enospc", [], "metrics.jsonl", "free space"),
    ("csv", "logger_write:2:enospc", ["train.loggers=csv"], "metrics.csv", "free space"),
    ("tensorboard", "logger_write:2:erofs", ["train.loggers=tensorboard"], "tensorboard", "writable"),
    ("best", "write_best.pt:2:enospc", ["optim.lr=1.0"], "checkpoints/best.pt", "free space"),  # epoch 8
    ("last", "save_last:2:enospc", [], "checkpoints/last.pt", "free space"),
    ("last-efbig", "write_last.pt:2:efbig", [], "checkpoints/last.pt", "ulimit -f"),
    ("rotation", "checkpoint_rotate:1:eacces", [], "checkpoints/last.prev.pt", "write permission"),
    ("complete", "write_COMPLETE:1:edquot", [], "checkpoints/COMPLETE", "quota"),
    ("plots", "plot_write:1:enospc", [], "plots/curves.png", "free space"),
    ("results", "write_results.json:1:erofs", [], "results.json", "writable"),
]


@pytest.mark.parametrize(("name", "fault", "extra", "where", "fix"), KEPT, ids=[k[0] for k in KEPT])
def test_a_refused_write_is_one_line_and_the_run_resumes(cwd, name, fault, extra, where, fix):
    if name == "tensorboard":
        pytest.importorskip("tensorboard")
    run = f"kept-{name}"
    lines, runs = failing(cwd, fault, *train(*extra), "--run-dir", run)
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write {Path(run) / where}: "), lines
    assert fix in lines[0] and f"then resume with `mmtool train --resume {run}`" in lines[0]
    assert runs[-1] == f"run: {run} (failed)"
    assert json.loads((cwd / run / "failed.json").read_text())["error"] == lines[0].removeprefix("error: ")
    assert not list((cwd / run).rglob("*.tmp"))
    for ckpt in (cwd / run / "checkpoints").glob("*.pt"):
        load_checkpoint(ckpt)  # every checkpoint left is complete
    finishes(cwd, run)


# a start that fails before its first epoch leaves nothing behind: the line says to run the command again
START = [
    ("lock", "lock:1:erofs", ".lock", "writable"),
    ("config", "write_config.yaml:1:enospc", "config.yaml", "free space"),
    ("env", "write_env.json:1:edquot", "env.json", "quota"),
    ("sessions", "write_sessions.json:1:enospc", "sessions.json", "free space"),
]


@pytest.mark.parametrize(("name", "fault", "where", "fix"), START, ids=[s[0] for s in START])
def test_a_refused_write_while_starting_leaves_nothing(cwd, name, fault, where, fix):
    run = f"start-{name}"
    lines, runs = failing(cwd, fault, *train(), "--run-dir", run)
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write {Path(run) / where}: "), lines
    assert fix in lines[0] and lines[0].endswith("then run the command again")
    assert runs == [f"run: {run} (failed, nothing kept)"]
    assert not (cwd / run).exists()
    run_cli(cwd, *train(epochs=2), "--run-dir", run)  # the same command works once the disk does


def test_a_pretrain_run_names_its_modality_file_and_its_own_resume(cwd):
    run = "pre-full"
    args = ["pretrain-unimodal", "-d", "tiny", "train.epochs=4", "train.eval_every=1", "train.checkpoint_every=2"]
    lines, runs = failing(cwd, "metrics_write:6:enospc", *args, "--run-dir", run)  # m2's second epoch
    assert lines == [f"error: cannot write {Path(run) / 'm2' / 'metrics.jsonl'}: No space left on device; free space "
                     f"on its disk, then resume with `mmtool pretrain-unimodal --resume {run}`"]  # fmt: skip
    assert runs[-1] == f"run: {run} (failed)" and (cwd / run / "failed.json").is_file()
    run_cli(cwd, "pretrain-unimodal", "--resume", run)
    for m in ("m1", "m2"):
        assert [r["epoch"] for r in MetricsWriter(cwd / run / m / "metrics.jsonl").read()] == [1, 2, 3, 4]


def test_a_runs_root_without_write_permission_is_one_line(cwd):
    lines, runs = failing(cwd, "run_mkdir:1:eacces", *train("runs_root=denied"))
    assert lines == [f"error: cannot create denied/train: Permission denied; give yourself write permission on {cwd}, "
                     "then run the command again"]  # fmt: skip
    assert runs == [] and not (cwd / "denied").exists()  # no run folder was made: there is no run to name


def test_a_read_only_run_folder_on_resume_is_one_line(cwd):
    run = "readonly"
    failing(cwd, "save_last:2:enospc", *train(), "--run-dir", run)
    lines, _ = failing(cwd, "lock:1:erofs", "train", "--resume", run)
    assert lines == [f"error: cannot write {Path(run) / '.lock'}: Read-only file system; make {run} writable (its file "
                     f"system is read-only), then resume with `mmtool train --resume {run}`"]  # fmt: skip
    lines, _ = failing(cwd, "write_metrics.jsonl:1:enospc", "train", "--resume", run)  # repairing metrics.jsonl
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write {Path(run) / 'metrics.jsonl'}: No space")
    finishes(cwd, run)


def test_a_torn_metrics_record_never_blocks_resume(cwd):
    """A full disk in the middle of a metrics.jsonl record (half of it written): the run fails with one line,
    and --resume drops the partial record and finishes; so does a run whose torn line was left otherwise."""
    run = "torn"
    failing(cwd, "metrics_write:5:enospc", *train(), "--run-dir", run)
    text = (cwd / run / "metrics.jsonl").read_text()
    assert not text.endswith("\n") and text.count("\n") == 4  # epochs 1-4, then half of epoch 5's record
    assert [r["epoch"] for r in MetricsWriter(cwd / run / "metrics.jsonl").read()] == [1, 2, 3, 4]
    finishes(cwd, run)
    run = "torn-by-hand"
    failing(cwd, "save_last:2:enospc", *train(), "--run-dir", run)
    with (cwd / run / "metrics.jsonl").open("a") as fh:
        fh.write('{"epoch": 7, "lr": 0.')
    assert [r["epoch"] for r in MetricsWriter(cwd / run / "metrics.jsonl").read()] == list(range(1, 7))
    finishes(cwd, run)
    assert (cwd / run / "metrics.jsonl").read_text().endswith("}\n")


def test_a_full_disk_while_saving_last_keeps_the_previous_last_resumable(cwd):
    run = "save-last"
    failing(cwd, "save_last:2:enospc", *train("train.keep_last=3"), "--run-dir", run)
    ckpts = cwd / run / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("last*.pt")) == ["last.pt"]  # nothing was rotated away
    assert load_checkpoint(ckpts / LAST)["epoch"] == 3
    failing(cwd, "checkpoint_rotate:2:erofs", "train", "--resume", run)  # epoch 6 saved; epoch 9's rotation fails
    assert {p.name: load_checkpoint(p)["epoch"] for p in ckpts.glob("last*.pt")} == {"last.pt": 6, "last.prev.pt": 3}
    finishes(cwd, run)


def test_a_non_finite_loss_is_one_line_and_recorded(cwd):
    run = "nan"
    proc = run_cli(cwd, *train("optim.lr=1e30"), "--run-dir", run, check=False, process=True)  # as a shell sees it
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert messages(proc.stderr) == [
        "error: non-finite loss at epoch 2, step 0 in task_loss (task_loss=nan, loss=nan); lower optim.lr or check "
        "the inputs"
    ]
    assert f"run: {run} (failed)" in proc.stderr.splitlines()  # epoch 1 was logged: the run is kept
    assert json.loads((cwd / run / "failed.json").read_text())["error"].startswith("non-finite loss at epoch 2")
    assert json.loads((cwd / run / "sessions.json").read_text())[-1]["outcome"] == "failed"


def test_a_damaged_best_checkpoint_does_not_block_resume(cwd):
    run = "bad-best"
    failing(cwd, "save_last:2:enospc", *train(), "--run-dir", run)
    best = cwd / run / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:100])
    proc = run_cli(cwd, "train", "--resume", run)
    assert f"warning: checkpoint {Path(run) / 'checkpoints' / 'best.pt'} is truncated" in proc.stderr
    assert "writing it again from the best weights kept in last.pt" in proc.stderr
    load_checkpoint(best)


@pytest.mark.parametrize("keep", [False, True])
def test_a_damaged_best_checkpoint_of_a_finished_run_is_named_or_rebuilt(cwd, keep):
    run = f"done-bad-best-{keep}"
    run_cli(cwd, *train(f"train.keep_optimizer={str(keep).lower()}"), "--run-dir", run)
    best = cwd / run / "checkpoints" / "best.pt"
    intact = load_checkpoint(best)["model"]
    best.write_bytes(b"")
    proc = run_cli(cwd, "train", "--resume", run, check=False)
    if keep:  # last.pt still holds the best weights: best.pt is written again
        assert proc.returncode == 0 and "writing it again from the best weights kept in last.pt" in proc.stderr
        assert all(torch.equal(load_checkpoint(best)["model"][k], v) for k, v in intact.items())
        return
    assert proc.returncode == 2
    assert messages(proc.stderr) == [
        f"error: checkpoint {Path(run) / 'checkpoints' / 'best.pt'} is empty (a save that never finished); "
        "`--resume` writes it again from last.pt where that still holds the best weights (an unfinished run, or one "
        "with train.keep_optimizer); otherwise train again or restore the file"
    ]


def test_every_last_checkpoint_damaged_refuses_to_restart_silently(cwd):
    run = "all-damaged"
    failing(cwd, "save_last:3:enospc", *train(), "--run-dir", run)
    ckpts = cwd / run / "checkpoints"
    (ckpts / "last.pt").write_bytes(b"")
    (ckpts / "last.prev.pt").write_bytes(b"\x00junk")
    before = (cwd / run / "metrics.jsonl").read_text()
    lines, runs = failing(cwd, "", "train", "--resume", run)
    assert lines == [f"error: every resumable checkpoint in {Path(run) / 'checkpoints'} is damaged (last.pt, "
                     f"last.prev.pt); start a new run, or move them out of {Path(run) / 'checkpoints'} to restart "
                     "this run from epoch 0"]  # fmt: skip
    assert runs[-1] == f"run: {run} (failed)" and (cwd / run / "metrics.jsonl").read_text() == before
    for name in ("last.pt", "last.prev.pt"):
        (ckpts / name).rename(cwd / name)
    finishes(cwd, run)  # moved away on purpose: the run restarts from epoch 0


@pytest.mark.parametrize("keep", [False, True])
def test_a_finished_run_keeps_a_small_last_checkpoint(cwd, keep):
    run = f"small-{keep}"
    run_cli(cwd, *train("train.keep_last=3", f"train.keep_optimizer={str(keep).lower()}"), "--run-dir", run)
    ckpts = cwd / run / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("*.pt")) == ["best.pt", "last.pt"]  # rotations removed
    last = load_checkpoint(ckpts / LAST)
    if keep:
        assert {"optimizer", "scheduler", "method", "rng", "best_model"} <= set(last)
    else:
        assert set(last) == {"epoch", "step", "spec", "best_epoch", "best_val", "complete"}
        assert last["epoch"] == 10 and (ckpts / LAST).stat().st_size < 20_000  # counters only
    again = json.loads(run_cli(cwd, "train", "--resume", run).stdout)  # complete: only scored again
    assert again["test_accuracy"] == json.loads((cwd / run / "results.json").read_text())["test_accuracy"]
    probe = json.loads(run_cli(cwd, "probe", "-d", "tiny", "--run", run, "probe.epochs=2", "--run-dir",
                               f"probe-{run}").stdout)  # fmt: skip
    assert set(probe["probes"]) == {"m1", "m2"}


def test_a_feature_cache_that_cannot_be_written_is_only_no_cache(cwd):
    run_cli(cwd, *train(epochs=2), "--run-dir", "cached")
    args = ["probe", "-d", "tiny", "--run", "cached", "probe.epochs=2"]
    proc = run_cli(cwd, *args, "--run-dir", "probe-a", env={"MMTOOL_FAULT": "write_train-m1.npy:1:erofs"})
    assert "warning: features not cached (cannot write" in proc.stderr and "Read-only file system" in proc.stderr
    assert not list((cwd / "cached" / "features").rglob("train.json"))
    run_cli(cwd, *args, "--run-dir", "probe-b")
    assert list((cwd / "cached" / "features").rglob("train.json"))


def test_metrics_hold_null_for_numbers_that_are_not_finite(tmp_path):
    from mmtool.analysis.plots import training_curves

    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    writer.write({"epoch": 1, "train_loss": math.nan, "val_loss": math.inf, "val_accuracy": 50.0, "d_speed": -math.inf})
    writer.write({"epoch": 2, "train_loss": 0.5, "val_loss": 0.7, "val_accuracy": math.nan, "best_epoch": 1})
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert [json.loads(line) for line in text.splitlines()] == writer.read()
    assert writer.read()[0] == {"epoch": 1, "train_loss": None, "val_loss": None, "val_accuracy": 50.0, "d_speed": None}
    assert training_curves(writer.path, tmp_path / "curves.png", "nulls").stat().st_size > 0


def test_a_damaged_metrics_line_before_the_last_is_one_line(tmp_path):
    from mmtool.errors import UserError

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epo\n{"epoch": 3}\n')
    with pytest.raises(UserError, match=r"metrics\.jsonl: line 2 is not JSON .*; delete that line"):
        MetricsWriter(path).read()
