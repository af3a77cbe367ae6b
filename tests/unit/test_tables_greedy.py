"""Paper 002's Table 1 target: its runs per dataset, the Kinetics-pretrained NVGesture runs, the best uni-modal cell."""

from __future__ import annotations

import json

import torch

from mmtool.analysis import paper_plans, paper_tables, tables_greedy
from mmtool.config import load_recipe, relative_to_recipe
from mmtool.models.i3d import I3DEncoder
from mmtool.models.pretrained import load_pretrained
from tests.e2e.cli import REPO
from tests.unit.test_i3d import port_checkpoint


def write(folder, obj):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(obj))


def test_plan_runs_five_rows_per_set_and_the_kinetics_copies_on_nvgesture_only():
    data = {"colored-mnist": "/m", "modelnet40": "/n", "nvgesture": "/g"}
    plan = paper_plans.build(paper_plans.Options("greedy-table1", data, (0, 1, 2))).nodes
    runs = {d: sorted(k.split("/")[-1] for k in plan if k.startswith(f"{d}/seed2/")) for d in data}
    scratch = sorted(["unimodal", "mmtm", "rubi", "balanced_random", "balanced"])
    assert runs["colored-mnist"] == runs["modelnet40"] == scratch
    assert runs["nvgesture"] == sorted([*scratch, *(f"{r}-k400" for r in scratch)])
    methods = {}
    for key, node in plan.items():
        if node.is_prep:
            continue
        recipe = load_recipe([REPO / r for r in node.recipes], list(node.overrides))
        encoders = recipe.model.encoders
        if key.endswith("/unimodal") or key.endswith("/unimodal-k400"):  # SE blocks where the MMTMs are
            assert all(e.args.get("se") is True for e in encoders.values()), key
        else:
            assert recipe.model.fusion == "mmtm"
            methods[key.split("/")[-1]] = (recipe.method.name, recipe.method.params.get("mode"))
        weights = {relative_to_recipe(recipe, e.pretrained).resolve() for e in encoders.values() if e.pretrained}
        assert weights == ({REPO / "weights" / "i3d_rgb_imagenet.pt"} if key.endswith("-k400") else set())
    assert methods["mmtm"] == ("ume", None) and methods["rubi"] == ("rubi", None)
    assert methods["balanced"] == ("balanced", "guided") and methods["balanced_random"] == ("balanced", "random")
    smoke = paper_plans.build(paper_plans.Options("greedy-table1", {}, (0,), smoke=True)).nodes
    assert {k.split("/")[0] for k in smoke} == {"colored-mnist", "modelnet40", "nvgesture"}
    assert not any(k.endswith("-k400") for k in smoke)  # no Kinetics weights in the fixtures
    assert sorted(k.split("/")[-1] for k in smoke if k.startswith("modelnet40/seed0/")) == scratch


def test_the_kinetics_checkpoint_loads_into_the_se_networks_of_the_uni_modal_row(tmp_path):
    torch.save(port_checkpoint(), tmp_path / "i3d_rgb_imagenet.pt")
    recipe = load_recipe([REPO / "recipes/nvgesture/pretrain_se.yaml"])
    for m, channels in (("rgb", 3), ("depth", 1)):
        encoder = I3DEncoder([channels, 8, 32, 32], **recipe.model.encoders[m].args)
        report = load_pretrained(encoder, tmp_path / "i3d_rgb_imagenet.pt", f"model.encoders.{m}.pretrained")
        assert report["kept"] and all(k.startswith("se.") for k in report["kept"])
        assert report["adapted"] == ([] if m == "rgb" else ["Conv3d_1a_7x7.conv3d.weight"])


def test_the_best_uni_modal_cell_is_the_better_modality_by_its_mean(tmp_path):
    for seed, (color, gray) in enumerate(((41.0, 99.0), (43.0, 98.0))):
        folder = tmp_path / "colored-mnist" / f"seed{seed}"
        write(folder / "unimodal", {"modalities": {"color": {"test_accuracy": color}, "gray": {"test_accuracy": gray}}})
        for i, run in enumerate(tables_greedy.TRAINED.values()):
            write(folder / run, {"test_accuracy": 45.0 + 10 * i + seed})
    seed = tmp_path / "nvgesture" / "seed0"
    write(seed / "unimodal-k400", {"modalities": {"rgb": {"test_accuracy": 70.0}, "depth": {"test_accuracy": 77.5}}})
    write(seed / "balanced-k400", {"test_accuracy": 83.0})
    text = paper_tables.render("greedy-table1", tmp_path)

    def ours(row):
        line = next(x for x in text.splitlines() if x.startswith(f"| {row} |"))
        return [c.strip() for c in line.strip("|").split("|")][1:][1::2]

    assert ours("uni-modal (best)") == ["98.5 ± 0.7", "—", "—", "77.5"]
    assert ours("multi-modal (vanilla)") == ["45.5 ± 0.7", "—", "—", "—"]
    assert ours("+ guided (proposed)") == ["75.5 ± 0.7", "—", "—", "83.0"]
    assert "| + RUBi (Cadene et al., 2019) | 44.79 ± 0.62 | 55.5 ± 0.7 |" in text
    assert "Ours on colored-mnist: mean ± std over 2 seeds" in text and "Ours on modelnet40: not run" in text
