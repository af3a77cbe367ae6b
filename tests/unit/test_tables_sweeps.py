"""Paper 000's Tables 12-15 and paper 001's Table 2 (mmtool.analysis.tables_sweeps): the runs, overrides and
inputs each plan makes (SMOKE and real), that the sweeps share runs with Tables 5 and 8, and the cells each
table reads from a hand-made results tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmtool.analysis import paper_plans, paper_tables, tables_sweeps
from mmtool.config import load_recipe

SWEEPS = ("table12", "table13", "table14", "table15", "ws-table2")
REAL = {"vggsound": "/raw/vggsound", "kinetics400": "/raw/k400"}
SEED = ("data.seed=0", "train.seed=0")


def _plan(table: str, smoke: bool = False, data: dict | None = None, seeds=(0, 1, 2)):
    data = {} if smoke else {k: v for k, v in (REAL if data is None else data).items()
                             if k in paper_plans.TABLES[table].datasets}  # fmt: skip
    return paper_plans.build(paper_plans.Options(table, data, seeds, smoke)).nodes


def _runs(nodes: dict, dataset: str = "vggsound", seed: int = 0) -> list[str]:
    prefix = f"{dataset}/seed{seed}/"
    return [k.removeprefix(prefix) for k in nodes if k.startswith(prefix)]


def _inputs(node) -> set[tuple[str, str]]:
    return {(i.key, i.node) for i in node.inputs if i.key}


def test_every_table_is_registered_with_a_source_per_paper_cell():
    for name in SWEEPS:
        assert name in paper_plans.TABLES and name in paper_tables.PAPER and name in paper_tables.TABLE_NAMES
        table = paper_tables.PAPER[name]
        assert list(table.rows) == list(paper_tables.OURS[name]), name
        for row, cells in table.rows.items():
            assert len(cells) == len(table.columns) == len(paper_tables.OURS[name][row]), (name, row)
        ran = {r.name for r in paper_plans.TABLES[name].runs}
        read = {s.run for row in paper_tables.OURS[name].values() for s in row if s is not None}
        assert read <= ran, (name, read - ran)  # every cell reads a run its own plan makes


def test_table12_trains_and_probes_naive_fusion_under_six_optimizers():
    nodes = _plan("table12", smoke=True)
    assert list(nodes)[0] == "vggsound/prep"
    trains = ["naive-sgd", "naive-rmsprop", "naive-adagrad", "naive-adadelta", "naive-adamw", "naive"]
    assert _runs(nodes) == ["unimodal", *trains, "probe-unimodal", *(f"probe-{r}" for r in trains)]
    assert nodes["vggsound/seed0/naive-sgd"].overrides == (*SEED, "optim.name=sgd")
    assert nodes["vggsound/seed0/naive-adamw"].overrides == (*SEED, "optim.name=adamw", "optim.weight_decay=0.01")
    assert nodes["vggsound/seed0/naive"].overrides == SEED  # Adam: the recipe's own optimizer, Table 5's run
    assert nodes["vggsound/seed0/naive-adagrad"].recipes == ("recipes/vggsound/naive.yaml",
                                                              "recipes/_base/smoke/vggsound.yaml")  # fmt: skip
    probe = nodes["vggsound/seed0/probe-naive-adadelta"]
    assert probe.command == "probe" and _inputs(probe) == {("run", "vggsound/seed0/naive-adadelta")}
    real = _plan("table12")
    assert _runs(real) == _runs(nodes) and not _runs(real, seed=1)  # the first seed only
    assert real["vggsound/seed0/naive-rmsprop"].recipes == ("recipes/vggsound/naive.yaml",)


def test_table13_sweeps_umt_distillation_weight_on_both_datasets():
    nodes = _plan("table13")
    weights = ["umt-w0", "umt-w1", "umt-w10", "umt-w20", "umt", "umt-w100"]
    for ds in ("vggsound", "kinetics400"):
        assert _runs(nodes, ds) == ["unimodal", *weights] and not _runs(nodes, ds, 1)
        assert nodes[f"{ds}/seed0/umt-w20"].overrides == (*SEED, "method.distill_weight=20")
        assert nodes[f"{ds}/seed0/umt-w20"].recipes == (f"recipes/{ds}/umt.yaml",)
        assert _inputs(nodes[f"{ds}/seed0/umt-w0"]) == {("teachers", f"{ds}/seed0/unimodal")}
    assert nodes["kinetics400/seed0/umt"].overrides == SEED  # 50: the recipe's weight, Tables 5 and 7's run
    only_vgg = _plan("table13", data={"vggsound": "/raw/vggsound"})
    assert not _runs(only_vgg, "kinetics400")
    smoke = _plan("table13", smoke=True)
    assert "kinetics400/prep" in smoke and smoke["kinetics400/seed0/umt-w1"].recipes[-1].endswith("kinetics400.yaml")


def test_table14_and_ws_table2_run_every_seed_and_share_runs_with_tables_5_and_8():
    t14, ws = _plan("table14"), _plan("ws-table2")
    assert _runs(t14, seed=2) == ["unimodal", "naive", "dropout", "modality_dropout", "umt"]
    assert _runs(ws, seed=2) == ["unimodal", "naive", "dropout", "modality_dropout", "finetune", "umt_video",
                                 "umt_audio", "self_distill_feature", "gblending", "umt"]  # fmt: skip
    assert _inputs(ws["vggsound/seed1/self_distill_feature"]) == {("method.teacher_run", "vggsound/seed1/naive")}
    for run in ("finetune", "umt_video", "umt_audio"):
        assert _inputs(ws[f"vggsound/seed1/{run}"]) == {("teachers", "vggsound/seed1/unimodal")}
        assert ws[f"vggsound/seed1/{run}"].recipes == (f"recipes/vggsound/{run}.yaml",)
    t5, t8 = _plan("table5", data={"vggsound": "/raw/vggsound"}), _plan("table8")
    for key in ("vggsound/seed1/naive", "vggsound/seed1/gblending", "vggsound/seed1/umt"):
        assert ws[key] == t5[key] == t14.get(key, ws[key])  # the same node: the same identity, one run
    assert ws["vggsound/seed2/self_distill_feature"] == t8["vggsound/seed2/self_distill_feature"]
    assert len(_plan("ws-table2", smoke=True)) == 1 + 10  # SMOKE: one seed


def test_table15_sweeps_the_encoder_lr_of_fine_tuning_and_probes_each_run():
    nodes = _plan("table15", smoke=True)
    trains = ["finetune", "finetune-enc1e-4", "finetune-enc1e-5", "finetune-enc1e-6", "finetune-enc0"]
    assert _runs(nodes) == ["unimodal", *trains, *(f"probe-{r}" for r in trains)]
    scales = {"finetune": (), "finetune-enc1e-4": ("method.encoder_lr_scale=0.1",),
              "finetune-enc1e-6": ("method.encoder_lr_scale=0.001",), "finetune-enc0": ("method.encoder_lr_scale=0.0",)}
    for run, extra in scales.items():
        assert nodes[f"vggsound/seed0/{run}"].overrides == (*SEED, *extra)
        assert _inputs(nodes[f"vggsound/seed0/{run}"]) == {("teachers", "vggsound/seed0/unimodal")}
    assert _inputs(nodes["vggsound/seed0/probe-finetune-enc0"]) == {("run", "vggsound/seed0/finetune-enc0")}
    assert _plan("ws-table2")["vggsound/seed0/finetune"] == _plan("table15")["vggsound/seed0/finetune"]


@pytest.mark.parametrize("table", SWEEPS)
def test_every_run_of_the_real_plan_validates_with_its_overrides(table):
    """Each run's recipe files plus its overrides load (a misspelt key or a bad value fails here, not on a GPU)."""
    for node in _plan(table).values():
        if not node.is_prep:
            recipe = load_recipe(list(node.recipes), list(node.overrides))
            for override in node.overrides[len(SEED):]:
                key, value = override.split("=")
                section, field = key.split(".")
                got = getattr(recipe, section).params[field] if section == "method" else getattr(recipe.optim, field)
                assert str(got) == value or float(got) == float(value), (node.key, override)


# --------------------------------------------------------------------------------------------- rendering
def _write(path: Path, obj: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(obj))


def _row(text: str, row: str) -> list[str]:
    """The cells of ``row`` after its name: paper, ours, paper, ours, ..."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == row:
            return cells[1:]
    raise AssertionError(f"no row {row!r} in\n{text}")


def _ours(text: str, row: str) -> list[str]:
    return _row(text, row)[1::2]


def _paper(text: str, row: str) -> list[str]:
    return _row(text, row)[::2]


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, list[str]]:
    """Every run the five tables read: test accuracy 10 + i for the i-th run name, probes at + 0.1 (audio)
    and + 0.2 (video); vggsound on seeds 0 and 1 (seed 1 two points higher), kinetics400 on seed 0 (+ 30)."""
    names = sorted({s.run for t in SWEEPS for row in paper_tables.OURS[t].values() for s in row if s is not None})
    for seed, shift in ((0, 0.0), (1, 2.0)):
        for i, run in enumerate(names):
            acc = 10.0 + i + shift
            folder = tmp_path / "vggsound" / f"seed{seed}" / run
            if run.startswith("probe-"):
                probes = {"audio": {"test_accuracy": acc + 0.1}, "video": {"test_accuracy": acc + 0.2}}
                _write(folder, {"probes": probes})
            else:
                _write(folder, {"test_accuracy": acc})
            if seed == 0 and run.startswith("umt"):
                _write(tmp_path / "kinetics400" / "seed0" / run, {"test_accuracy": acc + 30})
    return tmp_path, names


def _acc(names: list[str], run: str, add: float = 0.0) -> float:
    return 10.0 + names.index(run) + add


def test_each_table_reads_its_rows_from_the_runs_of_its_sweep(tree):
    tree, names = tree
    t12 = paper_tables.render("table12", tree)
    sgd, probe = _acc(names, "naive-sgd"), _acc(names, "probe-naive-sgd")
    assert _ours(t12, "SGD") == [f"{sgd + 1:.1f} ± 1.4", f"{probe + 1.1:.1f} ± 1.4", f"{probe + 1.2:.1f} ± 1.4"]
    assert _row(t12, "Uni-Training") == ["/", "—", "45.15", f"{_acc(names, 'probe-unimodal') + 1.1:.1f} ± 1.4",
                                              "23.17", f"{_acc(names, 'probe-unimodal') + 1.2:.1f} ± 1.4"]  # fmt: skip
    t13 = paper_tables.render("table13", tree)
    weights = ("umt-w0", "umt-w1", "umt-w10", "umt-w20", "umt", "umt-w100")
    assert _ours(t13, "Kinetics-400") == [f"{_acc(names, r, 30):.1f}" for r in weights]  # one seed: no std
    assert _paper(t13, "VGG-Sound") == ["49.46", "49.51", "51.31", "51.51", "53.46", "53.11"]
    t15 = paper_tables.render("table15", tree)
    zero = _acc(names, "finetune-enc0") + 1
    assert _ours(t15, "0")[0] == f"{zero:.1f} ± 1.4" and _paper(t15, "0") == ["50.95", "45.15", "23.17"]
    ws = paper_tables.render("ws-table2", tree)
    assert _row(ws, "Audio-only Distillation") == ["48.84 ± 0.27", f"{_acc(names, 'umt_audio', 1):.1f} ± 1.4"]
    assert _ours(ws, "Self Distillation") == [f"{_acc(names, 'self_distill_feature', 1):.1f} ± 1.4"]
    t14 = paper_tables.render("table14", tree, smoke=True)
    assert t14.startswith(paper_tables.SMOKE_BANNER)
    assert _row(t14, "Modal-Drop") == ["51.37", f"{_acc(names, 'modality_dropout', 1):.1f} ± 1.4"]
    assert "Ours on vggsound: mean ± std over 2 seeds" in t14


def test_the_sweep_tables_name_their_choices_in_notes():
    notes = {name: " ".join(paper_tables.PAPER[name].notes) for name in SWEEPS}
    assert "lr 1e-3" in notes["table12"] and "weight_decay 0.01" in notes["table12"]
    assert "ours at 0 is UMT's recipe without distillation" in notes["table13"]
    assert "feature-level" in notes["ws-table2"] and "1e-3 x method.encoder_lr_scale" in notes["table15"]
    assert tables_sweeps.ADAMW_DECAY > 0  # adamw refuses weight_decay 0
