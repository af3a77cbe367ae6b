"""Balanced multi-modal learning with three modalities (paper 002, Sec. 7): a speed per modality, d_speed from
the two most different, one modality accelerated per window (the slower of the two)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mmtool.config import ModelConfig
from mmtool.data import Split
from mmtool.data.tri import DIMS, NUM_CLASSES, generate_tri
from mmtool.engine.loop import fit
from mmtool.engine.runtime import Runtime
from mmtool.errors import UserError
from mmtool.methods import MethodContext, build_method
from mmtool.methods.balanced import conditional_speeds, speed_groups, speeds_and_pair
from mmtool.models import build_model, model_spec
from tests.unit.test_balanced import take_steps

MODS = ("m1", "m2", "m3")
SPEEDS = ("s(m2,m3|m1)", "s(m1,m3|m2)", "s(m1,m2|m3)")


@pytest.fixture(scope="module")
def tri_splits() -> dict[str, Split]:
    arrays = generate_tri(0, 400)
    split = lambda idx: Split({m: torch.from_numpy(arrays[m][idx]) for m in MODS},  # noqa: E731
                              torch.from_numpy(arrays["y"][idx]))  # fmt: skip
    return {"train": split(slice(0, 300)), "val": split(slice(300, 400))}


def tri_model(seed=0):
    cfg = ModelConfig(encoder="mlp", hidden=(16, 8), head="ensemble", fusion="mmtm")
    spec = model_spec(cfg, dict(DIMS), NUM_CLASSES, list(MODS))
    torch.manual_seed(seed)
    return build_model(spec), spec


def balanced(**params):
    return build_method("balanced", params, MethodContext(num_classes=NUM_CLASSES, modalities=MODS, seed=3))


def steps(model, method, split, epoch, size=64, lr=0.1):
    """The loop's order per batch over ``split``'s training batches (tests/unit/test_balanced.py's take_steps)."""
    return take_steps(model, method, split.loader(size, train=True, seed=epoch, epoch=epoch), epoch, lr)


def test_speed_groups_cover_each_branch_and_its_fusion_path():
    model, _ = tri_model()
    groups = speed_groups(model)
    assert sorted(groups) == sorted([f"{g}:{m}" for g in ("branch", "fusion") for m in MODS])
    shared = {id(p) for t in model.mmtm for p in t.shared.parameters()}
    for k, m in enumerate(MODS):
        own = {id(p) for t in model.mmtm for p in t.to_w[k].parameters()}
        assert {id(p) for p in groups[f"fusion:{m}"]} == shared | own


def test_d_speed_compares_the_two_most_different_and_names_the_slower():
    sums = {"branch:m1": 1.0, "fusion:m1": 2.0, "branch:m2": 1.0, "fusion:m2": 8.0,
            "branch:m3": 4.0, "fusion:m3": 1.0}  # fmt: skip
    speeds, slow, fast = speeds_and_pair(sums, MODS)
    assert (slow, fast) == ("m2", "m3")
    assert speeds["s(m1,m3|m2)"] == pytest.approx(math.log(8))
    assert speeds["s(m1,m2|m3)"] == pytest.approx(math.log(0.25))
    assert speeds["d_speed"] == pytest.approx(math.log(8) - math.log(0.25))
    assert set(speeds) == {*SPEEDS, "d_speed"}
    two, a, b = speeds_and_pair(sums, ("m1", "m2"))  # two modalities: Eq. 11-12 as before, signed
    assert two == conditional_speeds(sums, "m1", "m2") and (a, b) == ("m1", "m2") and two["d_speed"] < 0
    assert math.isnan(speeds_and_pair({**sums, "branch:m1": 0.0}, MODS)[0]["d_speed"])


def test_guided_window_accelerates_the_slower_of_the_two_most_different(tri_splits):
    """Constructed sums: m2 learns slowest from its own input (largest s), m3 fastest; one regular step adds
    a μ far below them, so the window that follows re-balances m2, then m2's excitation is fixed."""
    model, _ = tri_model()
    method = balanced(alpha=0.0, window=2)
    steps(model, method, tri_splits["train"], epoch=1)
    method.sums = {"branch:m1": 1e6, "fusion:m1": 1e6, "branch:m2": 1e6, "fusion:m2": 1e8,
                   "branch:m3": 1e6, "fusion:m3": 1e4}  # fmt: skip
    method.pending = []
    kinds = steps(model, method, tri_splits["train"], epoch=2, size=100)  # 3 steps: regular, m2, m2
    assert kinds == ["regular", "m2", "m2"]
    metrics = method.epoch_metrics()
    assert metrics["rebalance_m2_share"] == pytest.approx(2 / 3) and metrics["rebalance_m3_share"] == 0.0
    assert metrics["s(m1,m3|m2)"] > metrics["s(m2,m3|m1)"] > metrics["s(m1,m2|m3)"]


def test_rebalancing_step_cuts_the_accelerated_branch_from_both_others(tri_splits):
    model, _ = tri_model()
    method = balanced(alpha=1e9)
    steps(model, method, tri_splits["train"], epoch=1, lr=0.0)
    method.on_epoch_start(model, 2)
    method.pending = ["m3"]
    batch = next(iter(tri_splits["val"].loader(50, train=False, seed=0, epoch=1)))
    method.training_step(model, batch)
    assert method.kind == "m3"
    means = [s / method.excite_count for s in method.excite_sum["m3"]]
    moved = {**batch.inputs, "m1": torch.randn_like(batch.inputs["m1"]), "m2": torch.randn_like(batch.inputs["m2"])}
    with torch.no_grad():
        a = model(batch.inputs, excite_override={"m3": means})["unimodal_logits"]
        b = model(moved, excite_override={"m3": means})["unimodal_logits"]
    torch.testing.assert_close(a["m3"], b["m3"])
    assert not torch.allclose(a["m1"], b["m1"])


def test_random_mode_draws_four_kinds(tri_splits):
    model, _ = tri_model()
    method = balanced(mode="random")
    steps(model, method, tri_splits["train"], epoch=1)
    kinds = steps(model, method, tri_splits["train"], epoch=2, size=2, lr=0.01)
    counts = {k: kinds.count(k) for k in ("regular", *MODS)}
    assert sum(counts.values()) == 150 and all(abs(c - 150 / 4) < 20 for c in counts.values()), counts


def test_guided_trains_three_modalities_and_logs_every_speed(tri_splits, train_cfgs, tmp_path):
    model, spec = tri_model()
    optim, schedule, cfg = train_cfgs(epochs=3, lr=0.1, batch_size=64)
    fit(model, balanced(alpha=0.0, warmup_epochs=1, window=2), tri_splits["train"], tri_splits["val"], spec,
        tmp_path, optim, schedule, cfg, Runtime.cpu(cfg))  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r[s]) for r in rows for s in SPEEDS)
    last = rows[-1]
    values = [last[s] for s in SPEEDS]
    assert last["d_speed"] == pytest.approx(max(values) - min(values))
    slow = MODS[values.index(max(values))]
    assert rows[0][f"rebalance_{slow}_share"] == 0.0  # warm-up
    assert sum(last[f"rebalance_{m}_share"] for m in MODS) > 0  # alpha 0: windows after the warm-up


def test_bug_compatible_stays_two_modality():
    model, _ = tri_model()
    with pytest.raises(UserError, match="two-modality"):
        balanced(variant="code", bug_compatible=True).setup(model)
