"""mmtool's training step against a hand-written PyTorch loop: same model, weights, batches and precision.

What is measured: samples per second of one training epoch through mmtool's loop
(:func:`mmtool.engine.loop._train_epoch`, the function :func:`~mmtool.engine.loop.fit` runs every epoch,
with a :class:`~mmtool.engine.runtime.Runtime` and the ``naive`` method) and through a plain loop
(forward, ``cross_entropy``, ``zero_grad``, ``backward``, ``step``). Both train a copy of the same model
from the same initial weights with the same SGD settings, on the same pre-built in-memory batches in the
same order, under the same autocast precision. Two cases:

* ``resnet18``: two ResNet-18 branches (3x112x112 frames and 1x112x112 spectrograms, late fusion), where the
  step's arithmetic dominates: the ratio shows whether mmtool adds anything per step that matters;
* ``mlp``: App. A.10's small MLP on two feature vectors, a step of well under a millisecond, where any
  per-step bookkeeping of the loop (loss sums, batch moves, hooks) shows.

Why ratios: the machines differ (2 slow cores, AMX or AVX2 only, other jobs running), so an absolute
speed means little; a ratio against the plain loop measured in the same process does. Repetitions are
interleaved (plain, mmtool, plain, mmtool, ...) and medians taken, so a burst of load from elsewhere
hits both sides alike. Goal: mmtool/plain >= 0.95. Because both sides do the same arithmetic on the same
numbers, their weights agree at the end; the report prints the largest difference as a check that the
comparison is like for like.

When a case misses the goal the script attributes the gap to the loop's own per-step pieces (moving the
batch, the loss sums, the loss total, the no-op hooks), each printed with its file and line:
timed inside the real loop by running epochs with the piece replaced by a no-op (interleaved with the real
loop), and alone in a tight loop of calls (cache-hot, so usually less). Whole-run costs of ``fit``
(validation, checkpoints) are per epoch, not per step, and are what ``bench_loop.py`` measures.

Usage: python benchmarks/bench_step.py [--quick] [--precision fp32|bf16] [--cases resnet18,mlp]
       [--image-size N] [--reps N] [--threads N] [--json OUT]
"""

from __future__ import annotations

import argparse
import copy
import functools
import inspect
import json
import operator
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from mmtool.config import ModelConfig, OptimConfig, TrainConfig
from mmtool.data import Batch
from mmtool.engine import loop
from mmtool.engine.optim import build_optimizer
from mmtool.engine.runtime import Runtime
from mmtool.methods import MethodContext, build_method
from mmtool.models import build_model, model_spec

GOAL = 0.95  # mmtool/plain samples/s
OPTIM = OptimConfig(name="sgd", lr=0.01, momentum=0.9)


@dataclass(frozen=True)
class Case:
    """One model and its batches: ``dims`` per-sample input shapes, ``steps`` per epoch, ``reps`` per side."""

    encoder: str
    dims: dict[str, int | list[int]]
    batch: int
    steps: int
    reps: int
    hidden: tuple[int, ...] = (100,)
    num_classes: int = 10


def cases(quick: bool, image_size: int) -> dict[str, Case]:
    """The two cases; ``quick`` runs fewer steps and repetitions."""
    s = image_size
    return {
        "resnet18": Case("resnet18", {"visual": [3, s, s], "audio": [1, s, s]}, batch=16,
                         steps=2 if quick else 4, reps=3 if quick else 5),
        "mlp": Case("mlp", {"m1": 200, "m2": 100}, batch=64, steps=50 if quick else 100, reps=7 if quick else 21),
    }  # fmt: skip


class PrebuiltBatches:
    """A split source whose every epoch is the same list of already-built batches (both loops read it)."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches
        self.modalities = tuple(batches[0].inputs)
        self.eval_batch_size = len(batches[0])

    def __len__(self) -> int:
        return sum(len(b) for b in self.batches)

    def loader(self, batch_size: int, **_: object) -> Iterator[Batch]:
        return iter(self.batches)


def make_batches(case: Case, seed: int = 0) -> list[Batch]:
    """``case.steps`` random batches, drawn once: (B, *shape) inputs, (B,) targets."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {m: [d] if isinstance(d, int) else list(d) for m, d in case.dims.items()}
    return [
        Batch(
            {m: torch.randn(case.batch, *shape, generator=gen) for m, shape in shapes.items()},
            torch.randint(0, case.num_classes, (case.batch,), generator=gen),
        )
        for _ in range(case.steps)
    ]


def autocast(precision: str) -> object:
    """The autocast region mmtool's Runtime opens for ``precision`` on the CPU, written out by hand."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type="cpu", dtype={"bf16": torch.bfloat16}[precision])


def plain_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, batches: list[Batch], precision: str) -> None:
    """The reference: the textbook PyTorch training loop."""
    model.train()
    for batch in batches:
        with autocast(precision):
            loss = F.cross_entropy(model(batch.inputs)["logits"], batch.target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


class Sides:
    """The two contestants, each with its own model copy and optimizer, from the same initial weights."""

    def __init__(self, case: Case, batches: list[Batch], precision: str) -> None:
        torch.manual_seed(0)
        spec = model_spec(ModelConfig(encoder=case.encoder, hidden=case.hidden), case.dims, case.num_classes,
                          list(case.dims))  # fmt: skip
        self.plain_model = build_model(spec)
        self.mm_model = copy.deepcopy(self.plain_model)
        self.plain_opt = torch.optim.SGD(self.plain_model.parameters(), lr=OPTIM.lr, momentum=OPTIM.momentum)
        self.runtime = Runtime(torch.device("cpu"), precision)  # type: ignore[arg-type]
        self.runtime.prepare_model(self.mm_model)
        self.mm_opt = build_optimizer(self.mm_model.parameters(), OPTIM)
        self.method = build_method("naive", {}, MethodContext())
        self.cfg = TrainConfig(batch_size=case.batch, precision=precision)  # type: ignore[arg-type]
        self.source = PrebuiltBatches(batches)
        self.batches, self.precision = batches, precision
        self.epoch = 0

    def plain(self) -> None:
        plain_epoch(self.plain_model, self.plain_opt, self.batches, self.precision)

    def mmtool(self, runtime: Runtime | None = None) -> None:
        self.epoch += 1
        loop.train_epoch(self.mm_model, self.method, self.source, self.mm_opt, self.epoch, self.cfg,
                         runtime or self.runtime)  # fmt: skip

    def weight_difference(self) -> float:
        """Largest absolute difference between the two models' parameters (0 when they did the same work)."""
        pairs = zip(self.plain_model.parameters(), self.mm_model.parameters(), strict=True)
        return max(float((a.detach() - b.detach()).abs().max()) for a, b in pairs)


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(plain: Callable[[], None], mm: Callable[[], None], reps: int) -> tuple[list[float], list[float]]:
    """Seconds per epoch of each side, run ABAB... after one untimed warm-up epoch of each."""
    plain(), mm()  # warm-up: allocations, kernel selection
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(reps):
        times[0].append(timed(plain))
        times[1].append(timed(mm))
    return times


# ------------------------------------------------------------------------------------------ attribution
def _rel(path: str | None) -> str:
    root = Path(__file__).resolve().parents[1]
    resolved = Path(path or "?").resolve()
    return str(resolved.relative_to(root) if resolved.is_relative_to(root) else resolved)


def where(fn: object, text: str | None = None) -> str:
    """``path:line`` of ``fn``'s definition, or of the first line of its source that contains ``text``."""
    fn = inspect.unwrap(fn)  # type: ignore[arg-type]
    lines, first = inspect.getsourcelines(fn)  # type: ignore[arg-type]
    offset = next((i for i, line in enumerate(lines) if text in line), 0) if text else 0
    return f"{_rel(inspect.getsourcefile(fn))}:{first + offset}"  # type: ignore[arg-type]


def per_call_us(fn: Callable[[], object], n: int = 2000) -> float:
    """Median microseconds of ``fn()`` over 5 rounds of ``n`` calls."""
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(rounds)


class _NoSums:
    """Stand-in for the loop's loss sums that keeps nothing (for the ablation only)."""

    def __init__(self, *args: object) -> None:
        pass

    def add(self, *args: object) -> None:
        pass

    def check(self, epoch: int) -> None:
        pass

    def means(self) -> dict[str, float]:
        return {}


class _BatchStays(Runtime):
    """A runtime whose ``to_device`` hands the batch back untouched (for the ablation only)."""

    def to_device(self, batch: Batch) -> Batch:
        return batch


@contextmanager
def _without_sums() -> Iterator[None]:
    kept = loop._LossSums
    loop._LossSums = _NoSums  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        loop._LossSums = kept  # type: ignore[misc]


def attribute(sides: Sides, reps: int) -> list[dict]:
    """Cost per step of the pieces of ``_train_epoch`` that the plain loop does not have, two ways: inside the
    real loop (epochs with the piece vs. without it, interleaved) and alone (a tight loop of calls, cache-hot,
    so usually less)."""
    batch = sides.batches[0]
    losses = sides.method.training_step(sides.mm_model, batch)
    total = functools.reduce(operator.add, losses.values())
    sums = loop._LossSums(sides.runtime)
    step = iter(range(10**9))
    epoch = loop._train_epoch
    staying = _BatchStays(sides.runtime.device, sides.runtime.precision)

    def cut_sums() -> None:
        with _without_sums():
            sides.mmtool()

    pieces = [  # (what, where the loop calls it, where it is defined, one call alone, an epoch without it)
        ("loss sums", where(epoch, "sums.add("), where(loop._LossSums.add),
         lambda: sums.add(next(step), losses, total, len(batch)), cut_sums),
        ("batch to device", where(epoch, "runtime.to_device("), where(Batch.to),
         lambda: sides.runtime.to_device(batch), lambda: sides.mmtool(staying)),
        ("loss total", where(epoch, "functools.reduce(operator.add, losses.values())"), "",
         lambda: functools.reduce(operator.add, losses.values()), None),
        ("no-op hooks", where(epoch, "method.after_backward("), "",
         lambda: (sides.method.after_backward(None, 0), sides.method.after_step(None, 0)), None),
    ]  # fmt: skip
    out = []
    for name, at, defined, call, without in pieces:
        in_loop = None
        if without is not None:
            full, cut = interleaved(sides.mmtool, without, reps)
            in_loop = 1e6 * (statistics.median(full) - statistics.median(cut)) / len(sides.batches)
        out.append({"piece": name, "called_at": at, "defined_at": defined, "alone_us_per_step": per_call_us(call),
                    "in_loop_us_per_step": in_loop})  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------- report
def run_case(name: str, case: Case, precision: str, reps: int | None) -> dict:
    batches = make_batches(case)
    sides = Sides(case, batches, precision)
    n = case.reps if reps is None else reps
    plain_s, mm_s = interleaved(sides.plain, sides.mmtool, n)
    samples = case.steps * case.batch
    paired = sorted(p / m for p, m in zip(plain_s, mm_s, strict=True))  # mmtool/plain speed, adjacent epochs
    ratio = statistics.median(paired)
    result = {
        "case": name,
        "batch": case.batch,
        "steps_per_epoch": case.steps,
        "reps": n,
        "input_shapes": case.dims,
        "plain_samples_per_s": samples / statistics.median(plain_s),
        "mmtool_samples_per_s": samples / statistics.median(mm_s),
        "ratio": ratio,  # median over the pairs of adjacent epochs: slow drifts of the machine cancel
        "ratio_range": [paired[0], paired[-1]],
        "plain_spread": (max(plain_s) - min(plain_s)) / statistics.median(plain_s),  # the machine's noise
        "pass": ratio >= GOAL,
        "plain_step_ms": 1e3 * statistics.median(plain_s) / case.steps,
        "mmtool_step_ms": 1e3 * statistics.median(mm_s) / case.steps,
        "max_weight_difference": sides.weight_difference(),
    }
    if not result["pass"]:
        result["overhead_us_per_step"] = 1e3 * (result["mmtool_step_ms"] - result["plain_step_ms"])
        result["attribution"] = attribute(sides, n)
    return result


def print_result(r: dict) -> None:
    verdict = "PASS" if r["pass"] else "BELOW GOAL"
    print(
        f"{r['case']:<9} batch {r['batch']:>3} x {r['steps_per_epoch']:>3} steps, {r['reps']} reps  "
        f"plain {r['plain_samples_per_s']:9.1f}/s ({r['plain_step_ms']:.3f} ms/step)  "
        f"mmtool {r['mmtool_samples_per_s']:9.1f}/s ({r['mmtool_step_ms']:.3f} ms/step)  "
        f"mmtool/plain {r['ratio']:.3f} [{r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}]  "
        f"goal >= {GOAL}: {verdict}"
    )
    print(f"  plain epochs varied by {100 * r['plain_spread']:.0f}% of their median (machine noise); "
          f"max weight difference after training {r['max_weight_difference']:.2g} (0: the same work)")  # fmt: skip
    if not r["pass"]:
        gap = r["overhead_us_per_step"]
        print(f"  mmtool's median step is {gap:.0f} us longer. Pieces of the loop the plain one lacks, us per step "
              "(inside the loop: epochs with vs. without the piece; alone: a tight loop of calls):")  # fmt: skip
        for piece in r["attribution"]:
            inside = piece["in_loop_us_per_step"]
            inside_text = "       -" if inside is None else f"{inside:8.1f}"
            defined = f" (defined at {piece['defined_at']})" if piece["defined_at"] else ""
            print(f"    inside {inside_text}  alone {piece['alone_us_per_step']:6.1f}  {piece['piece']:<22} "
                  f"{piece['called_at']}{defined}")  # fmt: skip
        own = sum(p["in_loop_us_per_step"] or p["alone_us_per_step"] for p in r["attribution"])
        if gap > 0 and own < 0.5 * gap:
            print(f"  these {own:.0f} us explain {100 * own / gap:.0f}% of the gap: the rest is noise of this "
                  "machine (rerun on a quiet machine or with more --reps)")  # fmt: skip


def load_average() -> float:
    """The 1-minute load average (0 where the platform has none): other jobs make every rate noisier."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and repetitions (well under a minute)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="autocast precision of both loops")
    p.add_argument("--cases", default="resnet18,mlp", help="comma-separated: resnet18, mlp")
    p.add_argument("--image-size", type=int, default=112, help="side of the resnet18 case's inputs")
    p.add_argument("--reps", type=int, default=None, help="timed epochs per side (default: per case)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--json", type=Path, default=None, help="write the measured numbers here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    available = cases(args.quick, args.image_size)
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise SystemExit(f"--cases: unknown {unknown} (known: {', '.join(available)})")
    load = load_average()
    print(f"mmtool _train_epoch vs plain PyTorch loop, {args.precision}, {torch.get_num_threads()} torch threads, "
          f"interleaved repetitions, medians; load average {load:.1f}")  # fmt: skip
    results = []
    for name in names:
        results.append(run_case(name, available[name], args.precision, args.reps))
        print_result(results[-1])
    report = {"benchmark": "bench_step", "precision": args.precision, "threads": torch.get_num_threads(),
              "goal": GOAL, "quick": args.quick, "load_average": load, "cases": results}  # fmt: skip
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
