"""A new dataset is its module, its recipes and its fixture: ``toy-shapes`` (tests/fixtures/toy_shapes.py),
registered from here with a setting of its own, runs ``prep`` and ``pretrain-unimodal`` through the real
command line with recipes from a folder of its own, and its setting is validated like any recipe key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.cli import messages, run_cli
from tests.fixtures import toy_shapes


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    toy_shapes.register()
    recipes = toy_shapes.write_recipes(tmp_path_factory.mktemp("toy-recipes"))
    yield {"MMTOOL_RECIPES": str(recipes)}
    toy_shapes.unregister()


def test_prep_then_pretrain_a_dataset_registered_outside_mmtool(env, tmp_path):
    prep = json.loads(run_cli(tmp_path, "prep", "toy-shapes", "data.n=120", "data.sides=4", env=env).stdout)
    assert prep["dataset"] == "toy-shapes"
    assert Path(prep["cache"]).name == "sides4-seed0-n120"
    out = run_cli(tmp_path, "pretrain-unimodal", "-d", "toy-shapes", "--run-dir", "pre", env=env)
    assert json.loads(out.stdout)["modalities"].keys() == {"outline", "area"}
    saved = (tmp_path / "pre" / "config.yaml").read_text()
    assert "sides: 4" in saved  # the dataset's setting is saved flat, beside the common keys
    run_cli(tmp_path, "pretrain-unimodal", "-r", "pre/config.yaml", "--resume", "pre", env=env)


def test_a_wrong_value_of_its_setting_is_one_line(env, tmp_path):
    proc = run_cli(tmp_path, "prep", "toy-shapes", "data.sides=2", env=env, check=False)
    assert proc.returncode == 2
    assert messages(proc.stderr) == ["error: command line: data.sides must be >= 3, got 2"]
    proc = run_cli(tmp_path, "pretrain-unimodal", "-d", "toy-shapes", "data.side=5", env=env, check=False)
    assert proc.returncode == 2
    assert messages(proc.stderr) == [
        "error: override 'data.side=5': unknown key 'data.side' for dataset 'toy-shapes'; did you mean 'data.sides'?"
    ]
