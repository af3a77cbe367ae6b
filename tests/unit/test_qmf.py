"""QMF: energy weights, the ranking regulariser on each sample's loss history, resume, and a CLI run."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmtool.data import Batch
from mmtool.engine.checkpoint import load_checkpoint
from mmtool.engine.loop import fit
from mmtool.engine.runtime import Runtime
from mmtool.errors import UserError
from mmtool.methods import MethodContext, build_method
from mmtool.methods.qmf import normalised, rank_loss
from mmtool.models.fusion_heads import QMFHead, energy, energy_confidence
from mmtool.runs import BEST
from tests.unit.test_methods_zoo import Killed, KilledAt

TWO = ("m1", "m2")


def released_rank_loss(confidence: torch.Tensor, idx: torch.Tensor, correctness: torch.Tensor) -> torch.Tensor:
    """The authors' ``rank_loss`` and ``History.get_target_margin`` (QMF utils/crl_utils.py, MLA main.py), in
    torch: pairs (i, i+1), target and margin from the min-max normalised history, ``MarginRankingLoss(0)``."""
    c = (correctness - correctness.min()) / (correctness.max() - correctness.min())
    c1, c2 = c[idx], c[torch.roll(idx, -1)]
    target = (c1 > c2).float() - (c1 < c2).float()
    margin = (c1 - c2).abs()
    nonzero = target.clone()
    nonzero[nonzero == 0] = 1
    second = torch.roll(confidence, -1) + (margin / nonzero).reshape(-1, 1)
    return nn.MarginRankingLoss(margin=0.0)(confidence, second, -target.reshape(-1, 1))


def test_rank_loss_equals_the_released_code():
    g = torch.Generator().manual_seed(0)
    correctness = torch.rand(20, generator=g, dtype=torch.float64) * 5
    correctness[3] = correctness[7]  # a tie: target 0
    idx = torch.tensor([3, 7, 0, 12, 5, 19, 8, 1])
    confidence = torch.randn(8, 1, generator=g)
    ours = rank_loss(confidence.squeeze(1), normalised(correctness, idx))
    torch.testing.assert_close(ours, released_rank_loss(confidence, idx, correctness).float())


def test_rank_loss_on_a_constructed_pair():
    # sample 0 has the larger accumulated loss (c = 1 vs 0) yet is the more confident one, by 1.9 > 1
    torch.testing.assert_close(rank_loss(torch.tensor([2.0, 0.1]), torch.tensor([1.0, 0.0])), torch.tensor(0.9))
    # within the gap of the histories: no penalty
    assert rank_loss(torch.tensor([0.5, 0.1]), torch.tensor([1.0, 0.0])) == 0
    # the less-lossy sample the more confident: no penalty
    assert rank_loss(torch.tensor([0.1, 2.0]), torch.tensor([1.0, 0.0])) == 0
    # equal histories: nothing to rank
    assert rank_loss(torch.tensor([3.0, -3.0]), torch.tensor([0.5, 0.5])) == 0
    assert torch.equal(normalised(torch.full((4,), 2.0), torch.tensor([0, 1])), torch.zeros(2, dtype=torch.float32))


def test_lower_energy_gets_more_weight():
    sure = torch.tensor([[6.0, 0.0, 0.0]])  # confident logits: low energy
    vague = torch.tensor([[0.1, 0.0, 0.0]])
    assert energy(sure) < energy(vague)
    torch.testing.assert_close(energy_confidence(sure), torch.logsumexp(sure, 1) / 10)
    head = QMFHead({"m1": 3, "m2": 3}, 3)
    with torch.no_grad():
        for m in TWO:  # identity classifiers: z_m = f_m
            head.fc[m].weight.copy_(torch.eye(3))
            head.fc[m].bias.zero_()
    out = head({"m1": sure, "m2": vague})
    w1, w2 = energy_confidence(sure), energy_confidence(vague)
    assert w1 > w2
    torch.testing.assert_close(out["logits"], w1[:, None] * sure + w2[:, None] * vague)


def test_training_step_adds_the_history_regulariser(make_model, alpha_splits):
    model, _ = make_model(head="qmf")
    split = alpha_splits["train"]
    ids = torch.arange(50, 80)
    batch = Batch({m: x[:30] for m, x in split.inputs.items()}, split.target[:30], ids)
    method = build_method("qmf", {"rank_weight": 0.5}, MethodContext(num_classes=2, modalities=TWO))
    method.setup(model)
    earlier = {m: torch.linspace(0.0, 3.0, 100, dtype=torch.float64) for m in TWO}  # what past epochs left
    method.load_state_dict({"history": {m: h.clone() for m, h in earlier.items()}})
    losses = method.training_step(model, batch)
    with torch.no_grad():
        out = model(batch.inputs)
    assert set(losses) == {"task_loss", "ce_m1_loss", "ce_m2_loss", "rank_m1_loss", "rank_m2_loss"}
    torch.testing.assert_close(losses["task_loss"], F.cross_entropy(out["logits"], batch.target))
    for m in TWO:
        z = out["unimodal_logits"][m]
        sample = F.cross_entropy(z, batch.target, reduction="none").double()
        table = earlier[m].clone()
        table[50:80] += sample  # this batch enters the history first (MLA's main.py order)
        torch.testing.assert_close(method.history[m], table)
        c = (table[ids] - table.min()) / (table.max() - table.min())
        conf = torch.logsumexp(z, 1) / 10
        pairs = torch.sign(c - c.roll(-1)).float() * (conf - conf.roll(-1)) - (c - c.roll(-1)).abs().float()
        torch.testing.assert_close(losses[f"rank_{m}_loss"], 0.5 * pairs.clamp(min=0).mean())
    assert losses["rank_m1_loss"] > 0 or losses["rank_m2_loss"] > 0  # the constructed history does rank them
    # with no regulariser the loss is the classification terms alone
    plain = build_method("qmf", {"rank_weight": 0.0, "fused_weight": 0.0}, MethodContext())
    assert set(plain.training_step(model, batch)) == {"ce_m1_loss", "ce_m2_loss", "rank_m1_loss", "rank_m2_loss"}


def test_qmf_needs_its_head_and_ids(make_model):
    method = build_method("qmf", {}, MethodContext())
    with pytest.raises(UserError, match="method 'qmf' needs model.head: qmf"):
        method.adapt_spec({"head": "linear", "head_args": {}})
    assert method.adapt_spec({"head": "qmf", "head_args": {}})["head_args"] == {"temperature": 10.0}
    with pytest.raises(UserError, match="model.head: qmf"):
        method.setup(make_model(head="linear")[0])
    model, _ = make_model(head="qmf")
    with pytest.raises(RuntimeError, match="needs its ids"):
        method.training_step(model, Batch({m: torch.zeros(2, d) for m, d in (("m1", 200), ("m2", 100))},
                                          torch.zeros(2, dtype=torch.long)))  # fmt: skip


def test_history_survives_a_kill_and_resume(make_model, alpha_splits, train_cfgs, tmp_path):
    optim, schedule, cfg = train_cfgs(epochs=6, checkpoint_every=3, lr=0.1, batch_size=100)
    train, val = alpha_splits["train"], alpha_splits["val"]
    runs = {}
    for kind in ("whole", "killed"):
        model, spec = make_model(head="qmf")
        method = build_method("qmf", {}, MethodContext(num_classes=2, modalities=TWO))
        out = tmp_path / kind
        if kind == "killed":
            with pytest.raises(Killed):  # 3 batches per epoch: dies in epoch 5, after the epoch-3 checkpoint
                fit(model, KilledAt(method, 13), train, val, spec, out, optim, schedule, cfg, Runtime.cpu(cfg))
            model, spec = make_model(head="qmf", seed=99)
            method = build_method("qmf", {}, MethodContext(num_classes=2, modalities=TWO))
        fit(model, method, train, val, spec, out, optim, schedule, cfg, Runtime.cpu(cfg), resume=kind == "killed")
        runs[kind] = (model.state_dict(), method.history)
    for k, v in runs["whole"][0].items():
        assert torch.equal(v, runs["killed"][0][k]), k
    for m in TWO:
        assert len(runs["whole"][1][m]) == 300 and torch.equal(runs["whole"][1][m], runs["killed"][1][m])


def test_qmf_trains_from_the_command_line(tmp_path):
    from tests.e2e.cli import run_cli

    proc = run_cli(tmp_path, "train", "qmf", "-d", "synth-gamma", "data.n=300", "train.epochs=4", "train.eval_every=2",
                   "--run-dir", "run")  # fmt: skip
    result = json.loads(proc.stdout)
    assert result["method"] == "qmf" and set(result["unimodal_head_accuracy"]) == set(TWO)
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / BEST)
    assert best["spec"]["head"] == "qmf" and best["spec"]["head_args"] == {"temperature": 10.0}  # adapt_spec's
    records = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if r]
    last = records[-1]
    assert {"train_task_loss", "train_rank_m1_loss", "train_rank_m2_loss"} <= set(last)
    assert last["qmf_history_mean_m1"] > 0
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "qmf" in config and "rank_weight: 0.1" in config
