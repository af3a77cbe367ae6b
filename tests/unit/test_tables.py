"""Result tables are computed from the runs' results.json files."""

from __future__ import annotations

import json
import statistics

from mmtool.analysis import laziness, table20
from mmtool.analysis.tables import walk


def _write(path, obj):
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(obj))


def test_table20_means_and_confusion(tmp_path):
    accs = {0: (99.0, 51.0, 90.0), 1: (100.0, 53.0, 92.0)}
    for seed, (u1, u2, mm) in accs.items():
        for ds in table20.DATASETS:
            cm = [[10, 0, 0], [0, 1, 9], [0, 2, 8]]
            uni = {m: {"test_accuracy": a, "test_confusion": cm} for m, a in (("m1", u1), ("m2", u2))}
            _write(tmp_path / ds / f"seed{seed}" / "unimodal", {"modalities": uni})
            _write(tmp_path / ds / f"seed{seed}" / "multimodal", {"test_accuracy": mm})
    text = table20.render(table20.collect(walk(tmp_path)))
    mean, std = statistics.mean([99.0, 100.0]), statistics.stdev([99.0, 100.0])
    assert f"| Uni-modal (modality 1) | {mean:.1f} ± {std:.1f} [100]" in text
    assert f"| Multi-modal | {91.0:.1f} ± {statistics.stdev([90.0, 92.0]):.1f} [100]" in text
    assert "| 1 | 0.0 [0] | 10.0 [57] | 90.0 [43] |" in text  # row-normalised confusion


def test_laziness_gap_and_share_closed(tmp_path):
    probes = {"unimodal": 90.0, "naive": 60.0, "umt": 80.0}
    for seed in (0, 1):
        root = tmp_path / "synth-lazy" / f"seed{seed}"
        for run, acc in probes.items():
            _write(root / f"probe-{run}", {"probes": {"m2": {"test_accuracy": acc + seed}}})
        _write(root / "unimodal", {"modalities": {"m2": {"test_accuracy": 95.0}}})
        _write(root / "naive", {"test_accuracy": 81.0})
        _write(root / "umt", {"test_accuracy": 86.0})
    text = laziness.render(laziness.collect(walk(tmp_path)))
    assert "| gap (uni − naive) | +30.0 |" in text
    assert f"| closed by UMT | {20 / 30:.0%} |" in text
    assert "| Naive fusion (MM baseline) | 60.5 ± 0.7 |" in text


def test_methods_table_rows_from_run_folders(tmp_path):
    from mmtool.analysis import methods_table

    for seed, shift in ((0, 0.0), (1, 2.0)):
        root = tmp_path / "digits-twoview" / f"seed{seed}"
        _write(root / "unimodal", {"stage": "pretrain", "modalities": {"m1": {"test_accuracy": 80.0 + shift}}})
        _write(root / "umt", {"stage": "train", "test_accuracy": 90.0 + shift})
        _write(root / "ume_ensemble", {"stage": "ensemble", "test_accuracy": 88.0})
    text = methods_table.render(*methods_table.collect(walk(tmp_path)))
    assert f"| uni-modal m1 | 81.0 ± {statistics.stdev([80.0, 82.0]):.1f} |" in text
    assert "| umt | 91.0 ± 1.4 |" in text and "| ume_ensemble | 88.0 ± 0.0 |" in text
    assert text.index("uni-modal m1") < text.index("| umt")


def test_d_util_histogram_from_utilization_runs(tmp_path, capsys):
    from mmtool.analysis import utilization

    runs = []
    for i, d in enumerate((-0.4, -0.35, 0.1)):
        _write(tmp_path / f"u{i}", {"stage": "utilization", "d_util": d})
        runs.append(str(tmp_path / f"u{i}"))
    utilization.main([str(tmp_path / "hist.png"), *runs])
    out = json.loads(capsys.readouterr().out)
    assert out["d_util"] == [-0.4, -0.35, 0.1] and out["d_speed"] == []
    assert (tmp_path / "hist.png").read_bytes()[:4] == b"\x89PNG"


def test_d_speed_beside_d_util_from_the_training_runs(tmp_path, capsys):
    """For runs that logged d_speed, the value at the selected epoch (not the last) is plotted beside d_util."""
    from mmtool.analysis import utilization

    runs = []
    for i, (d_util, best) in enumerate(((0.2, 2), (-0.1, 3))):
        train = tmp_path / f"train{i}"
        _write(train, {"stage": "train", "best_epoch": best})
        rows = [{"epoch": e, "d_speed": 0.1 * e + i} for e in (1, 2, 3)]
        (train / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        _write(tmp_path / f"u{i}", {"stage": "utilization", "d_util": d_util, "source": str(train)})
        runs.append(str(tmp_path / f"u{i}"))
    utilization.main([str(tmp_path / "hist.png"), *runs])
    out = json.loads(capsys.readouterr().out)
    assert out["d_util"] == [0.2, -0.1]
    assert out["d_speed"] == [0.2, 0.1 * 3 + 1]


def test_probe_table_rows_deltas_and_lazy_encoders(tmp_path):
    from mmtool.analysis import probe_table

    probes = {"unimodal": (90.0, 80.0), "naive": (60.0, 79.0), "umt": (88.0, 81.0)}
    for seed in (0, 1):
        for run, (a, b) in probes.items():
            root = tmp_path / "digits-colored" / f"seed{seed}" / f"probe-{run}"
            _write(root, {"stage": "probe", "probes": {"m1": {"test_accuracy": a + seed}, "m2": {"test_accuracy": b}}})
        _write(tmp_path / "digits-colored" / f"seed{seed}" / "naive", {"stage": "train", "test_accuracy": 70.0})
    text = probe_table.render(*probe_table.collect(walk(tmp_path)))
    assert "| encoder from | digits-colored m1 | digits-colored m2 |" in text
    assert f"| unimodal | 90.5 ± {statistics.stdev([90.0, 91.0]):.1f} | 80.0 ± 0.0 |" in text
    assert f"| naive | 60.5 ± {statistics.stdev([60.0, 61.0]):.1f} (-30.0) | 79.0 ± 0.0 (-1.0) |" in text
    assert "| umt | 88.5 ± 0.7 (-2.0) | 81.0 ± 0.0 (+1.0) |" in text
    assert text.index("| unimodal") < text.index("| naive") < text.index("| umt")
    assert "below uni-modal: naive on digits-colored m1." in text


def _decision(low: float, high: float, diff: float) -> dict:
    ci = {"diff": diff, "low": low, "high": high, "confidence": 0.95, "resamples": 200}
    return {"verdict": "UME", "mm_linear_accuracy": 50.0, "average_accuracy": 50.0 - diff, "difference": ci,
            "unimodal_accuracy": {"m1": 40.0}, "split_classifier_accuracy": {"m1": 30.0},
            "coin_flip": low <= 0 <= high}  # fmt: skip


def test_decide_calls_a_point_interval_a_tie_not_an_interval_spanning_zero():
    from mmtool.stages.decide import _summary

    tie = _summary(_decision(0.0, 0.0, 0.0))
    assert "[+0.00, +0.00]" in tie[3] and "spans zero" not in "\n".join(tie)
    assert tie[4].startswith("the interval is a single point at zero: both are right and wrong on exactly the same")
    assert _summary(_decision(-1.5, 2.0, 0.3))[4].startswith("the interval spans zero: the rule picks UME")
    assert len(_summary(_decision(0.5, 2.0, 1.0))) == 4  # clear of zero: nothing to add
