"""Paper 003's Table 4 target: its runs (the Food-101 method recipes with the CLIP fragment merged on), the tiny SMOKE
towers, and where each of our cells comes from."""

from __future__ import annotations

import json

from mmtool.analysis import paper_plans, paper_tables
from mmtool.config import load_recipe
from mmtool.models import ENCODERS
from tests.e2e.cli import REPO
from tests.fixtures.clip_tokenizer import TINY_CLIP_TEXT


def write(folder, obj):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(obj))


def recipe_of(node):
    return load_recipe([REPO / r for r in node.recipes], list(node.overrides))


def test_plan_runs_concat_and_mla_on_frozen_clip_towers_over_three_seeds():
    nodes = paper_plans.build(paper_plans.Options("mla-table4", {"food101": "/raw"}, (0, 1, 2))).nodes
    assert sorted(k for k in nodes if "/seed1/" in k) == ["food101/seed1/clip_concat", "food101/seed1/clip_mla"]
    heads = {}
    for name in ("clip_concat", "clip_mla"):
        recipe = recipe_of(nodes[f"food101/seed2/{name}"])
        enc = recipe.model.encoders
        assert (enc["image"].name, enc["text"].name) == ("clip_image", "clip_text")
        assert enc["image"].args["freeze"] and enc["text"].args["freeze"] and enc["text"].args["pool"] == "eos"
        assert enc["text"].args["config"] == {"hidden_size": 512, "num_attention_heads": 8, "intermediate_size": 2048}
        data = recipe.data.flat()
        assert (data["max_tokens"], data["image_norm"], data["augment"]) == (77, "clip", False)
        heads[name] = (recipe.model.head, recipe.method.name)
    assert heads == {"clip_concat": ("concat", "naive"), "clip_mla": ("shared", "mla")}


def test_smoke_builds_tiny_towers_that_read_the_fixture_tokenizers_ids():
    nodes = paper_plans.build(paper_plans.Options("mla-table4", {}, (0,), smoke=True)).nodes
    assert "data.tokenizer=data/smoke/raw/food101/clip_tokenizer" in nodes["food101/prep"].overrides
    recipe = recipe_of(nodes["food101/seed0/clip_mla"])
    text, image = recipe.model.encoders["text"], recipe.model.encoders["image"]
    assert {k: text.args["config"][k] for k in TINY_CLIP_TEXT} == TINY_CLIP_TEXT
    towers = [ENCODERS.get(e.name)(dims, **e.args) for e, dims in ((text, [77]), (image, [3, 32, 32]))]
    assert [t.out_dim for t in towers] == [32, 32]  # MLA's shared head takes both


def test_cells_read_each_runs_head_per_modality_and_fused_accuracy(tmp_path):
    for seed, shift in enumerate((0.0, 2.0)):
        folder = tmp_path / "food101" / f"seed{seed}"
        for i, name in enumerate(("clip_concat", "clip_mla")):
            uni = {"image": {"test": 60.0 + 10 * i + shift}, "text": {"test": 80.0 + i + shift}}
            write(folder / name, {"test_accuracy": 90.0 + i + shift, "unimodal_head_accuracy": uni})
    text = paper_tables.render("mla-table4", tmp_path)
    assert "| CLIP | 63.07 ± 0.12 | 61.0 ± 1.4 | 83.98 ± 0.08 | 81.0 ± 1.4 | 93.07 ± 0.08 | 91.0 ± 1.4 |" in text
    mla = "| CLIP + MLA (Ours) | 72.22 ± 0.10 | 71.0 ± 1.4 | 85.34 ± 0.06 | 82.0 ± 1.4 | 93.47 ± 0.04 | 92.0 ± 1.4 |"
    assert mla in text
    assert "Ours on food101: mean ± std over 2 seeds" in text
