"""Distributed data parallel through the real CLI: ``torchrun --nproc_per_node 2 -m mmtool train ...`` on
CPU (gloo) trains to the weights of one process, for plain fusion, distillation from frozen teachers,
auxiliary heads, gradient modulation and alternating uni-modal steps; only rank 0 writes."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.e2e.cli import run_cli

REPO = Path(__file__).resolve().parents[2]
# keep_optimizer: a finished run's last.pt keeps its final weights, which the tests compare
EPOCHS = ["train.epochs=10", "train.eval_every=5", "train.checkpoint_every=0", "train.keep_optimizer=true"]

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or shutil.which("torchrun") is None, reason="needs torch.distributed"
)


def env() -> dict[str, str]:
    return {**os.environ, "MMTOOL_RECIPES": str(REPO / "recipes"), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def launch(
    cwd: Path, *args: str, ranks: int, extra: dict | None = None, ok: bool = True
) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node RANKS ARGS`` (or plain python for one rank)."""
    head = ["torchrun", "--standalone", f"--nproc_per_node={ranks}"] if ranks > 1 else [sys.executable]
    proc = subprocess.run([*head, *args], cwd=cwd, env={**env(), **(extra or {})}, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert not ok or proc.returncode == 0, proc.stderr[-3000:]
    return proc


def recipe(method: str) -> list[str]:
    if method in ("naive", "umt"):
        return ["-d", "tiny", *(["--teachers", "pre"] if method == "umt" else [])]
    return ["-r", str(REPO / f"recipes/synth-gamma/{method}.yaml"), "data.n=600"]


def commands(prefix: str, runs: dict[str, list[str]]) -> list[list[str]]:
    return [["train", method.split(":")[0], *recipe(method.split(":")[0]), *EPOCHS, *extra,
             "--run-dir", f"{prefix}-{method}"] for method, extra in runs.items()]  # fmt: skip


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("ddp")
    run_cli(cwd, "prep", "synth-gamma", "data.n=600")
    run_cli(cwd, "pretrain-unimodal", "-d", "tiny", "train.epochs=5", "--run-dir", "pre")
    return cwd


def analyses(prefix: str) -> list[list[str]]:
    """decide on the teachers and a probe of the UMT run, as a second stage of the same launch."""
    return [["decide", "-d", "tiny", "--teachers", "pre", "--run-dir", f"{prefix}-decide"],
            ["probe", "-d", "tiny", "--run", f"{prefix}-umt", "--run-dir", f"{prefix}-probe"]]  # fmt: skip


RUNS = {"naive": [], "umt": [], "aux_ce": [], "ogm_ge": [], "mla": [], "naive:batch": ["train.batch_size=100"]}


@pytest.fixture(scope="module")
def launched(work):
    """The runs compared by the module's tests: in one process (this one), then under two gloo ranks in
    one launch of the same CLI (mmtool.chain: each torchrun start-up costs seconds). The documented
    command itself, ``torchrun ... -m mmtool train``, is the SIGTERM test's launch and its resume."""
    for command in commands("one", RUNS) + analyses("one"):
        run_cli(work, *command)
    launch(work, "-m", "mmtool.chain", *[shlex.join(c) for c in commands("two", RUNS) + analyses("two")], ranks=2)
    return work


def test_two_gloo_ranks_train_the_weights_of_one_process(launched):
    """Full-batch SGD: each rank takes half of the training split and DDP averages the gradients, which
    is the gradient of the whole split; with a global batch of 100 (50 per rank) every step sees the
    samples of the one-process step. Five methods, final weights within 1e-4; decide and probe, whose
    features are extracted by shards and gathered, reach the one-process numbers."""
    work, runs = launched, RUNS
    for method in runs:
        one, two = final_weights(work / f"one-{method}"), final_weights(work / f"two-{method}")
        assert one.keys() == two.keys()
        worst = max(float((one[k] - two[k]).abs().max()) for k in one)
        assert worst < 1e-4, f"{method}: weights differ by {worst}"
        # rank 0 alone wrote: one record per evaluation, one env.json saying two processes
        records = (work / f"two-{method}" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(r)["epoch"] for r in records] == [5, 10]
        assert json.loads((work / f"two-{method}" / "env.json").read_text())["world_size"] == 2
    one_naive = json.loads((work / "one-naive" / "results.json").read_text())
    two_naive = json.loads((work / "two-naive" / "results.json").read_text())
    assert two_naive["test_accuracy"] == pytest.approx(one_naive["test_accuracy"])  # the gathered test split
    one_decide, two_decide = (json.loads((work / f"{p}-decide" / "results.json").read_text()) for p in ("one", "two"))
    assert two_decide["verdict"] == one_decide["verdict"]
    for key in ("mm_linear_accuracy", "average_accuracy"):  # within one test sample (float noise of batching)
        assert two_decide[key] == pytest.approx(one_decide[key], abs=1.0)
    one_probe, two_probe = (json.loads((work / f"{p}-probe" / "results.json").read_text()) for p in ("one", "two"))
    for m, scores in one_probe["probes"].items():
        assert two_probe["probes"][m]["test_accuracy"] == pytest.approx(scores["test_accuracy"], abs=1.0)


def test_sigterm_to_one_rank_stops_both_at_the_same_step_and_the_resume_is_exact(launched):
    """A scheduler's SIGTERM reaching rank 1 only, after its 7th step: the ranks agree to stop there, rank 0
    saves, one line names the checkpoint and the torchrun command that resumes; the resumed run ends as the
    uninterrupted two-rank run of the same recipe (two-naive:batch) did: same metrics, same weights."""
    work = launched
    args = ["train", "naive", *recipe("naive"), *EPOCHS, "train.batch_size=100"]
    stopped = launch(work, "-m", "mmtool", *args, "--run-dir", "stopped-2", ranks=2, ok=False,
                     extra={"MMTOOL_FAULT": "train_step:7:sigterm", "MMTOOL_FAULT_RANK": "1"})  # fmt: skip
    assert stopped.returncode != 0
    lines = [line for line in stopped.stderr.splitlines() if line.startswith("interrupted by SIGTERM")]
    assert lines == [
        "interrupted by SIGTERM at epoch 2, step 2; saved stopped-2/checkpoints/last.pt; "
        "resume with: torchrun --nproc_per_node 2 -m mmtool train --resume stopped-2"
    ]
    saved = torch.load(work / "stopped-2" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == 7 and len(saved["rng"]) == 2  # every rank's random state
    resumed = launch(work, "-m", "mmtool", "train", "--resume", "stopped-2", ranks=2)
    assert len(json.loads(resumed.stdout)["summary"]) == 1  # one rank printed the result
    whole, resumed = (work / r / "metrics.jsonl" for r in ("two-naive:batch", "stopped-2"))
    assert resumed.read_text() == whole.read_text()
    a, b = final_weights(work / "stopped-2"), final_weights(work / "two-naive:batch")
    assert all(torch.equal(a[k], b[k]) for k in b)
