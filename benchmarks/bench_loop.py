"""Overhead of mmtool's training loop against a bare PyTorch loop, in the same process.

Trains the same model (App. A.10's 2-layer MLP on synthetic gamma features) for the same number of
full-batch epochs both ways and reports the time ratio; the goal is a ratio of at most 1.05 (the loop's
bookkeeping — metrics, validation, checkpoints, signal and progress checks — should cost little). Both
loops read each epoch's samples in a fresh random order, as a plain PyTorch loop over a shuffled dataset
does: the data work is the same, the ratio is the bookkeeping. Each is timed three times, interleaved, and
the fastest of each counts (the least disturbed by other processes). Numbers are ratios, not seconds.

Usage: python benchmarks/bench_loop.py [EPOCHS]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mmtool.config import OptimConfig, ScheduleConfig, TrainConfig
from mmtool.data import Split
from mmtool.data.synthetic import generate_gamma
from mmtool.engine.loop import fit
from mmtool.engine.runtime import Runtime
from mmtool.methods import MethodContext, build_method
from mmtool.models import build_model

SPEC = {
    "modalities": {"m1": 200, "m2": 100},
    "num_classes": 3,
    "encoder": "mlp",
    "encoder_args": {"hidden": [100]},
    "head": "mlp",
    "head_args": {"hidden": 200},
}


def bare(split: Split, epochs: int) -> float:
    torch.manual_seed(0)
    model = build_model(SPEC)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(split.target), generator=gen)  # a shuffled epoch, as the loop reads it
        inputs = {m: x[order] for m, x in split.inputs.items()}
        loss = F.cross_entropy(model(inputs)["logits"], split.target[order])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def with_loop(split: Split, val: Split, epochs: int) -> float:
    torch.manual_seed(0)
    model = build_model(SPEC)
    method = build_method("naive", {}, MethodContext())
    cfg = TrainConfig(epochs=epochs, eval_every=10, checkpoint_every=100)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        fit(
            model,
            method,
            split,
            val,
            SPEC,
            Path(tmp),
            OptimConfig(lr=0.2),
            ScheduleConfig(),
            cfg,
            Runtime.cpu(cfg),
        )
        return time.perf_counter() - start


def main() -> None:
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    arrays = generate_gamma(0, 7500)
    x = {m: torch.from_numpy(arrays[m]) for m in ("m1", "m2")}
    y = torch.from_numpy(arrays["y"])
    train = Split({m: v[:5400] for m, v in x.items()}, y[:5400])
    val = Split({m: v[5400:6000] for m, v in x.items()}, y[5400:6000])
    bare(train, 20)  # warm-up
    refs, loops = [], []
    for _ in range(3):
        refs.append(bare(train, epochs))
        loops.append(with_loop(train, val, epochs))
    print(f"epochs={epochs}  loop/bare time ratio = {min(loops) / min(refs):.2f}")


if __name__ == "__main__":
    main()
