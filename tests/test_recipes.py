"""Every shipped recipe validates; every fragment under _base/ is used by a recipe."""

import functools
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mmtool.analysis.study_plans import METHOD_SETS
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
    base = (yaml.safe_load(path.read_text()) or {}).get("base")
    if not base:
        return set()
    parents = {(path.parent / b).resolve() for b in ([base] if isinstance(base, str) else base)}
    return parents.union(*(_bases(p) for p in parents))


MAKEFILE = (RECIPES.parent / "Makefile").read_text()
# what `mmtool reproduce` merges: the paper tables' plans and the studies'
PLANS = "".join((RECIPES.parent / "mmtool" / "analysis" / f).read_text() for f in ("paper_plans.py", "study_plans.py"))


@functools.cache
def _used_fragments() -> frozenset[Path]:
    used = set().union(*(_bases(p) for p in FULL))
    used |= set().union(*(_bases(f) | {f.resolve()} for f in FRAGMENTS if _merged_by_name(f)))
    return frozenset(used)


@pytest.mark.parametrize("fragment", FRAGMENTS, ids=lambda p: str(p.relative_to(RECIPES)))
def test_fragment_is_used(fragment):
    """Every fragment is a base of a recipe, or merged by a Make target (``-r recipes/_base/...``) or a table's
    plan (``recipes/_base/smoke/{dataset}.yaml``)."""
    assert fragment.resolve() in _used_fragments()


def _merged_by_name(fragment: Path) -> bool:
    """Named in the Makefile, or by a plan: ``recipes/_base/smoke/{dataset}.yaml`` for a paper table,
    ``recipes/_base/{ds}.yaml`` for the sets ``methods`` runs every method on."""
    rel = fragment.relative_to(RECIPES.parent).as_posix()
    by_study = rel.replace(fragment.stem, "{ds}") in PLANS and fragment.stem in METHOD_SETS
    return rel in MAKEFILE or by_study or rel.replace(fragment.stem, "{dataset}") in PLANS
DATA_FRAGMENTS = [RECIPES / "_base" / f"{name}.yaml" for name in METHOD_SETS]


@pytest.mark.parametrize("fragment", DATA_FRAGMENTS, ids=lambda p: p.stem)
def test_dataset_fragment_moves_every_method_recipe(fragment):
    """``-r recipes/synth-gamma/M.yaml -r recipes/_base/D.yaml`` runs method M on dataset D with D's
    own settings, as the methods study does; nothing is injected on the command line."""
    for method in sorted((RECIPES / "synth-gamma").glob("*.yaml")):
        recipe = load_recipe([method, fragment])
        assert recipe.data.name == fragment.stem
        if fragment.stem.startswith("digits-"):
            assert recipe.model.hidden == (64, 32) and (recipe.optim.name, recipe.optim.lr) == ("adam", 1e-3)


def test_base_list_merges_in_order(tmp_path):
    (tmp_path / "a.yaml").write_text("optim: {lr: 0.5, momentum: 0.9}\n")
    (tmp_path / "b.yaml").write_text("optim: {lr: 0.1}\n")
    (tmp_path / "r.yaml").write_text("stage: train\nbase: [a.yaml, b.yaml]\ntrain: {epochs: 3}\n")
    recipe = load_recipe(tmp_path / "r.yaml")
    assert (recipe.optim.lr, recipe.optim.momentum, recipe.train.epochs) == (0.1, 0.9, 3)
    (tmp_path / "bad.yaml").write_text("stage: train\nbase: [a.yaml, 3]\n")
    with pytest.raises(UserError, match="base' expects a path string or a list"):
        load_recipe(tmp_path / "bad.yaml")


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
