"""The speed benchmarks run: each script's ``main`` in its quickest mode on tiny inputs.

No timing is asserted (the numbers of tiny inputs on a busy machine mean nothing); what is checked is that
every measurement is made, reported and written as JSON, and that the two loops of ``bench_step`` did the
same arithmetic.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    """Imports a script of benchmarks/ by name (they import each other, so the folder goes on sys.path)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module


def test_bench_step_compares_the_same_work(bench, tmp_path):
    out = tmp_path / "step.json"
    bench("bench_step").main(["--quick", "--image-size", "16", "--reps", "1", "--json", str(out)])
    report = json.loads(out.read_text())
    assert [c["case"] for c in report["cases"]] == ["resnet18", "mlp"]
    for case in report["cases"]:
        assert case["plain_samples_per_s"] > 0 and case["mmtool_samples_per_s"] > 0 and case["ratio"] > 0
        assert case["max_weight_difference"] < 1e-6  # same weights, batches and precision: the same training
        if not case["pass"]:
            assert {p["piece"] for p in case["attribution"]} >= {"loss sums", "batch to device"}


def test_bench_data_measures_both_datasets(bench, tmp_path, monkeypatch):
    bench_data = bench("bench_data")
    monkeypatch.setattr(bench_data, "GOAL", math.inf)  # no ratio can pass: --strict must exit non-zero
    out = tmp_path / "data.json"
    with pytest.raises(SystemExit, match="loader/step below"):
        bench_data.main(["--tiny", "--workers", "1", "--strict", "--json", str(out)])
    report = json.loads(out.read_text())
    assert set(report["datasets"]) == {"ucf101", "vggsound"}
    for result in report["datasets"].values():
        assert result["workers"] == 1 and result["settings_from"]
        for key in ("loader_samples_per_s", "step_samples_per_s", "ratio", "decode_per_core_in_process",
                    "decode_per_worker"):  # fmt: skip
            assert result[key] > 0, key
        assert result["pass"] is False


def test_bench_ddp_reports_the_scaling_of_two_processes(bench, tmp_path):
    out = tmp_path / "ddp.json"
    bench("bench_ddp").main(["--steps", "1", "--batch", "4", "--image-size", "16", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["speedup_2_vs_1"] > 0 and report["scaling_efficiency"] == pytest.approx(report["speedup_2_vs_1"] / 2)
