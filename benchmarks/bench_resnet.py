"""Training-step speed of the ResNet-18 encoder with mmtool's CPU settings, against fp32, in one process.

Times SGD steps of a two-branch late-fusion model (ResNet-18 on RGB frames + ResNet-18 on 1-channel
spectrograms, the audio-visual setting of the papers) three ways: fp32; bf16 autocast
(``train.precision: bf16``); bf16 autocast with channels-last memory (``train.channels_last: true``).
Reports each as a speed-up over fp32: on CPUs with AMX-bf16 the last is expected near 3x, on others bf16
may be slower, which is why both settings are off by default. Numbers are ratios, not seconds.

Usage: python benchmarks/bench_resnet.py [STEPS] [BATCH]
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from mmtool.engine.runtime import Runtime
from mmtool.models import build_model

SPEC = {
    "modalities": {"visual": [3, 112, 112], "audio": [1, 128, 96]},
    "num_classes": 10,
    "encoder": "resnet18",
    "encoder_args": {},
    "head": "linear",
    "head_args": {},
}


def steps_per_second(steps: int, batch: int, precision: str, channels_last: bool) -> float:
    torch.manual_seed(0)
    model = build_model(SPEC)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    runtime = Runtime(torch.device("cpu"), precision, channels_last)
    runtime.prepare_model(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    inputs = {m: torch.randn(batch, *shape).contiguous(memory_format=fmt) for m, shape in SPEC["modalities"].items()}
    target = torch.randint(0, SPEC["num_classes"], (batch,))

    def step() -> None:
        with runtime.autocast():
            loss = F.cross_entropy(model(inputs)["logits"].float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (allocations, kernel selection)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    ref = steps_per_second(steps, batch, "fp32", False)
    bf16 = steps_per_second(steps, batch, "bf16", False)
    both = steps_per_second(steps, batch, "bf16", True)
    print(
        f"steps={steps} batch={batch}  speed-up over fp32: bf16 {bf16 / ref:.2f}x, bf16+channels_last {both / ref:.2f}x"
    )


if __name__ == "__main__":
    main()
