"""`make methods` covers every registered method, or names where the ones it leaves out are reproduced."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from mmtool.config import load_recipe
from mmtool.methods import METHODS

REPO = Path(__file__).resolve().parents[2]


def _make_variable(name: str) -> str:
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{name}\s*:?=\s*(.*)$", text, flags=re.MULTILINE)
    assert match, f"Makefile has no {name}"
    return match.group(1)


def test_make_methods_runs_or_names_every_registered_method():
    recipes = [*_make_variable("PLAIN_METHODS").split(), *_make_variable("TEACHER_METHODS").split(), "self_distill"]
    trained = {load_recipe(REPO / "recipes" / "synth-gamma" / f"{r}.yaml").method.name for r in recipes}
    elsewhere = dict(re.findall(r'(\w+)="([^"]+)"', _make_variable("METHODS_ELSEWHERE")))
    assert not trained & set(elsewhere)
    assert trained | set(elsewhere) == set(METHODS.names())
    assert all(where.startswith(("make ", "mmtool ")) for where in elsewhere.values())


def test_make_methods_says_what_it_leaves_out():
    dry = subprocess.run(["make", "-n", "methods"], cwd=REPO, capture_output=True, text=True, timeout=60)
    shown = subprocess.run(["bash", "-c", dry.stdout.splitlines()[1]], capture_output=True, text=True, timeout=60)
    assert "methods: not in this table: balanced, see make greedy" in shown.stderr
    assert "methods: not in this table: unimodal, see mmtool pretrain-unimodal" in shown.stderr
