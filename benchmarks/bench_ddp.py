"""Scaling of distributed data parallel on CPU: the same training work by 1 process and by 2 (gloo).

Both sides run mmtool's training epoch (:func:`mmtool.engine.loop.train_epoch`, the loop ``fit`` runs)
on the same global batches of a two-branch ResNet-18 late-fusion model: one process with one thread
takes every global batch; two processes with one thread each take half of every batch, the model
wrapped by ``Runtime.wrap`` (DistributedDataParallel) so gradients are averaged during backward. Each
side runs one untimed warm-up epoch, then a timed one, in freshly spawned processes of this run.

Reports the speed-up ``t(1) / t(2)`` and the scaling efficiency ``speed-up / 2`` (1.0: perfect). Both
sides see the same samples per step, but ResNet-18's batch norms normalise over each rank's half batch,
so their weights are not expected to agree (tests/e2e/test_distributed.py checks that on models without
batch norm). Numbers are ratios of this run, not seconds to compare across machines.

Usage: python benchmarks/bench_ddp.py [--steps S] [--batch B] [--image-size N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import torch

SPEC = {
    "modalities": {"visual": [3, 64, 64], "audio": [1, 64, 48]},
    "num_classes": 10,
    "encoder": "resnet18",
    "encoder_args": {},
    "head": "linear",
    "head_args": {},
}


def _spec(image_size: int) -> dict:
    scale = image_size / 64
    return {**SPEC, "modalities": {"visual": [3, image_size, image_size],
                                   "audio": [1, image_size, max(8, int(48 * scale))]}}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    from mmtool.config import OptimConfig, TrainConfig
    from mmtool.data import ArraySource
    from mmtool.engine import loop
    from mmtool.engine.optim import build_optimizer
    from mmtool.engine.runtime import Runtime
    from mmtool.methods import MethodContext, build_method
    from mmtool.models import build_model

    spec = _spec(args.image_size)
    cfg = TrainConfig(device="cpu", batch_size=args.batch, seed=0)
    runtime = Runtime.from_config(cfg)  # joins the gloo group when world > 1
    gen = torch.Generator().manual_seed(0)
    n = args.batch * args.steps
    inputs = {m: torch.randn(n, *shape, generator=gen) for m, shape in spec["modalities"].items()}
    source = ArraySource(inputs, torch.randint(0, spec["num_classes"], (n,), generator=gen))
    torch.manual_seed(0)
    model = build_model(spec)
    runtime.prepare_model(model)
    opt = build_optimizer(model.parameters(), OptimConfig(name="sgd", lr=0.01, momentum=0.9))
    method = build_method("naive", {}, MethodContext(runtime=runtime))
    step_model = runtime.wrap(model)
    loop.train_epoch(model, method, source, opt, 1, cfg, runtime, step_model=step_model)  # warm-up
    runtime.barrier()
    start = time.perf_counter()
    loop.train_epoch(model, method, source, opt, 2, cfg, runtime, step_model=step_model)
    runtime.barrier()
    seconds = time.perf_counter() - start
    if rank == 0:
        torch.save({"seconds": seconds}, out)
    if runtime.distributed:
        torch.distributed.destroy_process_group()


def run_side(world: int, args: argparse.Namespace, folder: str) -> dict:
    import multiprocessing

    import torch.multiprocessing as mp

    out = str(Path(folder) / f"world{world}.pt")
    # forked from a server that has imported torch once, rather than each process importing it again
    start = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if start == "forkserver":
        multiprocessing.set_forkserver_preload(["torch", "mmtool.engine.loop"])
    mp.start_processes(_worker, args=(world, _free_port(), args, out), nprocs=world, join=True, start_method=start)
    return torch.load(out, weights_only=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps (one epoch)")
    parser.add_argument("--batch", type=int, default=32, help="global batch (even)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if not torch.distributed.is_available():
        raise SystemExit("this torch build has no torch.distributed")
    with tempfile.TemporaryDirectory() as folder:
        one, two = run_side(1, args, folder), run_side(2, args, folder)
    speedup = one["seconds"] / two["seconds"]
    report = {
        "workload": f"ResNet-18 x2 late fusion, {args.image_size}px, global batch {args.batch}, {args.steps} steps",
        "threads_per_process": 1,
        "speedup_2_vs_1": speedup,
        "scaling_efficiency": speedup / 2,
        "cpu_cores": os.cpu_count(),
    }
    print(f"DDP on CPU (gloo), {report['workload']}, 1 thread per process, {os.cpu_count()} cores")
    print(f"  2 processes vs 1: speed-up {speedup:.2f}x, scaling efficiency {speedup / 2:.2f} "
          "(1.00 = perfect)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
