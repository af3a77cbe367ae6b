"""Numbers and lists as people write them, through the real CLI: ``1e-3`` is a float and ``32`` a list of
one, in a recipe file and in ``--set key=value``; a wrong type exits 2 with one line naming where it was set."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from mmtool.config import load_recipe

REPO = Path(__file__).resolve().parents[2]
NAIVE = "recipes/tiny/naive.yaml"


def validate(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MMTOOL_RECIPES": str(REPO / "recipes"), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "mmtool.cli", "validate", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_exponent_floats_and_scalar_lists_pass_validate_from_overrides_and_files(tmp_path):
    proc = validate(NAIVE, "--set", "optim.lr=1e-3", "--set", "optim.weight_decay=5E-4", "--set", "model.hidden=32")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ok  {NAIVE}  (stage train, method naive)"
    r = load_recipe(REPO / NAIVE, ["optim.lr=1e-3", "optim.weight_decay=5E-4", "model.hidden=32"])
    assert (r.optim.lr, r.optim.weight_decay, r.model.hidden) == (0.001, 0.0005, (32,))

    recipe = tmp_path / "numbers.yaml"
    recipe.write_text(
        textwrap.dedent(
            """
            stage: train
            optim: {lr: 1e-3, weight_decay: -2e-4}
            model: {hidden: 32}
            method: {name: finetune, encoder_lr_scale: 5e-1}
            """
        )
    )
    proc = validate(str(recipe))
    # the negative weight decay is the one problem: every other value was read as the number it is
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {recipe}: optim.weight_decay must be >= 0, got -0.0002"
    recipe.write_text(recipe.read_text().replace("-2e-4", "2e-4"))
    r = load_recipe(recipe)
    assert (r.optim.lr, r.optim.weight_decay, r.model.hidden) == (0.001, 0.0002, (32,))
    assert type(r.optim.lr) is float and r.method.params == {"encoder_lr_scale": 0.5}


def test_wrong_type_on_the_command_line_exits_2_with_one_line():
    proc = validate(NAIVE, "--set", "optim.lr=abc")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"error: {NAIVE}: key 'optim.lr' (set on the command line): expected a number (float), got 'abc' (str)"
    ]
