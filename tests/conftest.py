import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"


def pytest_configure(config):
    """Under pytest-xdist (``-n``), each worker process computes with one thread, and so do the processes
    it starts: N workers on N cores then share them instead of each spinning up N threads."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _recipes_env(monkeypatch):
    """Tests run from temp folders; point recipe lookup at the repository's recipes/."""
    monkeypatch.setenv("MMTOOL_RECIPES", str(RECIPES))


@pytest.fixture(autouse=True)
def _keep_thread_count():
    """A test that changes torch's thread count (a benchmark's main run in-process) gives it back: one
    xdist worker computing with two threads next to another would oversubscribe the cores, and OpenMP's
    spinning threads then slow both several times over."""
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _release_loader_workers():
    """Loader worker processes a test left running stop when it ends, as at the end of a command: left to
    a later garbage collection, each could stall another test for torch's 5 s join timeout."""
    yield
    from mmtool.cli import release_workers

    release_workers()
