"""Every shipped recipe validates; every fragment under _base/ is used by a recipe."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmtool.cli import app
from mmtool.config import load_recipe
from mmtool.errors import UserError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
FULL = sorted(p for p in RECIPES.rglob("*.yaml") if "_base" not in p.relative_to(RECIPES).parts)
FRAGMENTS = sorted(p for p in RECIPES.rglob("*.yaml") if "_base" in p.relative_to(RECIPES).parts)


@pytest.mark.parametrize("path", FULL, ids=lambda p: str(p.relative_to(RECIPES)))
def test_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.stage
    assert path.read_text().startswith("#"), "first line of a recipe says what it is for"


def _bases(path: Path) -> set[Path]:
    m = re.search(r"^base:\s*(\S+)", path.read_text(), re.M)
    if not m:
        return set()
    parent = (path.parent / m.group(1)).resolve()
    return {parent} | _bases(parent)


@pytest.mark.parametrize("fragment", FRAGMENTS, ids=lambda p: str(p.relative_to(RECIPES)))
def test_fragment_is_used(fragment):
    used = set().union(*(_bases(p) for p in FULL))
    assert fragment.resolve() in used


def test_decide_recipes_point_at_train_recipes():
    for path in FULL:
        recipe = load_recipe(path)
        if recipe.stage != "decide":
            continue
        for name in (recipe.decide.umt_recipe, recipe.decide.ume_recipe):
            target = load_recipe(path.parent / name)
            assert target.stage == "train" and target.method.name in ("umt", "ume")


def test_typo_in_recipe_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {RECIPES / 'synth-gamma' / 'umt.yaml'}\noptim: {{lrr: 0.1}}\n")
    with pytest.raises(UserError, match=r"bad\.yaml: unknown key 'optim\.lrr'"):
        load_recipe(bad)
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert isinstance(result.exception, UserError)
