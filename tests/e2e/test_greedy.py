"""`make greedy` in miniature: balanced training (vanilla, guided, random) through the CLI on colored digits,
utilization of each run, and the results table and plot built from those runs."""

from __future__ import annotations

import json

from mmtool.analysis import greedy
from tests.e2e.cli import messages
from tests.e2e.test_cli_chain import mmtool

RECIPE = "recipes/digits-colored/balanced.yaml"
SHORT = ["train.epochs=3", "train.eval_every=1"]


def test_greedy_chain_writes_table_and_plots(tmp_path):
    from tests.e2e.test_cli_chain import REPO

    mmtool(tmp_path, "prep", "digits-colored")
    results = {}
    for algorithm in greedy.ORDER:
        run = tmp_path / "greedy" / "mlp" / algorithm / "seed0"
        args = ["-r", str(REPO / RECIPE), f"method.mode={algorithm}", *SHORT]
        results[algorithm] = json.loads(mmtool(tmp_path, "train", *args, "--run-dir", str(run / "train")).stdout)
        util = ["-r", str(REPO / "recipes/digits-colored/utilization.yaml"), "--run", str(run / "train")]
        mmtool(tmp_path, "utilization", *util, "--run-dir", str(run / "utilization"))
        assert (run / "train" / "plots" / "curves.png").read_bytes()[:4] == b"\x89PNG"
        rows = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) == 3 and all("d_speed" in r for r in rows)
        shares = sum(r["rebalance_m1_share"] + r["rebalance_m2_share"] for r in rows[1:])  # epoch 1: warm-up
        assert rows[0]["rebalance_m1_share"] == rows[0]["rebalance_m2_share"] == 0.0
        assert (shares == 0.0) == (algorithm == "vanilla")

    out = tmp_path / "results" / "greedy.md"
    greedy.main([str(tmp_path / "greedy"), str(out)])
    text = out.read_text()
    for algorithm, res in results.items():
        assert f"| {algorithm} | {res['test_accuracy']:.1f} ± 0.0 |" in text
    assert "guided vs vanilla, mean |d_util|" in text
    assert "## mlp branches (1 seeds; plot: greedy_mlp.png)" in text
    assert (tmp_path / "results" / "greedy_mlp.png").read_bytes()[:4] == b"\x89PNG"


def test_probe_refuses_mmtm_branches_with_one_line(tmp_path):
    from tests.e2e.test_cli_chain import REPO

    mmtool(tmp_path, "prep", "digits-colored", "data.n=200")
    args = ["-r", str(REPO / RECIPE), "data.n=200", "train.epochs=1"]
    mmtool(tmp_path, "train", *args, "--run-dir", "mmtm")
    proc = mmtool(tmp_path, "probe", "-d", "digits-colored", "data.n=200", "--run", "mmtm", check=False)
    assert proc.returncode == 2
    assert "MMTM" in proc.stderr and "mmtool utilization" in proc.stderr and len(messages(proc.stderr)) == 1
