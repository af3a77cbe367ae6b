"""Paper 003's Table 1 target: which runs it makes and where each of our cells comes from."""

from __future__ import annotations

import json

import pytest

from mmtool.analysis import paper_plans, paper_tables, tables_mla
from mmtool.config import load_recipe
from tests.e2e.cli import REPO


def write(folder, obj):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(obj))


def test_plan_trains_each_method_once_per_seed_and_late_fusion_from_the_unimodal_models():
    plan = paper_plans.build(paper_plans.Options("mla-table1", {"cremad": "/raw"}, (0, 1, 2)))
    names = sorted({k.split("/")[-1] for k in plan.nodes if "/seed" in k})
    assert names == sorted(["unimodal", "ume", "naive_sum", "naive_concat", "naive_film", "naive_gated", "ogm_ge",
                            "qmf", "mla"])  # fmt: skip
    assert {k.split("/")[1] for k in plan.nodes if "/seed" in k} == {"seed0", "seed1", "seed2"}  # mean ± std
    ume = plan.nodes["cremad/seed1/ume"]
    assert ume.command == "ensemble" and ("teachers", "cremad/seed1/unimodal") in {(i.key, i.node) for i in ume.inputs}
    for node in plan.nodes.values():  # every recipe and override of the plan loads
        if not node.is_prep:
            load_recipe([REPO / r for r in node.recipes], list(node.overrides))
    heads = {n: load_recipe([REPO / f"recipes/cremad/{n}.yaml"]).model.head for n in tables_mla.JOINT.values()}
    assert heads == {"naive_sum": "sum", "naive_concat": "concat", "naive_film": "film", "naive_gated": "gated",
                     "ogm_ge": "linear", "qmf": "qmf", "mla": "shared"}  # fmt: skip
    smoke = paper_plans.build(paper_plans.Options("mla-table1", {}, (0,), smoke=True)).nodes
    assert "--max-missing-frac" in smoke["cremad/prep"].args  # the fixture holds a few of the listed clips
    assert {k.split("/")[0] for k in smoke} == {"cremad", "food101", "iemocap"}  # SMOKE: one A-V, I-T, A-I-T set


def test_cells_read_head_per_modality_accuracy_and_late_fusion_from_unimodal_and_ume(tmp_path):
    seed = tmp_path / "cremad" / "seed0"
    for i, name in enumerate(tables_mla.JOINT.values()):
        uni = {"audio": {"test": 40.0 + i}, "visual": {"test": 20.0 + i}}
        write(seed / name, {"test_accuracy": 60.0 + i, "unimodal_head_accuracy": uni})
    write(seed / "unimodal", {"modalities": {"audio": {"test_accuracy": 51.0}, "visual": {"test_accuracy": 52.0}}})
    write(seed / "ume", {"test_accuracy": 65.5})
    text = paper_tables.render("mla-table1", tmp_path)
    row = next(line for line in text.splitlines() if line.startswith("| CREMA-D Audio |"))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    ours = cells[1::2]  # paper, ours, paper, ours, ...
    assert ours == ["40.0", "41.0", "51.0", "—", "—", "44.0", "45.0", "46.0"]  # FiLM, BiGated: no one-modality output
    multi = next(line for line in text.splitlines() if line.startswith("| CREMA-D Multi |"))
    assert [c.strip() for c in multi.strip("|").split("|")][1:][1::2] == ["60.0", "61.0", "65.5", "62.0", "63.0",
                                                                             "64.0", "65.0", "66.0"]  # fmt: skip
    assert "| KS Audio | 48.77 ± 0.95 | — |" in text  # a dataset without runs: the paper's number and "—"


def test_text_datasets_run_every_method_on_one_backbone_and_iemocap_skips_the_two_modality_heads(tmp_path):
    data = {"cremad": "/c", "food101": "/f", "mvsa": "/m", "iemocap": "/i"}
    plan = paper_plans.build(paper_plans.Options("mla-table1", data, (0,))).nodes
    runs = {d: {k.split("/")[-1] for k in plan if k.startswith(f"{d}/seed0/")} for d in data}
    assert runs["food101"] == runs["mvsa"] == runs["cremad"]
    assert runs["iemocap"] == runs["cremad"] - {"naive_film", "naive_gated"}
    widths = set()
    for key, node in plan.items():
        if node.is_prep or key.startswith("cremad/"):
            continue
        assert "recipes/_base/bert512.yaml" in node.recipes  # "all baselines used the same backbone"
        recipe = load_recipe([REPO / r for r in node.recipes], list(node.overrides))
        text = recipe.model.encoders["text"]
        widths.add((text.name, text.args["config"]["hidden_size"]))
        if key.endswith("/mla"):
            assert recipe.model.head == "shared" and recipe.method.name == "mla"
    assert widths == {("bert", 512)}  # as wide as the ResNet-18s, so that MLA's shared head takes every modality
    seed = tmp_path / "iemocap" / "seed0"
    heads = {"audio": {"test": 40.5}, "visual": {"test": 30.5}, "text": {"test": 60.5}}
    write(seed / "naive_sum", {"test_accuracy": 70.0, "unimodal_head_accuracy": heads})
    write(seed / "unimodal", {"modalities": {m: {"test_accuracy": v["test"] + 1} for m, v in heads.items()}})
    text = paper_tables.render("mla-table1", tmp_path)
    image = next(line for line in text.splitlines() if line.startswith("| IEMOCAP Image |"))
    ours = [c.strip() for c in image.strip("|").split("|")][1:][1::2]
    assert ours[:5] == ["30.5", "—", "31.5", "—", "—"]  # IEMOCAP's visual is the paper's "Image"; FiLM/BiGated not run
    multi = next(line for line in text.splitlines() if line.startswith("| IEMOCAP Multi |"))
    assert [c.strip() for c in multi.strip("|").split("|")][1:][1::2][:4] == ["70.0", "—", "—", "—"]


def test_the_papers_encoders_are_a_fragment_away_and_stop_in_one_line_without_their_weights():
    from mmtool.config import relative_to_recipe
    from mmtool.errors import UserError
    from mmtool.models.m3ae import M3AEEncoder
    from mmtool.models.pretrained import load_pretrained

    for dataset, fragment in (("food101", "m3ae_image_text"), ("mvsa", "m3ae_image_text"), ("iemocap", "iemocap_m3ae")):
        recipe = load_recipe([REPO / f"recipes/{dataset}/mla.yaml", REPO / f"recipes/_base/{fragment}.yaml"])
        encoders = recipe.model.encoders
        names = {m: e.name for m, e in encoders.items()}
        assert set(names.values()) <= {"m3ae", "cav_mae_audio"} and encoders["text"].name == "m3ae"
        assert all(e.pretrained and e.pretrained.startswith("../../weights/") for e in encoders.values())
        if dataset == "iemocap":  # another encoder and transform: the ResNet-18's log-mel arguments are gone
            audio = encoders["audio"]
            assert (audio.transform, audio.args, audio.transform_args["target_frames"]) == ("fbank", {}, 1024)
        assert recipe.data.flat()["image_size"] == 256
        assert relative_to_recipe(recipe, encoders["text"].pretrained).resolve() == REPO / "weights" / "m3ae_base.pt"
    tiny = M3AEEncoder([6], embed_dim=16, depth=1, heads=2, vocab_size=40, patch=4)
    with pytest.raises(UserError, match="no weights file"):  # no weights/ here: one line, no training from scratch
        load_pretrained(tiny, REPO / "weights" / "m3ae_base.pt", "model.encoders.text.pretrained")


def test_ablation_switches_hgm_and_df_and_shares_the_full_mla_run_with_table1():
    t3 = paper_plans.build(paper_plans.Options("mla-table3", {"cremad": "/raw"}, (0,))).nodes
    t1 = paper_plans.build(paper_plans.Options("mla-table1", {"cremad": "/raw"}, (0,))).nodes
    overrides = {k.split("/")[-1]: set(n.overrides) - {"data.seed=0", "train.seed=0"} for k, n in t3.items()
                 if "/seed" in k}  # fmt: skip
    assert overrides == {"mla_hgm0_df0": {"method.project=false", "method.dynamic_fusion=false"},
                         "mla_hgm0": {"method.project=false"}, "mla_df0": {"method.dynamic_fusion=false"}, "mla": set()}
    full = t3["cremad/seed0/mla"]
    assert (full.recipes, full.overrides) == (t1["cremad/seed0/mla"].recipes, t1["cremad/seed0/mla"].overrides)
    for name in overrides:
        node = t3[f"cremad/seed0/{name}"]
        recipe = load_recipe([REPO / r for r in node.recipes], list(node.overrides))
        assert (recipe.method.params.get("project", True) is not False) == ("hgm0" not in name)


def test_missing_rate_table_runs_each_method_at_each_rate_and_smoke_one_rate(tmp_path):
    nodes = paper_plans.build(paper_plans.Options("mla-table2", {"iemocap": "/raw"}, (0, 1, 2))).nodes
    runs = {k.split("/")[-1] for k in nodes if "/seed0/" in k}
    assert runs == {f"{n}-m{p}" for n in ("unimodal", "ume", "qmf", "mla") for p in (10, 20, 30, 40, 50, 60, 70)}
    assert "data.missing_rate=0.7" in nodes["iemocap/seed2/mla-m70"].overrides
    ume = nodes["iemocap/seed1/ume-m40"]
    assert ("teachers", "iemocap/seed1/unimodal-m40") in {(i.key, i.node) for i in ume.inputs}
    smoke = paper_plans.build(paper_plans.Options("mla-table2", {}, (0, 1, 2), smoke=True)).nodes
    assert sorted(k.split("/")[-1] for k in smoke if "/seed" in k) == ["mla-m30", "qmf-m30", "ume-m30", "unimodal-m30"]
    assert "--max-skip-frac" in smoke["iemocap/prep"].args
    assert any(o.startswith("data.tokenizer=") for o in smoke["iemocap/prep"].overrides)  # prep reads the tokenizer
    seed = tmp_path / "iemocap" / "seed0"
    for name, acc in (("ume-m30", 61.0), ("qmf-m30", 62.0), ("mla-m30", 63.0)):
        write(seed / name, {"test_accuracy": acc})
    text = paper_tables.render("mla-table2", tmp_path)
    assert "| Late Fusion | 72.95 ± 1.12 | — | 69.06 ± 0.88 | — | 64.89 ± 1.25 | 61.0 |" in text  # Table 6's std
    assert "| MLA (Ours) | 75.07 ± 1.04 | — | 72.33 ± 1.16 | — | 68.47 ± 1.22 | 63.0 |" in text
    assert "| MMIN | 71.84 ± 0.97 | — |" in text and "cited: not implemented" in text


def test_modality_gap_figure_reads_the_probes_gaps_and_checks_the_papers_claim(tmp_path, monkeypatch):
    nodes = paper_plans.build(paper_plans.Options("mla-fig3", {"food101": "/raw"}, (0, 1))).nodes
    assert ("run", "food101/seed1/mla") in {(i.key, i.node) for i in nodes["food101/seed1/probe-mla"].inputs}
    for name in ("naive_concat", "mla"):  # both on the same encoders
        recipe = load_recipe([REPO / f"recipes/food101/{name}.yaml"])
        assert recipe.model.encoders["text"].args["config"]["hidden_size"] == 512
    for seed, (concat, mla) in enumerate(((0.30, 0.50), (0.40, 0.70))):
        folder = tmp_path / "runs" / "food101" / f"seed{seed}"
        write(folder / "probe-naive_concat", {"modality_gap": {"image-text": concat}})
        write(folder / "probe-mla", {"modality_gap": {"image-text": mla}})
        write(folder / "naive_concat", {"test_accuracy": 80.0})
        write(folder / "mla", {"test_accuracy": 85.0})
    monkeypatch.chdir(tmp_path)  # the figure goes to results/ under the working directory
    text = paper_tables.render("mla-fig3", tmp_path / "runs")
    assert "| Concat | (a figure, no value printed) | 0.3500 ± 0.0707 | 80.0 ± 0.0 |" in text
    assert "| MLA (Ours) | (a figure, no value printed) | 0.6000 ± 0.1414 |" in text
    assert "larger modality gap\" than concatenation: holds on ours" in text
    assert (tmp_path / "results" / "mla-fig3.png").stat().st_size > 0
