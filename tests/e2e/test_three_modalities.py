"""Three modalities end to end through the real CLI on ``synth-tri`` (mmtool.data.tri): pretrain-unimodal (three
models) -> decide -> train naive, umt, mla -> ensemble -> utilization -> probe, with the numbers the stages
report recomputed here from the checkpoints on disk, and the two-modality-only methods refused before any
run folder exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.e2e.cli import REPO, messages, run_cli

MODS = ("m1", "m2", "m3")
# 600 samples: 432 train, 48 val, 120 test; one hidden layer of 32 units; few epochs
SMALL = ["data.n=600", "model.hidden=[32]", "train.epochs=40", "train.eval_every=5", "train.checkpoint_every=0",
         "probe.epochs=60"]  # fmt: skip


def mmtool(cwd: Path, *args: str, check: bool = True):
    return run_cli(cwd, *args, check=check)


def result(cwd: Path, *args: str) -> dict:
    return json.loads(mmtool(cwd, *args, "-d", "synth-tri", *SMALL).stdout)


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("tri")
    out = result(cwd, "pretrain-unimodal", "--run-dir", "pre")
    assert sorted(out["modalities"]) == list(MODS)
    return cwd


def test_split(cwd: Path, split: str):
    from mmtool.data import load_dataset
    from mmtool.data_config import DataConfig

    return load_dataset(DataConfig(name="synth-tri", root=str(cwd / "data"), n=600)).splits[split]


test_split.__test__ = False  # a helper, not a test


def hidden(sd: dict, m: str, x: torch.Tensor) -> torch.Tensor:
    """The one-layer MLP encoder of modality m: ReLU(W x + b), (N, 32)."""
    return torch.relu(x @ sd[f"encoders.{m}.net.0.weight"].T + sd[f"encoders.{m}.net.0.bias"])


def acc(logits: torch.Tensor, target: torch.Tensor) -> float:
    return (logits.argmax(1) == target).float().mean().item() * 100


def test_decide_on_three_encoders_recomputed(chain):
    for m in MODS:
        assert (chain / "pre" / m / "checkpoints" / "best.pt").is_file()
    out = result(chain, "decide", "--teachers", "pre", "--run-dir", "decide")
    assert sorted(out["unimodal_accuracy"]) == sorted(out["split_classifier_accuracy"]) == list(MODS)
    test = test_split(chain, "test")
    feats, probs = {}, []
    for m in MODS:
        sd = torch.load(chain / "pre" / m / "checkpoints" / "best.pt", weights_only=True)["model"]
        feats[m] = hidden(sd, m, test.inputs[m])
        logits = feats[m] @ sd[f"head.proj.{m}.weight"].T + sd["head.bias"]
        probs.append(F.softmax(logits, dim=1))
        assert out["unimodal_accuracy"][m] == pytest.approx(acc(logits, test.target), abs=1e-3)
    assert out["average_accuracy"] == pytest.approx(acc(sum(probs) / 3, test.target), abs=1e-3)
    clf = torch.load(chain / "decide" / "mm_linear" / "checkpoints" / "best.pt", weights_only=True)["model"]
    blocks = [clf[f"head.proj.{m}.weight"] for m in MODS]
    assert sum(w.shape[1] for w in blocks) == 3 * 32  # the multi-modal linear layer reads M * D features
    z = sum(feats[m] @ w.T for m, w in zip(MODS, blocks, strict=True)) + clf["head.bias"]
    assert out["mm_linear_accuracy"] == pytest.approx(acc(z, test.target), abs=1e-3)
    assert out["verdict"] == ("UMT" if out["mm_linear_accuracy"] > out["average_accuracy"] else "UME")

    ens = result(chain, "ensemble", "--teachers", "pre")
    assert sorted(ens["test_member_accuracy"]) == list(MODS) and ens["weights"] == pytest.approx([1 / 3] * 3)
    assert ens["test_accuracy"] == pytest.approx(out["average_accuracy"], abs=1e-3)


def test_mla_cycles_over_three_modalities_and_fuses_three(chain):
    # 432 training samples in batches of 144: three updates per epoch, one per modality (m_t = t mod 3)
    out = result(chain, "train", "mla", "train.batch_size=144", "--run-dir", "mla")
    rows = [json.loads(line) for line in (chain / "mla" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(5, 41, 5))
    for row in rows:
        ce = [row[f"mla_ce_{m}"] for m in MODS]
        assert row["train_task_loss"] == pytest.approx(sum(ce) / 3, rel=1e-5)  # equal batches, one each
    test = test_split(chain, "test")
    sd = torch.load(chain / "mla" / "checkpoints" / "best.pt", weights_only=True)["model"]
    logits = [hidden(sd, m, test.inputs[m]) @ sd["head.linear.weight"].T + sd["head.linear.bias"] for m in MODS]
    logp = torch.stack([F.log_softmax(z, 1) for z in logits])  # (3, N, C)
    weights = torch.softmax((logp.exp() * logp).sum(-1), dim=0)  # softmax of minus the entropies, Eq. 7-8
    fused = (weights.unsqueeze(-1) * torch.stack(logits)).sum(0)
    assert out["test_accuracy"] == pytest.approx(acc(fused, test.target), abs=1e-3)


def test_qmf_weighs_three_modalities_by_their_energy(chain):
    out = result(chain, "train", "qmf", "--run-dir", "qmf")
    logged = json.loads((chain / "qmf" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {f"train_rank_{m}_loss" for m in MODS} <= set(logged)  # a ranking term per modality
    test = test_split(chain, "test")
    sd = torch.load(chain / "qmf" / "checkpoints" / "best.pt", weights_only=True)["model"]
    logits = {m: hidden(sd, m, test.inputs[m]) @ sd[f"head.fc.{m}.weight"].T + sd[f"head.fc.{m}.bias"] for m in MODS}
    fused = sum(torch.logsumexp(z, dim=1, keepdim=True) / 10.0 * z for z in logits.values())  # QMF's energy, T = 10
    assert out["test_accuracy"] == pytest.approx(acc(fused, test.target), abs=1e-3)
    for m in MODS:
        assert out["unimodal_head_accuracy"][m]["test"] == pytest.approx(acc(logits[m], test.target), abs=1e-3)


def test_naive_umt_utilization_and_probe_per_modality(chain):
    naive = result(chain, "train", "naive", "--run-dir", "naive")
    umt = result(chain, "train", "umt", "--teachers", "pre", "--run-dir", "umt")
    logged = json.loads((chain / "umt" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {f"train_distill_{m}_loss" for m in MODS} <= set(logged)
    util = result(chain, "utilization", "--run", "naive")
    assert util["accuracy"] == pytest.approx(naive["test_accuracy"], abs=1e-3)
    assert sorted(util["utilization"]) == list(MODS) and "d_util" not in util
    for m in MODS:
        rest = ",".join(o for o in MODS if o != m)
        expected = (util["accuracy"] - util[f"accuracy_without_{m}"]) / util["accuracy"]
        # the accuracies in results.json have 4 decimals
        assert util[f"u({m}|{rest})"] == util["utilization"][m] == pytest.approx(expected, abs=1e-5)
    assert (chain / "runs").is_dir()
    probe = result(chain, "probe", "--run", "umt")
    assert sorted(probe["probes"]) == list(MODS)
    assert all(0 <= p["test_accuracy"] <= 100 for p in probe["probes"].values())
    assert 0 <= umt["test_accuracy"] <= 100


def test_two_modality_only_option_refused_in_one_line_before_a_run_folder(chain):
    proc = mmtool(chain, "train", "-r", str(REPO / "recipes" / "digits-colored/balanced.yaml"), "data.name=synth-tri",
                  "data.n=600", "method.variant=code", "method.bug_compatible=true", "--run-dir", "refused",
                  check=False)  # fmt: skip
    assert proc.returncode == 2
    lines = messages(proc.stderr)
    what = "method 'balanced' with method.bug_compatible"
    assert len(lines) == 1 and what in lines[0] and "two modalities" in lines[0] and "['m1', 'm2', 'm3']" in lines[0]
    assert not (chain / "refused").exists()
