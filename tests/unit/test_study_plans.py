"""The studies on the CPU datasets as plans: what each one runs, and one run end to end (small) with reuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmtool.analysis import study_plans
from mmtool.analysis.study_plans import METHODS_ELSEWHERE, PLAIN_METHODS, TEACHER_METHODS, Options, build
from mmtool.config import load_recipe
from mmtool.errors import UserError
from mmtool.methods import METHODS
from mmtool.plans.local import LocalExecutor

REPO = Path(__file__).resolve().parents[2]


def test_methods_runs_or_names_every_registered_method():
    recipes = [*PLAIN_METHODS, *TEACHER_METHODS, "self_distill"]
    trained = {load_recipe(REPO / "recipes" / "synth-gamma" / f"{r}.yaml").method.name for r in recipes}
    assert not trained & set(METHODS_ELSEWHERE)
    assert trained | set(METHODS_ELSEWHERE) == set(METHODS.names())
    assert all(where.startswith("mmtool ") for where in METHODS_ELSEWHERE.values())
    notes = study_plans.study("methods").note
    assert any("not in this table: balanced, see mmtool reproduce greedy" in n for n in notes)


def test_each_study_wires_its_runs_and_shares_prep(monkeypatch):
    monkeypatch.chdir(REPO)
    greedy = build(Options("greedy", seeds=(0, 1)))
    preps = [k for k, n in greedy.nodes.items() if n.is_prep]
    assert preps == ["prep/digits-colored/seed0", "prep/digits-colored/seed1"]  # six groups, one cache per seed
    util = greedy.nodes["cnn/guided/seed1/utilization"]
    assert {(i.key, i.node) for i in util.inputs} == {("", "prep/digits-colored/seed1"),
                                                      ("run", "cnn/guided/seed1/train")}  # fmt: skip
    assert "method.mode=guided" in greedy.nodes["cnn/guided/seed1/train"].overrides
    t20 = build(Options("table20", seeds=(2,), groups=("synth-gamma+balanced",), overrides=("train.epochs=3",)))
    prep = t20.nodes["prep/synth-gamma+balanced=true/seed2"]
    assert prep.args == ("synth-gamma",) and prep.overrides == ("data.seed=2", "data.balanced=true", "train.epochs=3")
    run = t20.nodes["synth-gamma+balanced/seed2/multimodal"]
    assert run.overrides == ("data.seed=2", "train.seed=2", "data.balanced=true", "data.name=synth-gamma",
                             "train.epochs=3")  # fmt: skip
    methods, probes = build(Options("methods", seeds=(0,))), build(Options("probes", seeds=(0,)))
    assert probes.root == methods.root == Path("runs/methods")
    assert all(probes.nodes[k] == n for k, n in methods.nodes.items())  # the same runs: probes reuses them
    sd = methods.nodes["digits-twoview/seed0/self_distill"]
    assert ("method.teacher_run", "digits-twoview/seed0/naive") in {(i.key, i.node) for i in sd.inputs}
    assert sd.recipes == ("recipes/synth-gamma/self_distill.yaml", "recipes/_base/digits-twoview.yaml")
    with pytest.raises(UserError, match="has no such group"):
        build(Options("laziness", groups=("synth-gamma",)))
    with pytest.raises(UserError, match="unknown study"):
        build(Options("table21"))


def test_table20_end_to_end_writes_the_table_and_a_second_call_reuses_every_run(tmp_path, monkeypatch, capsys):
    """One small group (alpha, 400 samples, 2 epochs) through real processes, then the same again."""
    monkeypatch.chdir(REPO)
    out = tmp_path / "t20.md"
    opts = Options("table20", seeds=(0,), groups=("synth-alpha",), out=out, runs=tmp_path / "runs",
                   overrides=("data.n=400", "train.epochs=2", f"data.root={tmp_path / 'data'}"))  # fmt: skip
    assert study_plans.reproduce(opts, LocalExecutor(1, 1)) == 0
    text = out.read_text()
    assert "| Multi-modal |" in text
    runs = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "runs" / "synth-alpha" / "seed0").iterdir())
    assert runs == ["multimodal", "unimodal"]
    cfg = json.loads((tmp_path / "runs" / ".prep" / "synth-alpha" / "seed0" / "prep.json").read_text())
    assert cfg["manifest"]["n"] == 400
    capsys.readouterr()
    out.unlink()
    assert study_plans.reproduce(opts, LocalExecutor(1, 1)) == 0
    said = capsys.readouterr().err
    # prep runs again only to check its cache (and says where it is); both trainings are reused
    assert said.count("finished before") == 2 and "table20: 1 run, 2 reused, 0 failed, 0 not run" in said
    assert out.read_text() == text
