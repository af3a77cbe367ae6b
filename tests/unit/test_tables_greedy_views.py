"""Target greedy-3view (paper 002, Sec. 7): its plan on three-view ModelNet40 and its rendering of fake results."""

from __future__ import annotations

import json

from mmtool.analysis import paper_plans, paper_tables, tables_greedy_views
from mmtool.config import load_recipe
from tests.e2e.cli import REPO


def write(folder, obj):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(obj))
    (folder / "COMPLETE").write_text("")


def test_plan_trains_vanilla_and_guided_on_three_views_and_measures_each():
    plan = paper_plans.build(paper_plans.Options("greedy-3view", {"modelnet40": "/raw"}, (0, 1, 2)))
    names = sorted({k.split("/")[-1] for k in plan.nodes if "/seed" in k})
    assert names == ["guided_3view", "util-guided_3view", "util-vanilla_3view", "vanilla_3view"]
    assert {k.split("/")[1] for k in plan.nodes if "/seed" in k} == {"seed0", "seed1", "seed2"}  # mean ± std
    assert "data.side_view=3" in plan.nodes["modelnet40/prep"].overrides  # prep builds the three-view cache
    util = plan.nodes["modelnet40/seed2/util-guided_3view"]
    assert util.command == "utilization" and ("run", "modelnet40/seed2/guided_3view") in {
        (i.key, i.node) for i in util.inputs}  # fmt: skip
    loaded = {}
    for key, node in plan.nodes.items():
        if not node.is_prep:
            loaded[key.split("/")[-1]] = load_recipe([REPO / r for r in node.recipes], list(node.overrides))
    for name in ("vanilla_3view", "guided_3view"):
        cfg = loaded[name]
        assert cfg.model.fusion == "mmtm" and sorted(cfg.model.encoders) == ["front", "rear", "side"]
        assert (cfg.data.flat()["front_view"], cfg.data.flat()["rear_view"], cfg.data.flat()["side_view"]) == (0, 6, 3)
    assert loaded["vanilla_3view"].method.name == "ume"
    guided = loaded["guided_3view"].method
    assert guided.name == "balanced" and guided.params["mode"] == "guided" and guided.params["alpha"] == 0.01
    smoke = paper_plans.build(paper_plans.Options("greedy-3view", {}, (0, 1, 2), smoke=True)).nodes
    assert {k.split("/")[1] for k in smoke if "/seed" in k} == {"seed0"} and len(smoke) == 5


def test_render_prints_paper_beside_mean_std_and_each_runs_per_view_rates(tmp_path):
    for seed, (acc_v, acc_g) in enumerate(((90.0, 92.0), (92.0, 93.0))):
        folder = tmp_path / "modelnet40" / f"seed{seed}"
        write(folder / "vanilla_3view", {"test_accuracy": acc_v})
        write(folder / "guided_3view", {"test_accuracy": acc_g})
        rates = {"front": 0.10 + seed / 100, "rear": 0.02, "side": 0.05}
        for run in ("util-vanilla_3view", "util-guided_3view"):
            pair = {"d_util": rates["front"] - 0.02, "d_util_pair": ["front", "rear"]}
            write(folder / run, {"utilization": rates, **pair})
    text = paper_tables.RENDER["greedy-3view"](tmp_path, False, None)
    assert "| vanilla | 91.21 | 91.00 ± 1.41 | 2 |" in text
    assert "| guided | 92.45 | 92.50 ± 0.71 | 2 |" in text
    assert "| guided | seed1 | +0.110 | +0.020 | +0.050 | +0.090 (front/rear) |" in text
    assert text.count("| vanilla | seed") == 2 and "SMOKE" not in text
    empty = tables_greedy_views.render(tmp_path / "none", True, None)
    assert empty.startswith("> SMOKE") and "| vanilla | 91.21 | — | 0 |" in empty and "no finished" in empty
