"""`pretrain-unimodal` with method umt and --teachers: each modality's model distilled from its own teacher
(paper 000, App. A.8), an ordinary pretrain run that decide, probe and `train umt` read as teachers."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tests.e2e.cli import messages
from tests.e2e.test_cli_chain import TINY, load_split, mmtool


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """prep; the teachers; a model per modality distilled from them; an undistilled one with another seed
    (the tiny recipes' 60 epochs: the epoch selected on validation is well into the distillation)."""
    cwd = tmp_path_factory.mktemp("distilled")
    mmtool(cwd, "prep", "synth-gamma", *TINY)
    mmtool(cwd, "pretrain-unimodal", "-d", "tiny", "--run-dir", "teachers")
    mmtool(cwd, "pretrain-unimodal", "-d", "tiny", "train.seed=1", "--run-dir", "plain")
    out = mmtool(cwd, "pretrain-unimodal", "-d", "tiny", "train.seed=1", "method.name=umt",
                 "--teachers", "teachers", "--run-dir", "distilled")  # fmt: skip
    return cwd, json.loads(out.stdout)


def _log(cwd, run: str, m: str) -> list[dict]:
    return [json.loads(line) for line in (cwd / run / m / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_each_model_is_distilled_from_its_own_teacher_and_the_loss_falls(runs):
    cwd, result = runs
    assert result["stage"] == "pretrain" and result["distilled_from"] == "teachers" and result["method"] == "umt"
    assert set(result["modalities"]) == {"m1", "m2"}
    for m, other in (("m1", "m2"), ("m2", "m1")):
        epochs = [row for row in _log(cwd, "distilled", m) if f"train_distill_{m}_loss" in row]
        assert epochs, f"no distill loss logged for {m}"
        assert not any(f"train_distill_{other}_loss" in row for row in _log(cwd, "distilled", m))
        first, last = epochs[0][f"train_distill_{m}_loss"], epochs[-1][f"train_distill_{m}_loss"]
        assert last < first / 2
        # the logged total is CE + the weighted MSE term
        assert epochs[-1]["train_loss"] == pytest.approx(epochs[-1]["train_task_loss"] + last, rel=1e-4)
    assert not any("distill" in key for row in _log(cwd, "plain", "m1") for key in row)


def test_distilled_features_are_closer_to_the_teachers_than_an_undistilled_model(runs):
    from mmtool.engine.models_io import unimodal_models
    from mmtool.runs import Run

    cwd, _ = runs
    models = {name: unimodal_models(Run.open(cwd / name, key="run")) for name in ("teachers", "plain", "distilled")}
    test = load_split(cwd, "test")
    with torch.no_grad():
        for m in ("m1", "m2"):
            feats = {k: ms[m].eval()({m: test.inputs[m]})["features"][m] for k, ms in models.items()}
            distilled = F.mse_loss(feats["distilled"], feats["teachers"]).item()
            plain = F.mse_loss(feats["plain"], feats["teachers"]).item()
            assert distilled < plain / 3, (m, distilled, plain)


def test_decide_probe_and_umt_take_the_distilled_run_as_teachers(runs):
    cwd, _ = runs
    decided = json.loads(mmtool(cwd, "decide", "-d", "tiny", "--teachers", "distilled", "--run-dir", "dec").stdout)
    assert decided["verdict"] in ("UMT", "UME") and 0 <= decided["mm_linear_accuracy"] <= 100
    probed = json.loads(mmtool(cwd, "probe", "-d", "tiny", "--run", "distilled", "probe.epochs=10").stdout)
    for m in ("m1", "m2"):  # linear evaluation reports train accuracy beside test (paper 001, Table 1)
        assert set(probed["probes"][m]) >= {"train_accuracy", "val_accuracy", "test_accuracy"}
        assert 0 <= probed["probes"][m]["train_accuracy"] <= 100
    trained = mmtool(cwd, "train", "umt", "-d", "tiny", "train.epochs=5", "--teachers", "distilled")
    assert json.loads(trained.stdout)["method"] == "umt"


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["method.name=gblending"], "method.name"),
        (["method.name=umt"], "--teachers"),
        (["--teachers", "teachers"], "teachers"),
        (["method.name=umt", "method.modalities=[m1]", "--teachers", "teachers"], "method.modalities"),
    ],
)
def test_one_line_refusals_before_any_run_folder(runs, args, key):
    cwd, _ = runs
    out = mmtool(cwd, "pretrain-unimodal", "-d", "tiny", *args, "--run-dir", "refused", check=False)
    assert out.returncode == 2 and len(messages(out.stderr)) == 1 and key in out.stderr
    assert not (cwd / "refused").exists()
