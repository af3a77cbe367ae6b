from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"


@pytest.fixture(autouse=True)
def _recipes_env(monkeypatch):
    """Tests run from temp folders; point recipe lookup at the repository's recipes/."""
    monkeypatch.setenv("MMTOOL_RECIPES", str(RECIPES))
