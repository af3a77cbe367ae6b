"""Per-class tables (paper 000 Tables 2, 16, 17; paper 001 Figure 2) and the cited Kinetics-400 Tables 6 and
22: the selection rules on hand-made confusion matrices, rendering from a hand-made run tree, the plans."""

from __future__ import annotations

import json
import math

from mmtool.analysis import paper_plans, paper_tables, tables_cited
from mmtool.analysis import tables_classes as tc


def cm_from(acc: list[int], n: int = 10) -> list[list[int]]:
    """A confusion matrix with ``n`` test samples per class, ``acc[c]`` of them right (the rest: next class)."""
    k = len(acc)
    out = [[0] * k for _ in range(k)]
    for c, a in enumerate(acc):
        out[c][c] = a
        out[c][(c + 1) % k] += n - a
    return out


def write(folder, obj):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(obj))


# ------------------------------------------------------------------------------------------ selection rules
def test_per_class_reads_rows_of_a_confusion_matrix_and_nan_for_an_empty_class():
    acc = tc.per_class([[3, 1, 0], [0, 0, 0], [2, 2, 4]])
    assert acc[0] == 75.0 and math.isnan(acc[1]) and acc[2] == 50.0


def test_top_k_by_gap_over_the_best_unimodal_picks_exactly_the_constructed_classes():
    # 30 classes; fusion beats the best uni-modal model by 1..10 points on classes 20..29 and loses elsewhere
    n = 30
    rgb = [50.0] * n
    flow = [40.0] * n
    fusion = [45.0] * n
    for i, c in enumerate(range(20, 30)):
        fusion[c] = 50.0 + 1 + i
    flow[3] = math.nan  # a class without test samples is never chosen
    fusion[3] = 99.0
    rows = {"Uni-RGB": rgb, "Uni-Flow": flow, "Naive Fusion": fusion}
    chosen = tc.CLASS_TABLES["table17"].rule.select(rows)
    assert chosen == list(range(29, 19, -1))  # largest gap first


def test_beyond_sum_keeps_only_classes_where_fusion_beats_the_sum_and_at_most_ten():
    n = 40
    video, audio, fusion = [10.0] * n, [20.0] * n, [25.0] * n  # 25 < 30: no class by default
    for c, margin in ((5, 3.0), (7, 9.0), (11, 1.0)):
        fusion[c] = 30.0 + margin
    rows = {"Uni-RGB": video, "Uni-Audio": audio, "Naive Fusion": fusion, "Avg Pred": [0.0] * n}
    assert tc.CLASS_TABLES["table2"].rule.select(rows) == [7, 5, 11]
    many = {**rows, "Naive Fusion": [31.0 + c for c in range(n)]}  # every class beats the sum
    assert tc.CLASS_TABLES["table2"].rule.select(many) == list(range(39, 29, -1))


def test_figure2_picks_the_audio_models_top_20_classes():
    audio = [float(c % 7) for c in range(50)]  # best: the classes with c % 7 == 6, then 5, ...
    rows = {"Uni-Audio": audio}
    chosen = tc.FIG2_RULE.select(rows)
    assert len(chosen) == 20 and {audio[c] for c in chosen} == {6.0, 5.0, 4.0}
    assert chosen[:7] == [6, 13, 20, 27, 34, 41, 48]  # ties: lower id first


# ------------------------------------------------------------------------------------------ rendering
def ucf_tree(root, n=80):
    """UCF101 runs where fusion beats both uni-modal models on classes 60..69 by 10..19 points (of 20 samples)."""
    rgb, flow, fusion, avg = [10] * n, [8] * n, [9] * n, [12] * n
    for i, c in enumerate(range(60, 70)):
        fusion[c] = min(20, 10 + 1 + i)
    rgb[5] = 17  # paper id 6 (classInd counts from 1) is our label 5
    seed = root / "ucf101" / "seed0"
    uni = {m: {"test_confusion": cm_from(a, 20), "test_accuracy": 0.0} for m, a in (("rgb", rgb), ("flow", flow))}
    write(seed / "unimodal", {"modalities": uni})
    write(seed / "naive", {"test_confusion": cm_from(fusion, 20)})
    write(seed / "ume", {"test_confusion": cm_from(avg, 20)})


def test_table17_renders_paper_ours_on_paper_ids_and_the_rule_choice(tmp_path):
    ucf_tree(tmp_path)
    text = paper_tables.render("table17", tmp_path)
    paper_ids, ours_ids, chosen = text.split("\n## ")[1:4]
    assert "| Naive Fusion | 86 | 95 | 87 | 72 | 83 | 59 | 92 | 42 | 88 | 73 | 77.7 |" in paper_ids
    assert "| Uni-RGB | 85.0 | 50.0 |" in ours_ids  # our label 5 = paper id 6; then label 9 = paper id 10
    head = next(line for line in chosen.splitlines() if line.startswith("| Our class id"))
    assert head.split(" | ")[1:11] == [f"{c} (paper {c + 1})" for c in range(69, 59, -1)]
    assert "| Naive Fusion | 100.0 | 95.0 |" in chosen  # class 69: 20 of 20, class 68: 19 of 20
    assert "Avg Pred ← `ume`" in text


def test_a_missing_run_says_which_rows_have_no_numbers_and_chooses_nothing(tmp_path):
    ucf_tree(tmp_path)
    (tmp_path / "ucf101" / "seed0" / "naive" / "results.json").unlink()  # unfinished: not read
    text = paper_tables.render("table17", tmp_path, smoke=True)
    assert text.startswith(paper_tables.SMOKE_BANNER)
    assert "Not chosen: no per-class results for Naive Fusion." in text
    assert "| Naive Fusion | — | — |" in text


def test_table2_reads_decides_two_predictors_and_sums_seeds(tmp_path):
    n = 8
    for s in (0, 1):
        seed = tmp_path / "vggsound" / f"seed{s}"
        uni = {m: {"test_confusion": cm_from([1] * n)} for m in ("video", "audio")}
        write(seed / "unimodal", {"modalities": uni})
        fusion = [1] * n
        fusion[4] = 6 + 2 * s  # 6 and 8 of 10 right: 70% over both seeds, beyond 1 + 1 of 10
        write(seed / "naive", {"test_confusion": cm_from(fusion)})
        write(seed / "decide", {"test_confusion": {"average": cm_from([2] * n), "mm_linear": cm_from([3] * n)}})
    text = paper_tables.render("table2", tmp_path)
    chosen = text.split("## Ours on the classes the rule picks")[1]
    assert "| Our class id | 4 | mean acc |" in chosen
    for row, value in (("Uni-RGB", "10.0"), ("Avg Pred", "20.0"), ("Linear Clf", "30.0"), ("Naive Fusion", "70.0")):
        assert f"| {row} | {value} | {value} |" in chosen


def test_figure2_renders_means_counts_and_writes_a_png(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    n = 30
    seed = tmp_path / "runs" / "vggsound" / "seed0"
    audio = [10 if c < 20 else 0 for c in range(n)]  # the audio model's top 20: classes 0..19
    write(seed / "unimodal", {"modalities": {"audio": {"test_confusion": cm_from(audio)}}})
    for run, right in (("unimodal", 5), ("naive", 2), ("gblending", 3), ("umt", 6)):
        video = [right] * n
        video[0] = 9 if run == "naive" else right  # the one class where naive fusion's encoder is not behind
        write(seed / f"probe-{run}", {"probes": {"video": {"test_confusion": cm_from(video)}}})
    text = paper_tables.render("ws-fig2", tmp_path / "runs", smoke=True)
    assert "| Uni-Video | 49.05 | 50.0 |" in text and "| UMT video | 53.13 | 60.0 |" in text
    assert "| Naive Fusion video | 33.79 | 23.5 |" in text  # (9 + 19 * 2) / 20 * 10
    assert "Naive Fusion video below Uni-Video on 19 of 20 classes" in text
    assert (tmp_path / "results" / "smoke" / "ws-fig2.png").stat().st_size > 0


def test_tables_6_and_22_mark_cited_cells_and_read_the_slowfast_runs(tmp_path):
    seed = tmp_path / "kinetics400" / "seed0"
    write(seed / "umt", {"test_accuracy": 61.0})  # SlowFast-50: the recipes' own runs
    write(seed / "unimodal_slowfast101", {"modalities": {"video": {"test_accuracy": 55.0}}})
    t6 = paper_tables.render("table6", tmp_path)
    assert "| AVSlowFast (SlowFast-50) | 77.0 (cited: Xiao et al. 2020) | — |" in t6
    assert "| UMT (ours) (SlowFast-50) | 78.1 | 61.0 |" in t6 and "| UMT (ours) (SlowFast-101) | 79.4 | — |" in t6
    t22 = paper_tables.render("table22", tmp_path)
    assert "| Uni-RGB (SlowFast-101) | 77.2 | 55.0 | 77.9 (cited: Xiao et al. 2020) | — |" in t22


# ------------------------------------------------------------------------------------------ plans
def test_plans_name_the_runs_each_table_reads_and_reuse_the_other_tables_runs():
    def nodes(table, data=None):
        plan = paper_plans.build(paper_plans.Options(table, data or {}, (0, 1, 2), smoke=data is None))
        return {k: n for k, n in plan.nodes.items()}

    t2 = nodes("table2")
    assert list(t2) == ["vggsound/prep", "vggsound/seed0/unimodal", "vggsound/seed0/decide", "vggsound/seed0/naive"]
    t17, t9 = nodes("table17"), nodes("table9")
    for key in ("ucf101/seed0/unimodal", "ucf101/seed0/naive", "ucf101/seed0/ume"):  # the same runs as Table 9's
        assert (t17[key].recipes, t17[key].overrides, t17[key].inputs) == (t9[key].recipes, t9[key].overrides,
                                                                           t9[key].inputs)  # fmt: skip
    assert set(nodes("table16")) == {"kinetics400/prep", *(f"kinetics400/seed0/{r}" for r in ("unimodal", "naive",
                                                                                              "ume"))}  # fmt: skip
    fig = nodes("ws-fig2")
    assert {i.node for i in fig["vggsound/seed0/probe-umt"].inputs} == {"vggsound/prep", "vggsound/seed0/umt"}
    assert sorted(k.split("/")[-1] for k in fig if k.count("/") == 2) == sorted(
        ["unimodal", "naive", "gblending", "umt", "probe-unimodal", "probe-naive", "probe-gblending", "probe-umt"])
    t6 = nodes("table6", {"kinetics400": "/k400"})  # the real plan: one seed, both encoders
    umt101 = t6["kinetics400/seed0/umt_slowfast101"]
    assert "model.encoders.video.name=slowfast101" in umt101.overrides
    assert ("teachers", "kinetics400/seed0/unimodal_slowfast101") in {(i.key, i.node) for i in umt101.inputs}
    assert umt101.recipes == ("recipes/kinetics400/umt.yaml",)
    assert set(nodes("table22", {"kinetics400": "/k400"})) == {"kinetics400/prep",
        "kinetics400/seed0/unimodal", "kinetics400/seed0/unimodal_slowfast101"}  # fmt: skip
    assert tables_cited.UNI50.overrides == () and tables_cited.UMT50.name == "umt"  # shared with Tables 3, 5, 7
