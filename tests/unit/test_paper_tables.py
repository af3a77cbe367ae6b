"""The paper-table builders map each run of a fabricated run tree to the right row and column."""

import json
import subprocess
from pathlib import Path

import pytest

from mmtool.analysis import paper_tables as pt

REPO = Path(__file__).resolve().parents[2]

# Every run gets its own accuracy, so a cell shows which run it was read from.
TRAIN = {
    "naive": 1,
    "naive_mlp": 2,
    "naive_attention": 3,
    "aux_ce": 4,
    "gblending": 5,
    "ogm_ge": 6,
    "umt": 7,
    "self_distill": 8,
    "self_distill_feature": 9,
    "ume": 10,
}
BASE = {"ucf101": 10.0, "vggsound": 50.0, "kinetics400": 70.0}
PROBED = {"ucf101": {"rgb": 0.1, "flow": 0.2}, "vggsound": {"video": 0.3, "audio": 0.4},
          "kinetics400": {"video": 0.6, "audio": 0.7}}  # fmt: skip
UNIMODAL_PROBE = 20.0  # probe-unimodal: BASE + 20 + modality offset
DECIDE = {
    "ucf101": {
        "mm_linear_accuracy": 84.0,
        "average_accuracy": 86.0,
        "verdict": "UME",
        "split_classifier_accuracy": {"rgb": 68.0, "flow": 52.0},
        "unimodal_accuracy": {"rgb": 77.0, "flow": 75.0},
    },
    "vggsound": {
        "mm_linear_accuracy": 51.0,
        "average_accuracy": 46.0,
        "verdict": "UMT",
        "split_classifier_accuracy": {"video": 20.0, "audio": 40.0},
        "unimodal_accuracy": {"video": 23.0, "audio": 45.0},
    },
    "kinetics400": {
        "mm_linear_accuracy": 76.0,
        "average_accuracy": 74.0,
        "verdict": "UMT",
        "split_classifier_accuracy": {"video": 60.0, "audio": 20.0},
        "unimodal_accuracy": {"video": 74.0, "audio": 23.0},
    },
}


def write(path, obj):
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(obj))


def fabricate(root, datasets=("ucf101", "vggsound"), seed=0, shift=0.0, verdicts=None):
    """Every run the table targets write, for ``seed``; accuracies moved by ``shift``."""
    for ds in datasets:
        seed_dir = root / ds / f"seed{seed}"
        mods = PROBED[ds]
        write(seed_dir / "unimodal", {"stage": "pretrain", "modalities": {m: {"test_accuracy": 0.0} for m in mods}})
        write(
            seed_dir / "probe-unimodal",
            {"probes": {m: {"test_accuracy": BASE[ds] + UNIMODAL_PROBE + o + shift} for m, o in mods.items()}},
        )
        for run, i in TRAIN.items():
            acc = BASE[ds] + i + shift
            write(seed_dir / run, {"test_accuracy": acc})
            write(seed_dir / f"probe-{run}", {"probes": {m: {"test_accuracy": acc + o} for m, o in mods.items()}})
        decide = {k: (v + shift if isinstance(v, float) else v) for k, v in DECIDE[ds].items()}
        if verdicts:
            decide["verdict"] = verdicts[ds]
        write(seed_dir / "decide", decide)


def ours(text, row):
    """Our cells of ``row`` in a rendered table (columns alternate paper, ours)."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == row:
            return cells[2::2]
    raise AssertionError(f"no row {row!r} in\n{text}")


def paper(text, row):
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == row:
            return cells[1::2]
    raise AssertionError(f"no row {row!r}")


@pytest.fixture
def runs(tmp_path):
    fabricate(tmp_path)
    return tmp_path


def test_every_paper_row_has_a_source_per_column():
    assert set(pt.PAPER) == set(pt.OURS) >= {"table1", "table3", "table4", "table5", "table7", "table8", "table9",
                                                 "table10"}  # fmt: skip  (modules in EXTRA add theirs)
    for name, table in pt.PAPER.items():
        assert list(table.rows) == list(pt.OURS[name]), name
        for row, cells in table.rows.items():
            assert len(cells) == len(table.columns) == len(pt.OURS[name][row]), (name, row)


def test_table1_probes_each_method_on_both_datasets(runs):
    text = pt.render("table1", runs)
    expected = {"Linear-Fusion": 1, "MLP-Fusion": 2, "Attention-Fusion": 3, "G-Blending": 5, "OGM-GE": 6}
    for row, i in expected.items():
        assert ours(text, row) == [f"{50 + i}.3", f"{50 + i}.4", f"{10 + i}.1", f"{10 + i}.2"], row
    assert ours(text, "Uni-Modal Training") == ["70.3", "70.4", "30.1", "30.2"]
    assert paper(text, "Attention-Fusion") == ["13.31", "43.97", "74.84", "7.72"]
    assert paper(text, "G-Blending")[1] == "43.90"  # the paper's two decimals are kept


def test_table3_reads_decide_and_leaves_datasets_not_run_empty(runs):
    text = pt.render("table3", runs)
    assert ours(text, "VGG-Sound") == ["51.0", "46.0", "UMT"]
    assert ours(text, "UCF101") == ["84.0", "86.0", "UME"]
    assert ours(text, "Kinetics-400") == ours(text, "ModelNet40") == ["—", "—", "—"]
    assert paper(text, "UCF101") == ["84.4", "86.8", "UME"]
    assert "Ours on kinetics400: not run" in text and "Ours on modelnet40: not run" in text


def test_table3_has_a_modelnet40_row_from_its_decide_run(tmp_path):
    """ModelNet40 alone: its row from its decide run; the datasets not run say so."""
    (tmp_path / "modelnet40" / "seed0" / "decide").mkdir(parents=True)
    write(tmp_path / "modelnet40" / "seed0" / "decide", {"mm_linear_accuracy": 91.3, "average_accuracy": 91.5,
                                                         "verdict": "UME"})  # fmt: skip
    text = pt.render("table3", tmp_path)
    assert ours(text, "ModelNet40") == ["91.3", "91.5", "UME"] and paper(text, "ModelNet40") == ["91.7", "91.9", "UME"]
    assert ours(text, "UCF101") == ["—", "—", "—"] and "Ours on ucf101: not run" in text


def test_table10_compares_ume_with_the_mmtm_model_over_seeds(tmp_path):
    for seed, shift in ((0, 0.0), (1, 1.0)):
        for run, acc in (("mmtm", 88.0), ("rubi", 88.25), ("balanced_random", 89.0), ("balanced", 90.0), ("ume", 91.0)):
            write(tmp_path / "modelnet40" / f"seed{seed}" / run, {"test_accuracy": acc + shift})
    text = pt.render("table10", tmp_path)
    assert ours(text, "multi-modal (vanilla)") == ["88.5 ± 0.7"] and ours(text, "+guided") == ["90.5 ± 0.7"]
    assert ours(text, "UME (ours)") == ["91.5 ± 0.7"] and ours(text, "+RUBi") == ["88.8 ± 0.7"]
    assert paper(text, "UME (ours)") == ["91.92 ± 0.14"] and "recipes/modelnet40/rubi.yaml" in text
    assert "Ours on modelnet40: mean ± std over 2 seeds" in text


def test_table4_splits_decide_per_modality(runs):
    text = pt.render("table4", runs)
    assert ours(text, "Uni-Clf from MM Clf") == ["68.0", "52.0"]
    assert ours(text, "Uni-Modal Model") == ["77.0", "75.0"]


def test_table5_methods_on_vggsound_and_kinetics(runs):
    text = pt.render("table5", runs)
    rows = {
        "Linear-Head": 1,
        "MLP-Head": 2,
        "Atten-Head": 3,
        "Aux-CELoss": 4,
        "G-Blending": 5,
        "OGM-GE": 6,
        "UMT (ours)": 7,
    }
    for row, i in rows.items():
        assert ours(text, row) == [f"{50 + i}.0", "—"], row
    assert "Ours on kinetics400: not run" in text
    fabricate(runs, datasets=("kinetics400",))
    text = pt.render("table5", runs)
    for row, i in rows.items():
        assert ours(text, row) == [f"{50 + i}.0", f"{70 + i}.0"], row
    assert paper(text, "OGM-GE") == ["50.6*", "74.5"]
    assert paper(text, "G-Blending") == ["50.4", "75.8*"]


def test_table7_probes_uni_naive_and_umt(runs):
    text = pt.render("table7", runs)
    assert ours(text, "Uni-Train") == ["70.3", "70.4", "—", "—"]
    assert ours(text, "MM Baseline") == ["51.3", "51.4", "—", "—"]
    assert ours(text, "UMT") == ["57.3", "57.4", "—", "—"]
    fabricate(runs, datasets=("kinetics400",))
    text = pt.render("table7", runs)
    assert ours(text, "Uni-Train") == ["70.3", "70.4", "90.6", "90.7"]  # Kinetics-400 RGB is its video encoder
    assert ours(text, "UMT") == ["57.3", "57.4", "77.6", "77.7"]


def test_table8_self_distillation_rows(runs):
    text = pt.render("table8", runs)
    assert [ours(text, r)[0] for r in ("Baseline", "Self-Distill (label)", "Self-Distill (feature)", "UMT")] == [
        "51.0",
        "58.0",
        "59.0",
        "57.0",
    ]


def test_table9_joint_methods_and_ume_on_ucf101(runs):
    text = pt.render("table9", runs)
    rows = {
        "Linear-Head": 1,
        "MLP-Head": 2,
        "Atten-Head": 3,
        "Aux-CELoss": 4,
        "G-Blending": 5,
        "OGM-GE": 6,
        "UME (ours)": 10,
    }
    for row, i in rows.items():
        assert ours(text, row) == [f"{10 + i}.0"], row
    assert paper(text, "UME (ours)") == ["86.8"]


def test_seeds_give_mean_and_std_and_verdict_counts(tmp_path):
    fabricate(tmp_path, seed=0, verdicts={"ucf101": "UME", "vggsound": "UMT"})
    fabricate(tmp_path, seed=1, shift=2.0, verdicts={"ucf101": "UMT", "vggsound": "UMT"})
    text = pt.render("table8", tmp_path)
    assert ours(text, "Baseline") == ["52.0 ± 1.4"]
    assert "mean ± std over 2 seeds" in text
    table3 = pt.render("table3", tmp_path)
    assert ours(table3, "VGG-Sound")[2] == "UMT"
    assert set(ours(table3, "UCF101")[2].split(", ")) == {"UME 1/2", "UMT 1/2"}


def test_a_dataset_that_was_not_run_shows_dashes(tmp_path):
    fabricate(tmp_path, datasets=("ucf101",))
    text = pt.render("table3", tmp_path)
    assert ours(text, "VGG-Sound") == ["—", "—", "—"]
    assert ours(text, "UCF101")[0] == "84.0"
    assert "Ours on vggsound: not run" in text


def test_main_writes_the_table(runs, tmp_path, capsys):
    out = tmp_path / "results" / "smoke" / "table9.md"
    pt.main(["table9", str(runs), str(out)])
    assert out.read_text().startswith("# Table 9.")
    assert "UME (ours)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="usage"):
        pt.main(["table99", str(runs), str(out)])


def test_smoke_tables_say_so_in_their_first_line(runs, tmp_path, capsys):
    out = tmp_path / "results" / "smoke" / "table9.md"
    pt.main(["--smoke", "table9", str(runs), str(out)])
    lines = out.read_text().splitlines()
    assert lines[0] == pt.SMOKE_BANNER and pt.SMOKE_BANNER.startswith("> SMOKE mode: generated fixture data")
    assert lines[2].startswith("# Table 9.") and capsys.readouterr().out.startswith(pt.SMOKE_BANNER)
    assert "SMOKE" not in pt.render("table9", runs)  # real runs: no banner


@pytest.mark.parametrize(("args", "flag"), [(["SMOKE=1"], True), (["DATA=/raw/UCF101"], False)])
def test_make_passes_smoke_to_reproduce(args, flag):
    dry = subprocess.run(["make", "-n", "table9", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    build = [line for line in dry.stdout.splitlines() if " reproduce table9" in line]
    assert len(build) == 1 and ("--smoke" in build[0]) == flag, dry.stdout + dry.stderr
    assert ("--data /raw/UCF101" in build[0]) != flag


def test_render_reads_the_run_folders_a_plan_names(runs, tmp_path):
    """`mmtool reproduce` names each run <run>-<id12>: the builder reads the folders it is given, not others."""
    seed = runs / "ucf101" / "seed0"
    (seed / "naive").rename(seed / "naive-0123456789ab")
    write(seed / "naive-ffffffffffff", {"test_accuracy": 99.0})  # another recipe's run: not this table's
    text = pt.render("table9", runs, runs={("ucf101", "naive"): [seed / "naive-0123456789ab"]})
    assert ours(text, "Linear-Head") == ["11.0"] and ours(text, "UME (ours)") == ["—"]
