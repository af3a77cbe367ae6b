"""benchmarks/bench_table20.py in its quick mode: one small job of the real `make table20`, then the floor.

No timing is asserted (seconds of a 20-epoch smoke run on a busy machine mean nothing); what is checked is
that the target ran through make, that every field of the report is there, and that the FLOPs are those of
the table's MLPs, counted by hand below.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="the benchmark runs the Makefile's target")


def _forward_flops(layers: list[tuple[int, int]]) -> int:
    """Forward matmul FLOPs of one sample through Linear layers (in, out)."""
    return sum(2 * a * b for a, b in layers)


def test_quick_mode_reports_wall_floor_and_ratio(monkeypatch, tmp_path, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = importlib.import_module("bench_table20")
    out = tmp_path / "table20.json"
    report = bench.main(["--quick", "--keep", str(tmp_path / "work"), "--json", str(out)])

    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    headline = capsys.readouterr().out.splitlines()[0]
    assert re.fullmatch(r"table20: wall [\d.]+ s, matmul floor [\d.]+ s, ratio W/F = [\d.]+ \(goal <= 1\.5\)", headline)

    assert report["mode"] == "quick" and report["seeds"] == ["0"] and report["datasets"] == ["synth-alpha"]
    assert report["trainings"] == 3  # m1 and m2 of pretrain-unimodal, the multi-modal model
    assert report["wall_s"] > 0 and report["floor_s"] > 0
    assert report["ratio"] == pytest.approx(report["wall_s"] / report["floor_s"])
    assert report["strict"]["ratio"] == pytest.approx(report["wall_s"] / report["strict"]["floor_s"])
    assert report["pass"] == (report["ratio"] <= report["goal"]) and report["goal"] == 1.5
    assert report["identical_to_results"] is None  # a quick table is not the paper's
    assert report["serial_reference"] is None
    assert report["others_cpu_share"] is None or 0 <= report["others_cpu_share"] <= 1

    # the table's own configuration, then one process on every core (unless they are the same)
    table = report["configurations"][0]
    assert (table["processes"], table["threads"]) == (report["jobs"], report["threads"])
    for config in report["configurations"]:
        assert config["floor_s"] > 0 and config["gflops_per_s"] > 0 and config["distinct_matmuls"] > 0
        assert sum(share["share"] for share in config["largest_shares"]) <= 1 + 1e-9
    assert report["throughput_gflops_per_s"] > 0

    # the plan made the two runs of the set and seed, each timed by its own sessions
    assert set(report["job_seconds"]) == {"synth-alpha-0"}
    assert set(report["job_seconds"]["synth-alpha-0"]) == {"unimodal", "multimodal"}
    assert all(seconds > 0 for seconds in report["job_seconds"]["synth-alpha-0"].values())

    # alpha, data.n=1000: 720 train, 80 val, 200 test samples; 20 epochs, validation every 10 -> 2 per model
    flops = report["flops"]
    assert flops["validations"] == 6
    m1, m2, mm = [(200, 100), (100, 2)], [(100, 100), (100, 2)], [(300, 200), (200, 2)]
    per_sample = sum(_forward_flops(layers) for layers in (m1, m2, mm))
    assert flops["three_x"] == per_sample * (3 * 20 * 720 + 2 * 80 + 720 + 80 + 200)
    # autograd: forward, weight gradients, and input gradients of every layer but the first
    step = sum(2 * _forward_flops(layers) + _forward_flops(layers[1:]) for layers in (m1, m2, mm))
    assert flops["autograd"] == step * 20 * 720 + per_sample * (2 * 80 + 720 + 80 + 200)
