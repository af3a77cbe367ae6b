"""Paper 002's studies: duplicated modalities (data.duplicate), the L1 penalty and R(f), the plans of the
greedy-fig* targets and their rendering on fake runs."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from mmtool.analysis import paper_plans, paper_tables
from mmtool.analysis import tables_greedy_render as gr
from mmtool.analysis import tables_greedy_studies as gs
from mmtool.data import Split
from mmtool.data.cache import Dataset
from mmtool.data.duplicate import apply_duplicate
from mmtool.data.source import DiskSource
from mmtool.data_config import DataConfig
from mmtool.engine.loop import fit
from mmtool.engine.penalties import l1_loss, sparsity
from mmtool.engine.runtime import Runtime
from mmtool.errors import UserError
from mmtool.methods import MethodContext, build_method


# ------------------------------------------------------------------------------------------ data.duplicate
class Reader:
    """Front and rear differ; training flips each view with its own draw (as ModelNet40's reader)."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    def __len__(self) -> int:
        return 4

    def read(self, index, modalities, train, rng):
        self.asked.append(list(modalities))
        out = {}
        for m in modalities:
            x = torch.arange(6.0).view(1, 2, 3) + (100 if m == "rear" else 0) + index
            out[m] = x.flip(-1) if train and rng.random() < 0.5 else x
        return out


def _disk() -> Dataset:
    source = DiskSource(Reader(), torch.arange(4), ("front", "rear"))
    return Dataset("fake", ("front", "rear"), 4, {"front": [1, 2, 3], "rear": [3, 2, 3]}, {"train": source})


def test_duplicate_feeds_identical_tensors_in_memory_and_on_disk():
    arrays = Split({"color": torch.randn(5, 3), "gray": torch.randn(5, 1)}, torch.arange(5))
    data = Dataset("fake", ("color", "gray"), 5, {"color": 3, "gray": 1}, {"test": arrays})
    dup = apply_duplicate(data, DataConfig.of(name="colored-mnist", duplicate="gray"))
    batch = next(iter(dup.splits["test"].loader(5, train=False)))
    assert torch.equal(batch.inputs["color"], batch.inputs["gray"]) and dup.input_dims == {"color": 1, "gray": 1}
    assert not torch.equal(arrays.inputs["color"][:, :1], arrays.inputs["gray"])  # the original split is untouched
    disk = apply_duplicate(_disk(), DataConfig.of(name="modelnet40", duplicate="front"))
    for batch in disk.splits["train"].loader(4, train=True, seed=3):  # training augmentation: one draw for both
        assert torch.equal(batch.inputs["front"], batch.inputs["rear"])
        assert float(batch.inputs["front"].min()) < 100  # the front view's values, not the rear's
    assert disk.input_dims["rear"] == [1, 2, 3]
    assert set(map(tuple, disk.splits["train"].reader.reader.asked)) == {("front",)}  # the rear is never read


def test_without_duplicate_the_views_differ_and_unknown_modalities_are_refused():
    plain = apply_duplicate(_disk(), DataConfig.of(name="modelnet40"))
    batch = next(iter(plain.splits["train"].loader(4, train=False)))
    assert not torch.equal(batch.inputs["front"], batch.inputs["rear"])
    with pytest.raises(UserError, match="'gray' is not a modality of fake"):
        apply_duplicate(_disk(), DataConfig.of(name="modelnet40", duplicate="gray"))


def test_duplicate_is_part_of_the_data_identity_only_when_set():
    plain, dup = DataConfig.of(name="modelnet40"), DataConfig.of(name="modelnet40", duplicate="front")
    assert "duplicate" not in plain.flat() and "duplicate" not in plain.sample_keys()
    assert dup.flat()["duplicate"] == "front" and dup.sample_keys()["duplicate"] == "front"


# ------------------------------------------------------------------------------------------ L1 and R(f)
def test_l1_loss_and_sparsity_on_a_tiny_model():
    net = torch.nn.Linear(3, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -2.0, 0.0], [5e-8, -3.0, 1e-6]]))
        net.bias.copy_(torch.tensor([0.5, -1e-8]))
    loss = l1_loss(net, 0.1)
    assert loss.item() == pytest.approx(0.1 * (1 + 2 + 0 + 5e-8 + 3 + 1e-6 + 0.5 + 1e-8))
    loss.backward()
    assert torch.equal(net.weight.grad, 0.1 * torch.sign(net.weight.detach()))
    assert sparsity(net) == pytest.approx(3 / 8)  # 0, 5e-8 and -1e-8 are below 1e-7; 1e-6 is not


def test_the_loop_adds_l1_loss_and_it_shrinks_the_weights(make_model, alpha_splits, train_cfgs, tmp_path):
    norms = {}
    for l1 in (0.0, 0.01):
        model, spec = make_model(head="linear", seed=1)
        optim, schedule, cfg = train_cfgs(epochs=2, lr=0.2)
        method = build_method("naive", {}, MethodContext(num_classes=2, modalities=("m1", "m2")))
        out = tmp_path / f"l1-{l1}"
        fit(model, method, alpha_splits["train"], alpha_splits["val"], spec, out, dataclasses.replace(optim, l1=l1),
            schedule, cfg, Runtime.cpu(cfg))  # fmt: skip
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert ("train_l1_loss" in records[0]) == (l1 > 0)
        norms[l1] = sum(float(p.detach().abs().sum()) for p in model.parameters())
        if l1:
            # the logged total is the task loss plus the penalty
            first = records[0]
            assert first["train_loss"] == pytest.approx(first["train_task_loss"] + first["train_l1_loss"])
    assert norms[0.01] < norms[0.0]


# ------------------------------------------------------------------------------------------ the plans
def _runs(table: str, smoke: bool = False):
    data = {d: "/raw" for d in paper_plans.TABLES[table].datasets}
    plan = paper_plans.build(paper_plans.Options(table, {} if smoke else data, (0, 1, 2), smoke=smoke))
    return [n for n in plan.nodes.values() if not n.is_prep]


def test_sweep_plans_hold_the_papers_counts_rates_and_copies():
    fig7 = _runs("greedy-fig7")
    assert len(fig7) == 20 * 4 * 2 * 2  # 20 rates, 4 copies, distinct/duplicated, train + utilization
    fig2 = _runs("greedy-fig2")
    by = {d: [n for n in fig2 if n.key.startswith(d)] for d in ("modelnet40", "nvgesture")}
    assert len(by["modelnet40"]) == 9 * 3 * 2 * 2 and len(by["nvgesture"]) == 20 * 3 * 2 * 2
    lrs = {d: sorted({float(o.split("=")[1]) for n in ns for o in n.overrides if o.startswith("optim.lr=")})
           for d, ns in by.items()}  # fmt: skip
    assert lrs["modelnet40"] == pytest.approx(list(np.logspace(-3, 0, 9)), rel=1e-3)
    assert len(lrs["nvgesture"]) == 20 and 1e-4 <= min(lrs["nvgesture"]) and max(lrs["nvgesture"]) <= 10**-1.5
    colored = gs.LRS["colored-mnist"]
    assert len(set(colored)) == 20 and 1e-5 <= min(colored) and max(colored) <= 1
    node = next(n for n in fig7 if n.name == "vanilla-dup-lr1.145e-02-c3")
    assert node.recipes[0] == "recipes/colored-mnist/balanced_vanilla.yaml"
    assert node.overrides == ("data.seed=0", "data.duplicate=gray", "optim.lr=0.01145", "train.seed=3",
                              "train.on_diverge=stop")  # a diverging rate keeps its model selected before
    util = next(n for n in fig7 if n.name == "utilization-vanilla-dup-lr1.145e-02-c3")
    assert util.command == "utilization" and "data.duplicate=gray" in util.overrides
    assert [i.node for i in util.inputs][1:] == ["colored-mnist/seed0/vanilla-dup-lr1.145e-02-c3"]
    real = next(n for n in by["nvgesture"] if n.name.startswith("vanilla-real"))
    assert not any(o.startswith("data.duplicate") for o in real.overrides)
    assert "data.duplicate=rgb" in next(n for n in by["nvgesture"] if n.name.startswith("vanilla-dup")).overrides


def test_l1_sensitivity_and_fig5_plans():
    fig3 = _runs("greedy-fig3")
    assert len(fig3) == 10 * 3 * 2 and gs.TABLES["greedy-fig4"] is gs.TABLES["greedy-fig8"] is gs.TABLES["greedy-fig3"]
    lams = sorted({float(o.split("=")[1]) for n in fig3 for o in n.overrides if o.startswith("optim.l1=")})
    assert lams == pytest.approx(list(np.logspace(-9, -3, 10)), rel=1e-3)
    fig9 = _runs("greedy-fig9")
    assert len(fig9) == 9 * 3 * 2  # 5 Q + 5 alpha, the shared (Q 5, alpha 0.01) point once; 3 copies
    base = next(n for n in fig9 if n.name == "guided-c2")
    assert base.overrides == ("data.seed=0", "train.seed=2", "train.on_diverge=stop")
    assert base.recipes[0] == "recipes/modelnet40/balanced.yaml"
    assert "method.window=50" in next(n for n in fig9 if n.name == "guided-q50-c0").overrides
    fig5 = _runs("greedy-fig5")
    assert len(fig5) == (27 + 60) * 3 * 2
    shared = {n.name for n in fig5} & {n.name for n in _runs("greedy-fig2")}
    assert len(shared) == (27 + 60) * 2  # the vanilla runs (and their utilization) are Figure 2's


def test_smoke_runs_a_few_points_of_each_figure():
    counts = {t: len(_runs(t, smoke=True)) for t in ("greedy-fig2", "greedy-fig7", "greedy-fig3", "greedy-fig5",
                                                    "greedy-fig9")}  # fmt: skip
    # Figs. 2 and 5: one rate on ModelNet40 and one on NVGesture (each run with its utilization run)
    assert counts == {"greedy-fig2": 8, "greedy-fig7": 8, "greedy-fig3": 4, "greedy-fig5": 12, "greedy-fig9": 6}
    assert all(n.recipes[-1] == "recipes/_base/smoke/modelnet40.yaml" for n in _runs("greedy-fig3", smoke=True))


# ------------------------------------------------------------------------------------------ rendering
def _write(folder, results, d_speed=None):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))
    if d_speed is not None:
        (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "d_speed": d_speed}) + "\n")


def _fake_sweep(tmp_path, dataset, values):
    runs = {}
    for i, (setting, d_util, d_speed) in enumerate(values):
        lr, copy = gs.LRS[dataset][i // gs.COPIES[dataset]], i % gs.COPIES[dataset]
        name = gs.sweep_name("vanilla", setting, lr, copy)
        _write(tmp_path / name, {"best_epoch": 1, "test_accuracy": 50.0, "sparsity_r": 0.0}, d_speed)
        _write(tmp_path / f"u-{name}", {"d_util": d_util})
        runs[(dataset, name)] = [tmp_path / name]
        runs[(dataset, f"utilization-{name}")] = [tmp_path / f"u-{name}"]
    return runs


def test_fig7_table_statistics_and_claims(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = [("real", 0.5, 0.4), ("real", 0.3, 0.2), ("real", -0.05, 0.1), ("dup", 0.2, 0.3), ("dup", -0.2, -0.1)]
    text = paper_tables.render("greedy-fig7", tmp_path, False, _fake_sweep(tmp_path, "colored-mnist", values))
    assert "| colored-mnist | distinct | 3 | ≈ 0.3 (abs) | +0.250 | +0.233 | 0.283 | 0.233 |" in text
    assert "| colored-mnist | duplicated (gray twice) | 2 | ≈ 0 | +0.000 | +0.100 | 0.200 | 0.200 |" in text
    assert "2 of 3 runs have |d_util| > 0.1 (ours): holds" in text
    assert "(within 0.05) holds; distinct further from 0 than duplicated holds" in text
    assert "same sign in 4 of 5 runs: holds" in text
    assert (tmp_path / "results" / "greedy-fig7.png").stat().st_size > 0


def test_figures_without_runs_say_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("greedy-fig2", "greedy-fig3", "greedy-fig5", "greedy-fig9"):
        text = paper_tables.render(name, tmp_path / "none", True, {})
        assert text.startswith("> SMOKE") and ("No runs yet." in text or "no runs with distinct" in text
                                                or "no vanilla runs yet" in text), text  # fmt: skip
    assert not (tmp_path / "results").exists()


def test_l1_claims_on_fake_points():
    got = {1e-9: [{"sparsity_r": 0.0, "d_util": 0.05, "d_speed": 0.1}],
           1e-6: [{"sparsity_r": 0.01, "d_util": -0.1, "d_speed": 0.2}],
           1e-3: [{"sparsity_r": 0.3, "d_util": 0.6, "d_speed": -0.5}]}  # fmt: skip
    from mmtool.analysis.tables_greedy_render2 import l1_claims

    lines = l1_claims(got)
    assert "Pearson r(log10 lambda, R(f)) +0.88: holds" in lines[0]
    assert all("holds" in line and "does not" not in line for line in lines)
    assert "0.600 at lambda >= 1e-5 vs 0.075 below" in lines[-1]
    assert math.isnan(gr.pearson([1, 1, 1], [1, 2, 3]))


def test_runs_with_an_undefined_d_util_are_left_out_of_the_claims_and_counted():
    from mmtool.analysis.tables_greedy_render import sweep_claims

    nan = math.nan
    real = [{"d_util": nan, "d_speed": 0.2, "test": 10.0, "sparsity_r": 0.0},
            {"d_util": 0.3, "d_speed": 0.4, "test": 50.0, "sparsity_r": 0.0}]  # fmt: skip
    lines = sweep_claims("nvgesture", real, [{"d_util": nan, "d_speed": 0.1, "test": 5.0, "sparsity_r": 0.0}])
    assert "1 of 1 runs have |d_util| > 0.1" in lines[0]  # the defined run only
    assert lines[-1] == "nvgesture: 2 run(s) left out: d_util undefined (a branch at 0% test accuracy)."
    assert sweep_claims("nvgesture", real[:1], []) == [
        "nvgesture: no runs with distinct modalities and a defined d_util yet.",
        "nvgesture: 1 run(s) left out: d_util undefined (a branch at 0% test accuracy)."]
