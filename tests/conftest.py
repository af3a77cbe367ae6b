import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _recipes_env(monkeypatch):
    """Tests run from temp folders; point recipe lookup at the repository's recipes/."""
    monkeypatch.setenv("MMTOOL_RECIPES", str(RECIPES))
