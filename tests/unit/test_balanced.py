"""Balanced multi-modal learning (paper 002, Alg. 1): conditional learning speed and re-balancing steps."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from mmtool.config import ModelConfig
from mmtool.data import Batch
from mmtool.engine.loop import fit
from mmtool.engine.runtime import Runtime
from mmtool.errors import UserError
from mmtool.methods import MethodContext, build_method
from mmtool.methods.balanced import conditional_speeds, effective_update, speed_groups
from mmtool.models import build_model, model_spec

DIMS = {"m1": 200, "m2": 100}
TWO = ("m1", "m2")


def mmtm_model(seed=0, hidden=(16, 8, 4)):
    cfg = ModelConfig(encoder="mlp", hidden=hidden, head="ensemble", fusion="mmtm")
    spec = model_spec(cfg, DIMS, 2, list(TWO))
    torch.manual_seed(seed)
    return build_model(spec), spec


def balanced(**params):
    return build_method("balanced", params, MethodContext(num_classes=2, modalities=TWO, seed=3))


def batches(split, size=64, seed=0):
    return list(split.loader(size, train=True, seed=seed, epoch=1))


def take_steps(model, method, batch_list, epoch, lr=0.1):
    """What the loop does for each batch: training_step, backward, SGD step, after_step; returns step kinds."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    method.setup(model)
    method.on_epoch_start(model, epoch)
    kinds = []
    for step, batch in enumerate(batch_list):
        losses = method.training_step(model, batch)
        kinds.append(method.kind)
        opt.zero_grad()
        sum(losses.values()).backward()
        method.after_backward(model, step)
        opt.step()
        method.after_step(model, step)
    return kinds


def test_speed_groups_follow_def_5_1():
    model, _ = mmtm_model()
    groups = {k: {id(p) for p in v} for k, v in speed_groups(model).items()}
    shared = {id(p) for t in model.mmtm for p in t.shared.parameters()}
    assert shared and shared <= groups["fusion:m1"] and shared <= groups["fusion:m2"]  # footnote 2
    for k, m in enumerate(TWO):
        own = {id(p) for t in model.mmtm for p in t.to_w[k].parameters()}
        assert groups[f"fusion:{m}"] == shared | own
        assert groups[f"branch:{m}"] == {id(p) for p in model.encoders[m].parameters()} | {
            id(p) for p in model.head.proj[m].parameters()
        }
    # the four groups cover the model, and branches never overlap with fusion
    assert set().union(*groups.values()) == {id(p) for p in model.parameters()}
    assert not (groups["branch:m1"] | groups["branch:m2"]) & (groups["fusion:m1"] | groups["fusion:m2"])


def test_effective_update_is_squared_grad_norm_over_squared_weight_norm():
    a, b = torch.nn.Parameter(torch.tensor([3.0, 4.0])), torch.nn.Parameter(torch.tensor([[1.0, 2.0]]))
    a.grad, b.grad = torch.tensor([0.5, 0.0]), torch.tensor([[1.0, 1.0]])
    assert effective_update([a, b]) == pytest.approx((0.25 + 2.0) / (25.0 + 5.0))
    c = torch.nn.Parameter(torch.ones(3))  # no gradient: counts as zero
    assert effective_update([c]) == 0.0


def test_conditional_speeds_are_log_ratios():
    sums = {"fusion:m1": 2.0, "branch:m1": 1.0, "fusion:m2": 1.0, "branch:m2": 4.0}
    s = conditional_speeds(sums, "m1", "m2")
    assert s["s(m2|m1)"] == pytest.approx(math.log(2.0))
    assert s["s(m1|m2)"] == pytest.approx(math.log(0.25))
    assert s["d_speed"] == pytest.approx(math.log(2.0) - math.log(0.25))


def test_regular_step_accumulates_mu_of_the_updated_weights(alpha_splits):
    """M_θ after one regular step is ||G||^2 / ||θ(1)||^2 with θ(1) the weights after the step."""
    model, _ = mmtm_model()
    method = balanced(mode="vanilla")
    batch = batches(alpha_splits["train"])[0]
    ref, _ = mmtm_model()
    losses = balanced(mode="vanilla").training_step(ref, batch)
    sum(losses.values()).backward()
    groups = speed_groups(ref)
    grads = {k: sum(float(p.grad.pow(2).sum()) for p in v if p.grad is not None) for k, v in groups.items()}
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.1 * p.grad
    weights = {k: sum(float(p.detach().pow(2).sum()) for p in v) for k, v in groups.items()}
    take_steps(model, method, [batch], epoch=1)
    for k in groups:
        assert method.sums[k] == pytest.approx(grads[k] / weights[k], rel=1e-4)
    assert method.epoch_metrics()["d_speed"] == pytest.approx(
        math.log(method.sums["fusion:m1"] / method.sums["branch:m1"])
        - math.log(method.sums["fusion:m2"] / method.sums["branch:m2"])
    )


def test_warmup_takes_regular_steps_only(alpha_splits):
    model, _ = mmtm_model()
    method = balanced(alpha=0.0, warmup_epochs=2)
    for epoch in (1, 2):
        assert set(take_steps(model, method, batches(alpha_splits["train"]), epoch)) == {"regular"}
    assert set(take_steps(model, method, batches(alpha_splits["train"]), 3)) - {"regular"}


def test_guided_windows_have_q_steps_and_accelerate_the_slower_modality(alpha_splits):
    model, _ = mmtm_model()
    method = balanced(alpha=0.0, window=3)
    take_steps(model, method, batches(alpha_splits["train"]), epoch=1)
    kinds = take_steps(model, method, batches(alpha_splits["train"], size=16) * 2, epoch=2)
    i = 0
    while i < len(kinds):
        assert kinds[i] == "regular"
        window = kinds[i + 1 : i + 4]
        assert len(window) == min(3, len(kinds) - i - 1) and len(set(window)) <= 1 and "regular" not in window
        i += 4
    # with alpha 0 every regular step opens a window; its modality follows the sign of d_speed then
    method.pending = []
    take_steps(model, method, batches(alpha_splits["train"])[:1], epoch=3)  # one regular step
    d = method.epoch_metrics()["d_speed"]
    assert method.pending == [("m1" if d > 0 else "m2")] * 3


def test_guided_stays_regular_within_tolerance(alpha_splits):
    model, _ = mmtm_model()
    method = balanced(alpha=1e9)
    take_steps(model, method, batches(alpha_splits["train"]), epoch=1)
    assert set(take_steps(model, method, batches(alpha_splits["train"]), epoch=2)) == {"regular"}


def test_rebalancing_step_uses_mean_excitation_of_regular_steps(alpha_splits):
    """Eq. 13: the accelerated branch is rescaled by 2 sigmoid(w̄), w̄ the mean w over earlier regular samples,
    so that branch sees nothing of the other modality; the other branch is rescaled as usual."""
    model, _ = mmtm_model()
    method = balanced(alpha=0.0, window=1)
    warm = batches(alpha_splits["train"], size=50)
    take_steps(model, method, warm, epoch=1, lr=0.0)  # lr 0: every regular step sees the same weights
    record: dict = {}
    with torch.no_grad():
        for b in warm:
            model.encode(b.inputs, excite_record=record)
    for m in TWO:
        n = len(model.mmtm)  # record[m] holds one entry per MMTM per call, in order
        expected = [torch.cat(record[m][k::n]).mean(0) for k in range(n)]
        got = [s / method.excite_count for s in method.excite_sum[m]]
        for e, g in zip(expected, got, strict=True):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
    method.on_epoch_start(model, 2)
    method.pending = ["m1"]
    batch = warm[0]
    losses = method.training_step(model, batch)
    assert method.kind == "m1"
    means = [s / method.excite_count for s in method.excite_sum["m1"]]
    with torch.no_grad():
        out = model.fuse(model.encode(batch.inputs, excite_override={"m1": means}))
        for m, z in out["unimodal_logits"].items():
            torch.testing.assert_close(losses[f"ce_{m}_loss"], F.cross_entropy(z, batch.target))
        noise = {"m1": batch.inputs["m1"], "m2": torch.randn_like(batch.inputs["m2"])}
        moved = model.fuse(model.encode(noise, excite_override={"m1": means}))["unimodal_logits"]
        torch.testing.assert_close(moved["m1"], out["unimodal_logits"]["m1"])  # branch m1 is cut from m2
        assert not torch.allclose(moved["m2"], out["unimodal_logits"]["m2"])


def test_random_mode_draws_the_three_step_kinds_evenly(alpha_splits):
    model, _ = mmtm_model()
    method = balanced(mode="random")
    take_steps(model, method, batches(alpha_splits["train"]), epoch=1)
    kinds = take_steps(model, method, batches(alpha_splits["train"], size=4) * 3, epoch=2, lr=0.01)
    counts = {k: kinds.count(k) for k in ("regular", "m1", "m2")}
    assert sum(counts.values()) == len(kinds) == 3 * len(alpha_splits["train"]) // 4
    assert all(abs(c - len(kinds) / 3) < 25 for c in counts.values()), counts  # 225 draws: std about 7


def test_vanilla_never_rebalances_but_logs_speed(alpha_splits, train_cfgs, tmp_path):
    model, spec = mmtm_model()
    optim, schedule, cfg = train_cfgs(epochs=3, lr=0.1, batch_size=64)
    fit(model, balanced(mode="vanilla", alpha=0.0), alpha_splits["train"], alpha_splits["val"], spec, tmp_path,
        optim, schedule, cfg, Runtime.cpu(cfg))  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["rebalance_m1_share"] == r["rebalance_m2_share"] == 0.0 for r in rows)
    assert all(math.isfinite(r["d_speed"]) for r in rows)
    assert rows[-1]["d_speed"] == pytest.approx(rows[-1]["s(m2|m1)"] - rows[-1]["s(m1|m2)"])


def test_resume_is_bit_identical(alpha_splits, train_cfgs, tmp_path):
    """The method's state (μ sums, mean excitations, pending window, random generator) goes into last.pt."""
    optim, schedule, full_cfg = train_cfgs(epochs=4, lr=0.1, batch_size=64, checkpoint_every=2)
    splits = alpha_splits["train"], alpha_splits["val"]
    for mode in ("guided", "random"):
        model, spec = mmtm_model()
        fit(model, balanced(mode=mode, alpha=0.0), *splits, spec, tmp_path / f"{mode}-full", optim, schedule,
            full_cfg, Runtime.cpu(full_cfg))  # fmt: skip
        cut_cfg = train_cfgs(epochs=2, lr=0.1, batch_size=64, checkpoint_every=2)[2]
        part, _ = mmtm_model()
        fit(part, balanced(mode=mode, alpha=0.0), *splits, spec, tmp_path / f"{mode}-cut", optim, schedule,
            cut_cfg, Runtime.cpu(cut_cfg))  # fmt: skip
        (tmp_path / f"{mode}-cut" / "checkpoints" / "COMPLETE").unlink()
        resumed, _ = mmtm_model(seed=9)
        fit(resumed, balanced(mode=mode, alpha=0.0), *splits, spec, tmp_path / f"{mode}-cut", optim, schedule,
            full_cfg, Runtime.cpu(full_cfg), resume=True)  # fmt: skip
        for k, v in model.state_dict().items():
            assert torch.equal(v, resumed.state_dict()[k]), (mode, k)


def test_checks_model_and_params():
    with pytest.raises(UserError, match="mode"):
        balanced(mode="greedy")
    with pytest.raises(UserError, match="window"):
        balanced(window=0)
    from tests.unit.test_mmtm import mmtm_model as two_block

    balanced().setup(two_block()[0])
    cfg = ModelConfig(encoder="mlp", hidden=(16,), head="ensemble")
    late = build_model(model_spec(cfg, DIMS, 2, list(TWO)))
    with pytest.raises(UserError, match="mmtm"):
        balanced().setup(late)


def test_balanced_trains_cnn_branches(train_cfgs, tmp_path):
    """The same algorithm on CNN branches: images in, MMTMs on feature maps, every parameter learns."""
    from mmtool.data import Split

    torch.manual_seed(0)
    y = torch.randint(0, 3, (96,))
    gray = torch.rand(96, 1, 8, 8) * 0.2 + y.view(-1, 1, 1, 1) * 0.3
    split = Split({"m1": gray.expand(-1, 3, -1, -1) * torch.rand(96, 3, 1, 1), "m2": gray}, y)
    cfg = ModelConfig(encoder="cnn", hidden=(8, 16), head="ensemble", fusion="mmtm")
    spec = model_spec(cfg, {"m1": [3, 8, 8], "m2": [1, 8, 8]}, 3, list(TWO))
    torch.manual_seed(0)
    model = build_model(spec)
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    optim, schedule, train_cfg = train_cfgs(epochs=3, lr=0.05, batch_size=32)
    method = balanced(alpha=0.0, window=1)
    fit(model, method, split, split, spec, tmp_path, optim, schedule, train_cfg, Runtime.cpu(train_cfg))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["d_speed"]) for r in rows)
    shares = [r["rebalance_m1_share"] + r["rebalance_m2_share"] for r in rows]
    assert shares[0] == 0.0 and all(0.0 < s < 1.0 for s in shares[1:])  # warm-up, then regular and Q = 1 alternate
    after = model.state_dict()
    assert all(not torch.equal(v, after[k]) for k, v in before.items()), "a parameter or BN statistic did not move"


def test_code_variant_d_speed_matches_the_released_code():
    """Golden values from nyukat/greedy_multimodal_learning at a190e03755bd8d0883b2c5c0cd7921d2561ce2ee,
    ``src/callbacks.py``, ``Bias_Mitigation_Strong.compute_BDR`` (called from ``on_backward_end``, before
    ``optimizer.step``), on these seeded weights and gradients under their parameter names (``net_view_*``
    for the branches and their classifiers, ``mmtm*.fc_squeeze`` shared, ``fc_visual``/``fc_skeleton``),
    two SGD steps of lr 0.1: log10 of the ratios, weights before the step."""
    method = build_method("balanced", {"variant": "code"}, MethodContext(num_classes=3, modalities=TWO, seed=3))
    cfg = ModelConfig(encoder="mlp", hidden=(6, 4), head="ensemble", fusion="mmtm")
    model = build_model(method.adapt_spec(model_spec(cfg, {"m1": 5, "m2": 3}, 3, list(TWO))))
    gen = torch.Generator().manual_seed(7)
    params = list(model.parameters())
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=gen))
    method.setup(model)
    method.on_epoch_start(model, 1)
    batch = Batch({"m1": torch.randn(4, 5), "m2": torch.randn(4, 3)}, torch.tensor([0, 1, 2, 0]))
    for step, golden in enumerate([0.014097461196700892, -0.0457534412957422]):
        method.training_step(model, batch)
        for p in params:  # this step's gradients, drawn in the golden run's order
            p.grad = torch.randn(p.shape, generator=gen)
        method.after_backward(model, step)
        with torch.no_grad():
            for p in params:
                p -= 0.1 * p.grad
        method.after_step(model, step)
        assert method.epoch_metrics()["d_speed"] == pytest.approx(golden, abs=1e-5)


def test_variants_build_their_mmtm_and_refuse_the_other():
    paper, code = balanced(), balanced(variant="code")
    cfg = ModelConfig(encoder="mlp", hidden=(16, 8), head="ensemble", fusion="mmtm")
    spec = model_spec(cfg, DIMS, 2, list(TWO))
    assert paper.adapt_spec(spec) == spec  # the default model is unchanged
    coded = build_model(code.adapt_spec(spec))
    assert coded.excite_scale == 1.0 and coded.mmtm[0].shared[0].out_features == (16 + 16) // 2
    with pytest.raises(UserError, match="variant 'code' needs an MMTM model"):
        code.setup(build_model(spec))
    with pytest.raises(UserError, match="bug_compatible"):
        balanced(bug_compatible=True)


def test_paper_alpha_is_in_log10_units():
    """The authors' α bounds a log10 d_speed; variant paper's ln-based d_speed is bounded by α·ln 10."""
    from mmtool.methods.balanced import VARIANTS

    assert VARIANTS["paper"].threshold(0.01) == pytest.approx(0.01 * math.log(10))
    assert VARIANTS["code"].threshold(0.01) == 0.01
    sums = {"fusion:m1": 2.0, "branch:m1": 1.0, "fusion:m2": 1.0, "branch:m2": 1.0}
    ln, log10 = conditional_speeds(sums, *TWO)["d_speed"], conditional_speeds(sums, *TWO, math.log10)["d_speed"]
    assert ln == pytest.approx(log10 * math.log(10))


def test_bug_compatible_feeds_the_second_mean_from_the_first(alpha_splits):
    method = balanced(variant="code", bug_compatible=True)
    cfg = ModelConfig(encoder="mlp", hidden=(16, 8), head="ensemble", fusion="mmtm")
    model = build_model(method.adapt_spec(model_spec(cfg, DIMS, 2, list(TWO))))
    assert model.fusion_args["running_mean"] == "first"
    take_steps(model, method, batches(alpha_splits["train"])[:2], epoch=1)
    assert all(torch.equal(t.mean0, t.mean1) and float(t.forwards) == 2 for t in model.mmtm)


def test_code_variant_rebalances_with_the_models_running_mean(alpha_splits, monkeypatch):
    """Variant code: a re-balancing step rescales the accelerated branch by the MMTMs' running mean of σ(w),
    into which that step's own batch is folded first (the released code), not by the method's mean of w."""
    method = balanced(variant="code", warmup_epochs=0, alpha=0.0, window=1)
    cfg = ModelConfig(encoder="mlp", hidden=(16, 8), head="ensemble", fusion="mmtm")
    model = build_model(method.adapt_spec(model_spec(cfg, DIMS, 2, list(TWO))))
    assert model.fusion_args["running_mean"] == "each"
    steps = batches(alpha_splits["train"])[:2]
    take_steps(model, method, steps[:1], epoch=1)  # a regular step: |d_speed| > 0 = alpha opens a window of one
    kind = method.pending[0]
    i = TWO.index(kind)
    before = [(t.mean0 if i == 0 else t.mean1).clone() for t in model.mmtm]
    calls, seen = [], []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda inputs, **kw: calls.append(kw) or encode(inputs, **kw))
    hook = model.mmtm[0].register_forward_hook(lambda mod, args, out: seen.append(out[i].detach()))
    take_steps(model, method, steps[1:], epoch=1)
    hook.remove()
    assert method.kind == kind and list(calls[0]["excite_average"]) == [kind] and not calls[0]["excite_override"]
    after = model.mmtm[0].mean0 if i == 0 else model.mmtm[0].mean1
    assert torch.allclose(after, (before[0] + torch.sigmoid(seen[0]).mean(0)) / 2, atol=1e-6)
