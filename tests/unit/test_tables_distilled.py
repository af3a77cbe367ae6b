"""Table 18, paper 001's Table 1 and Figure 2 (mmtool/analysis/tables_distilled.py): their plans, and their
rendering from results trees written by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmtool.analysis import paper_plans, paper_tables
from mmtool.analysis.tables_distilled import FIG2_METHODS
from mmtool.config import load_recipe
from mmtool.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, obj: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(obj))


def _inputs(node) -> set[tuple[str, str]]:
    return {(i.key, i.node) for i in node.inputs if i.key}


def test_table18_distils_from_the_uni_modal_run_and_decides_on_the_distilled_one():
    plan = paper_plans.build(paper_plans.Options("table18", {"vggsound": "/raw"}, (0, 1, 2)))
    names = [k for k in plan.nodes if not k.endswith("prep")]
    assert names == [f"vggsound/seed0/{n}" for n in ("unimodal", "distilled", "decide-distilled", "umt",
                                                     "probe-distilled", "probe-umt")]  # fmt: skip
    distilled = plan.nodes["vggsound/seed0/distilled"]
    assert distilled.command == "pretrain-unimodal" and distilled.recipes == ("recipes/vggsound/pretrain_distill.yaml",)
    assert _inputs(distilled) == {("teachers", "vggsound/seed0/unimodal")}
    assert _inputs(plan.nodes["vggsound/seed0/decide-distilled"]) == {("teachers", "vggsound/seed0/distilled")}
    assert _inputs(plan.nodes["vggsound/seed0/probe-distilled"]) == {("run", "vggsound/seed0/distilled")}
    assert _inputs(plan.nodes["vggsound/seed0/umt"]) == {("teachers", "vggsound/seed0/unimodal")}


def test_ws_table1_runs_umt_with_one_teacher_and_probes_every_method():
    plan = paper_plans.build(paper_plans.Options("ws-table1", {}, (0,), smoke=True))
    audio, video = plan.nodes["vggsound/seed0/umt_audio"], plan.nodes["vggsound/seed0/umt_video"]
    assert [n.recipes[0] for n in (audio, video)] == [f"recipes/vggsound/umt_{m}.yaml" for m in ("audio", "video")]
    ws2 = paper_plans.build(paper_plans.Options("ws-table2", {}, (0,), smoke=True)).nodes["vggsound/seed0/umt_audio"]
    assert (ws2.recipes, ws2.overrides, ws2.inputs) == (audio.recipes, audio.overrides, audio.inputs)  # shared run
    probes = sorted(k.split("/")[-1] for k in plan.nodes if "/probe-" in k)
    assert probes == sorted(f"probe-{n}" for n in ("unimodal", "naive", "gblending", "umt", "umt_audio", "umt_video"))
    recipe = load_recipe([REPO / r for r in audio.recipes], list(audio.overrides))
    assert recipe.method.name == "umt" and tuple(recipe.method.params["modalities"]) == ("audio",)


def test_fig2_trains_with_a_snapshot_every_epoch_and_probes_one_modality_per_dataset():
    plan = paper_plans.build(paper_plans.Options("fig2", {}, (0,), smoke=True))
    for dataset, modality in (("vggsound", "video"), ("ucf101", "flow")):
        for name in FIG2_METHODS.values():
            snaps = plan.nodes[f"{dataset}/seed0/{name}-snapshots"]
            assert "train.snapshot_every=1" in snaps.overrides
            assert snaps.command == ("pretrain-unimodal" if name == "unimodal" else "train")
            curve = plan.nodes[f"{dataset}/seed0/curve-{name}"]
            assert _inputs(curve) == {("run", f"{dataset}/seed0/{name}-snapshots")}
            recipe = load_recipe([REPO / r for r in curve.recipes])
            assert recipe.probe.over_training and recipe.modalities == (modality,)
    with pytest.raises(UserError, match="NAME=DIR"):
        paper_plans.parse_data("fig2", ["/raw"])


def test_distill_recipe_is_umt_with_weight_50_in_a_pretrain_stage():
    recipe = load_recipe(REPO / "recipes/vggsound/pretrain_distill.yaml")
    assert recipe.stage == "pretrain" and recipe.method.name == "umt"
    assert recipe.method.params["distill_weight"] == 50.0 and recipe.method.params["task_weight"] == 1.0


def test_table18_cells_come_from_the_probes_decide_and_umt(tmp_path):
    seed = tmp_path / "vggsound" / "seed0"
    _write(seed / "probe-distilled", {"probes": {"video": {"test_accuracy": 26.0}, "audio": {"test_accuracy": 46.5}}})
    _write(seed / "decide-distilled", {"mm_linear_accuracy": 52.0})
    _write(seed / "probe-umt", {"probes": {"video": {"test_accuracy": 24.0}, "audio": {"test_accuracy": 45.0}}})
    _write(seed / "umt", {"test_accuracy": 53.0})
    text = paper_tables.render("table18", tmp_path)
    assert "| Linear Clf | 25.99 | 26.0 | 46.00 | 46.5 | 52.98 | 52.0 |" in text
    assert "| UMT | 24.43 | 24.0 | 45.89 | 45.0 | 53.46 | 53.0 |" in text


def test_ws_table1_shows_train_and_test_and_no_cell_for_a_missing_encoder(tmp_path):
    seed = tmp_path / "vggsound" / "seed0"
    both = {m: {"test_accuracy": 40.0 + i, "train_accuracy": 90.0 + i} for i, m in enumerate(("audio", "video"))}
    _write(seed / "probe-unimodal", {"probes": both})
    _write(seed / "probe-umt_video", {"probes": both})
    text = paper_tables.render("ws-table1", tmp_path)
    assert "| Audio-only Training | 46 | 40.0 | / | — | 99.95 | 90.0 | / | — |" in text
    assert "| Video-only Training | / | — | 23.78 | 41.0 | / | — | 99.47 | 91.0 |" in text
    assert "| Video-only Distillation | 40.76 | 40.0 | 24.5 | 41.0 | 70.95 | 90.0 | 82.7 | 91.0 |" in text
    assert "| Naive Fusion | 43.48 | — | 15.86 | — |" in text


def _curve(acc: list[float]) -> list[dict]:
    return [{"epoch": e, "test_accuracy": a, "train_accuracy": a + 10, "val_accuracy": a} for e, a in enumerate(acc, 1)]


def test_fig2_lists_our_curves_checks_the_claim_and_draws_the_figure(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    vgg = tmp_path / "runs" / "vggsound" / "seed0"
    _write(vgg / "curve-unimodal", {"curves": {"video": _curve([20.0, 30.0])}})
    _write(vgg / "curve-naive", {"curves": {"video": _curve([10.0, 15.0])}})
    _write(vgg / "curve-gblending", {"curves": {"video": _curve([12.0, 31.0])}})
    text = paper_tables.render("fig2", tmp_path / "runs", smoke=True)
    assert text.startswith("> SMOKE mode")
    assert "| Method | epoch 1 | epoch 2 |" in text
    assert "| Uni-Modal Training | 20.0 (30.0) | 30.0 (40.0) |" in text
    assert "| Linear-Fusion | 10.0 (20.0) | 15.0 (25.0) |" in text
    assert "at or above the uni-modal encoder: G-Blending at epoch 2." in text
    assert "Ours on ucf101: not run." in text and "values are not printed" in text
    assert (tmp_path / "results" / "smoke" / "fig2.png").stat().st_size > 0
    _write(vgg / "curve-gblending", {"curves": {"video": _curve([12.0, 29.0])}})
    assert "holds: every fusion method's encoder is below" in paper_tables.render("fig2", tmp_path / "runs")
    assert (tmp_path / "results" / "fig2.png").is_file()
