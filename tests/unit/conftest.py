"""Shared fixtures for the unit tests: small in-memory splits and model factories.

Everything here is small (a few hundred samples, 16-unit encoders) so the whole unit suite runs in
seconds on two CPU cores. Files are only ever written under pytest's ``tmp_path``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmtool.config import ModelConfig, OptimConfig, ScheduleConfig, TrainConfig
from mmtool.data import Split
from mmtool.data.synthetic import generate_alpha, generate_gamma
from mmtool.engine.loop import fit
from mmtool.engine.runtime import Runtime
from mmtool.methods import MethodContext, build_method
from mmtool.models import build_model, model_spec

DIMS = {"m1": 200, "m2": 100}


def _split(arrays: dict[str, np.ndarray], idx: np.ndarray) -> Split:
    return Split(
        {m: torch.from_numpy(arrays[m][idx]) for m in ("m1", "m2")},
        torch.from_numpy(arrays["y"][idx]),
    )


def _splits(arrays: dict[str, np.ndarray], n_train: int, seed: int = 0) -> dict[str, Split]:
    order = np.random.default_rng(seed).permutation(len(arrays["y"]))
    return {"train": _split(arrays, order[:n_train]), "val": _split(arrays, order[n_train:])}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: one intra-op thread is fastest (and immune to a busy machine); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def alpha_arrays() -> dict[str, np.ndarray]:
    return generate_alpha(0, 400)


@pytest.fixture(scope="session")
def gamma_arrays() -> dict[str, np.ndarray]:
    return generate_gamma(1, 450)


@pytest.fixture
def alpha_splits(alpha_arrays) -> dict[str, Split]:
    """Two-class alpha data: 300 train, 100 val (shuffled)."""
    return _splits(alpha_arrays, 300)


@pytest.fixture
def gamma_splits(gamma_arrays) -> dict[str, Split]:
    """Three-class gamma data: 350 train, 100 val (shuffled; the generator emits label 0 first)."""
    return _splits(gamma_arrays, 350)


@pytest.fixture
def make_model():
    """``make_model(modalities, hidden, head, num_classes, seed)`` -> (model, spec), seeded."""

    def make(
        modalities=("m1", "m2"),
        hidden=(16,),
        head: str = "linear",
        num_classes: int = 2,
        seed: int = 0,
        encoder: str = "mlp",
        dims: dict[str, int] | None = None,
    ):
        cfg = ModelConfig(encoder=encoder, hidden=tuple(hidden), head=head, head_hidden=16)
        spec = model_spec(cfg, dims or DIMS, num_classes, list(modalities))
        torch.manual_seed(seed)
        return build_model(spec), spec

    return make


@pytest.fixture
def train_cfgs():
    """``train_cfgs(**train_overrides)`` -> (OptimConfig, ScheduleConfig, TrainConfig) for quick CPU runs."""

    def make(lr: float = 0.2, momentum: float = 0.0, schedule: ScheduleConfig | None = None, **train):
        base = {"epochs": 5, "batch_size": 0, "eval_every": 1, "checkpoint_every": 0, "seed": 0, "device": "cpu"}
        base.update(train)
        return OptimConfig(name="sgd", lr=lr, momentum=momentum), schedule or ScheduleConfig(), TrainConfig(**base)

    return make


@pytest.fixture
def naive_run(make_model, alpha_splits, train_cfgs, tmp_path):
    """``naive_run(epochs, head, seed)`` -> the directory of a naive-fusion run the loop trained on alpha
    (what ``mmtool train naive`` leaves: checkpoints/best.pt with the model's spec)."""

    def make(epochs: int = 3, head: str = "mlp", seed: int = 5):
        model, spec = make_model(head=head, seed=seed)
        out = tmp_path / f"naive-{head}-{seed}"
        optim, schedule, cfg = train_cfgs(epochs=epochs, lr=0.2)
        method = build_method("naive", {}, MethodContext())
        fit(model, method, alpha_splits["train"], alpha_splits["val"], spec, out, optim, schedule, cfg,
            Runtime.cpu(cfg))
        return out

    return make


def measure_on(splits: dict) -> object:
    """A ``MethodContext.measure`` over in-memory splits (what the training stages provide)."""
    from mmtool.engine.inference import run_inference

    def measure(model, name, forward, want):
        return run_inference(model, splits[name], Runtime.cpu(), want=want, forward=forward)

    return measure


def state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture
def snapshot():
    return state_copy
