"""Can the on-disk loaders feed the training step? UCF101 and VGG-Sound shapes, measured in one run.

For each dataset the script writes a small copy in the published layout (``tests/fixtures/media.py``:
UCF101 frame folders at 256x340 like the real ``jpegs_256``, VGG-Sound clips at 256x256), prepares it
with mmtool's own ``prep``, loads the train split through :class:`~mmtool.data.source.DiskSource`, and
measures in the same process:

* **loader**: samples/s of the training-mode loader with the recipe's ``train.workers`` and
  ``train.batch_size`` (``recipes/_base/<dataset>.yaml``, which also gives the data settings, the model and
  the optimizer; where that file is missing, 2 workers and the App. A.1 shapes, and the report says which),
  after a warm-up epoch that starts the workers. An epoch is one batch per worker, so
  every worker is busy for the whole timed epoch; the split's clips are repeated to fill it (each repeat
  gets its own crop and flip, since augmentation follows the sample index);
* **step**: samples/s of mmtool's training step (:func:`mmtool.engine.loop._train_epoch`, the recipe's
  model and optimizer, fp32 unless ``--precision``) on batches already in memory, after a warm-up step.
  On a CPU an R3D-18 step on 32x224x224 clips takes seconds per sample, so the step batch is small
  (``--step-batch``) and rates are per sample;
* **loader/step**: the product goal is >= 2x with the recipe's workers on this CPU. Printed as PASS or
  FAIL; the exit code is 0 unless ``--strict``;
* **decode rate per core**: the loader in the training process (``workers=0``, one torch thread) and the
  workers' rate divided by the number of workers (and by the cores they share), so a GPU user can size
  ``train.workers``: a step that runs S samples/s needs about S / (rate per core) cores of decoding.

Why ratios: the machines differ (2 slow cores, AMX or only AVX2, other jobs running), so an absolute
speed means little; loader against step measured in the same run does. Loader and step are timed apart
here; in training they share the machine, so on a CPU-only machine the ratio is an upper bound of the
headroom. The fixture JPEGs are smoother than real frames (they decode somewhat faster) and sit in the
page cache, so the loader rates are upper bounds for a cold disk.

Usage: python benchmarks/bench_data.py [--quick] [--datasets ucf101,vggsound] [--precision fp32|bf16|auto]
       [--workers N] [--batch N] [--step-batch N] [--strict] [--json OUT]
(``--tiny`` shrinks every input to prove the script runs; its numbers mean nothing.)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the fixture writers live in tests/fixtures/
    sys.path.insert(0, str(REPO))

from bench_step import PrebuiltBatches, load_average  # noqa: E402  (same folder)

from mmtool.config import EncoderConfig, ModelConfig, OptimConfig, TrainConfig, load_recipe  # noqa: E402
from mmtool.data import Batch, Dataset, DiskSource, load_dataset, prepare  # noqa: E402
from mmtool.data.ucf101 import ClipReader  # noqa: E402
from mmtool.data.vggsound import VGGSoundReader  # noqa: E402
from mmtool.data_config import DataConfig  # noqa: E402
from mmtool.engine import loop  # noqa: E402
from mmtool.engine.optim import build_optimizer  # noqa: E402
from mmtool.engine.runtime import Runtime, cpu_has_amx, resolve_precision  # noqa: E402
from mmtool.errors import UserError  # noqa: E402
from mmtool.methods import MethodContext, build_method  # noqa: E402
from mmtool.models import build_model, model_spec  # noqa: E402
from tests.fixtures.media import write_ucf101, write_vggsound  # noqa: E402

GOAL = 2.0  # loader samples/s over step samples/s
DEFAULT_WORKERS = 2  # where the dataset has no base recipe
STFT_RESNET = EncoderConfig(name="resnet18", transform="stft")


@dataclass
class Setup:
    """One dataset: how to write and prepare its copy, and what a missing base recipe would have said."""

    name: str
    num_classes: int  # of the real dataset (only the head's size depends on it)
    write: Callable[[Path, bool], dict]  # (folder, tiny) -> the fixture writer's return value
    tiny_data: dict  # data settings that shrink the inputs for --tiny
    repeat: Callable[[DiskSource, int], DiskSource]  # the split with its clips repeated to n samples
    model: ModelConfig
    batch: int  # the recipe's batch size where there is no recipe
    step_batch: int  # default batch of the step measurement on a CPU


def _write_ucf(raw: Path, tiny: bool) -> dict:
    """Frame folders at the size of the real jpegs_256 (256x340), 11 RGB + 10 u/v flow frames per clip. Split 1
    tests groups 1-7; (1, 8, 15, 22) give every split test clips, groups 8 and up are split 1's train clips."""
    groups = (1, 8, 15, 22) if tiny else (1, 8, 15, 22, 23, 24, 25)
    size = (32, 40) if tiny else (256, 340)
    return write_ucf101(raw, groups=groups, frames=11, size=size, videos=False, quirks=False)


def _write_vgg(raw: Path, tiny: bool) -> dict:
    """A few 1-second clips of 32 frames at 256x256 with 2 s of audio (the loader tiles it to 10 s); one test
    clip (prep refuses a dataset with an empty split), the benchmark reads the train split."""
    frames, size = (8, (32, 32)) if tiny else (32, (256, 256))
    classes = ("dog barking", "playing piano", "people marching")
    return write_vggsound(raw, classes=classes, train_per_class=1 if tiny else 3, test_per_class=1,
                          frames=frames, size=size, fps=frames, seconds=2.0, name_variants=False)  # fmt: skip


def _repeat_ucf(source: DiskSource, n: int) -> DiskSource:
    reader: ClipReader = source.reader  # type: ignore[assignment]
    pick = [i % len(reader.clips) for i in range(n)]
    clips = ClipReader([reader.clips[i] for i in pick], reader.size[0], reader.flow_stack)
    return DiskSource(clips, source.targets()[pick], source.modalities)


def _repeat_vgg(source: DiskSource, n: int) -> DiskSource:
    r: VGGSoundReader = source.reader  # type: ignore[assignment]
    pick = [i % len(r.frames) for i in range(n)]
    reader = VGGSoundReader(r.folder, [r.frames[i] for i in pick], [r.audio[i] for i in pick],
                            stored_frames=r.stored_frames, store_size=r.store_size, image_size=r.image_size,
                            audio_samples=r.audio_samples)  # fmt: skip
    return DiskSource(reader, source.targets()[pick], source.modalities)


SETUPS = {
    "ucf101": Setup(
        "ucf101",
        101,
        _write_ucf,
        {"image_size": 32},
        _repeat_ucf,
        ModelConfig(encoders={"rgb": EncoderConfig(name="resnet18"), "flow": EncoderConfig(name="resnet18")}),
        batch=64,
        step_batch=16,
    ),
    "vggsound": Setup(
        "vggsound",
        309,
        _write_vgg,
        {"store_size": 40, "clip_frames": 4, "audio_seconds": 1.0, "image_size": 32},
        _repeat_vgg,
        ModelConfig(encoders={"video": EncoderConfig(name="r3d18"), "audio": STFT_RESNET}),
        batch=24,
        step_batch=1,
    ),
}


def recipe_settings(setup: Setup) -> tuple[dict, str]:
    """Data settings, workers, batch size, model and optimizer of ``recipes/_base/<name>.yaml``, and where they
    came from."""
    path = REPO / "recipes" / "_base" / f"{setup.name}.yaml"
    fallback = {"data": DataConfig(name=setup.name), "workers": DEFAULT_WORKERS, "batch_size": setup.batch,
                "model": setup.model, "optim": OptimConfig()}  # fmt: skip
    if not path.is_file():
        return fallback, f"no {path.relative_to(REPO)}: defaults ({DEFAULT_WORKERS} workers)"
    try:
        recipe = load_recipe(path, ["stage=train"])
    except UserError as err:
        return fallback, f"{path.relative_to(REPO)} unreadable ({err}): defaults ({DEFAULT_WORKERS} workers)"
    train = recipe.train
    return (
        {"data": recipe.data, "workers": train.workers, "batch_size": train.batch_size or setup.batch,
         "model": recipe.model, "optim": recipe.optim},
        str(path.relative_to(REPO)),
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------- loader
def samples_per_s(source: DiskSource, batch: int, workers: int, epoch: int, limit: int | None = None,
                  keep: list[Batch] | None = None) -> float:  # fmt: skip
    """Samples/s of one training epoch (its first ``limit`` samples); with ``keep``, the batches are kept."""
    seen, start = 0, time.perf_counter()
    for b in source.loader(batch, train=True, seed=0, epoch=epoch, workers=workers):
        seen += len(b)
        if keep is not None:
            keep.append(b)
        if limit is not None and seen >= limit:
            break
    return seen / (time.perf_counter() - start)


@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def in_process(source: DiskSource, batch: int, samples: int) -> tuple[float, list[Batch]]:
    """Decode rate in the training process with one torch thread (one core), and the batches read."""
    kept: list[Batch] = []
    with torch_threads(1):
        samples_per_s(source, batch, 0, epoch=1, limit=1)  # first-use costs (imports, decoder set-up)
        rate = samples_per_s(source, batch, 0, epoch=2, limit=samples, keep=kept)
    return rate, kept


def with_workers(source: DiskSource, batch: int, workers: int, epochs: int) -> list[float]:
    """Samples/s of ``epochs`` timed epochs after one warm-up epoch. The warm-up starts the persistent workers
    and pays their first-use costs (a fresh process faults in every page it allocates; later epochs reuse
    them), and runs to its end: the next epoch would first drain an abandoned one."""
    samples_per_s(source, batch, workers, epoch=1)
    return [samples_per_s(source, batch, workers, epoch=2 + e) for e in range(epochs)]


# ------------------------------------------------------------------------------------------------- step
def rebatch(batches: list[Batch], size: int, count: int) -> list[Batch]:
    """``count`` batches of ``size`` samples cut from the loaded ones (fewer if too few were loaded)."""
    inputs = {m: torch.cat([b.inputs[m] for b in batches]) for m in batches[0].inputs}
    target = torch.cat([b.target for b in batches])
    count = min(count, len(target) // size)
    return [Batch({m: x[i * size : (i + 1) * size] for m, x in inputs.items()}, target[i * size : (i + 1) * size])
            for i in range(count)]  # fmt: skip


def step_rate(
    dataset: Dataset, settings: dict, batches: list[Batch], precision: str, warm: bool, num_classes: int
) -> float:
    """Samples/s of mmtool's training epoch over ``batches`` (after one untimed step when ``warm``)."""
    spec = model_spec(settings["model"], dataset.input_dims, num_classes, list(dataset.modalities))
    torch.manual_seed(0)
    model = build_model(spec)
    runtime = Runtime(torch.device("cpu"), precision)  # type: ignore[arg-type]
    runtime.prepare_model(model)
    opt = build_optimizer(model.parameters(), settings["optim"])
    method = build_method("naive", {}, MethodContext())
    cfg = TrainConfig(batch_size=len(batches[0]))
    if warm:
        loop.train_epoch(model, method, PrebuiltBatches(batches[:1]), opt, 1, cfg, runtime)
        batches = batches[1:]
    start = time.perf_counter()
    loop.train_epoch(model, method, PrebuiltBatches(batches), opt, 2, cfg, runtime)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------- report
@dataclass(frozen=True)
class Plan:
    """How much to measure: ``quick`` and ``tiny`` shrink it."""

    quick: bool
    tiny: bool
    precision: str
    workers: int | None  # None: the recipe's
    batch: int | None  # loader batch; None: the recipe's
    step_batch: int | None

    def timed_epochs(self) -> int:
        return 1 if self.quick or self.tiny else 2

    def step_steps(self, setup: Setup) -> int:
        if self.tiny:
            return 1
        return 1 if self.quick or setup.name == "vggsound" else 3

    def warm_step(self, setup: Setup) -> bool:
        # an R3D-18 step on 32 frames at 224 takes seconds per sample on a CPU: quick mode times the first step
        return not (self.quick and setup.name == "vggsound")

    def default_step_batch(self, setup: Setup) -> int:
        if self.tiny:
            return 2
        return min(setup.step_batch, 8) if self.quick else setup.step_batch


def prepared_split(setup: Setup, settings: dict, plan: Plan, tmp: Path) -> tuple[Dataset, DiskSource]:
    """Write the dataset's copy, prepare it with mmtool's prep and load it; (dataset, its train split)."""
    started = time.perf_counter()
    info = setup.write(tmp / setup.name / "raw", plan.tiny)
    cfg = settings["data"].updated(root=str(tmp / "data"), raw=str(info["root"]), val_fraction=0.0,
                                   **(setup.tiny_data if plan.tiny else {}))  # fmt: skip
    with contextlib.redirect_stderr(io.StringIO()):  # prep's progress lines
        prepare(cfg)
    dataset = load_dataset(cfg)
    print(f"{setup.name}: {len(dataset.splits['train'])} train clips written and prepared in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    return dataset, dataset.splits["train"]  # type: ignore[return-value]


def measure_loader(
    setup: Setup, train: DiskSource, plan: Plan, batch: int, workers: int, inline: int
) -> tuple[dict, list[Batch]]:
    """Loader rates in the training process (the first ``inline`` samples, kept) and with ``workers``."""
    one_core, loaded = in_process(_repeat(setup, train, inline), batch, inline)
    result = {"decode_per_core_in_process": one_core, "loader_samples_per_s": one_core}
    if workers > 0:
        pool = _repeat(setup, train, workers * batch)  # an epoch: one batch per worker
        rate = statistics.median(with_workers(pool, batch, workers, plan.timed_epochs()))
        del pool
        gc.collect()  # drops the persistent workers
        result.update(loader_samples_per_s=rate, decode_per_worker=rate / workers,
                      decode_per_core_in_workers=rate / min(workers, cpu_cores()))  # fmt: skip
    return result, loaded


def run_dataset(setup: Setup, plan: Plan, tmp: Path) -> dict:
    settings, origin = recipe_settings(setup)
    workers = settings["workers"] if plan.workers is None else plan.workers
    batch = plan.batch or (4 if plan.tiny else settings["batch_size"])
    step_batch = plan.step_batch or plan.default_step_batch(setup)
    dataset, train = prepared_split(setup, settings, plan, tmp)
    print(f"  settings from {origin}")

    steps = plan.step_steps(setup) + plan.warm_step(setup)
    need = max(step_batch * steps, batch)  # enough read in-process for the step measurement
    floor = {"ucf101": 64, "vggsound": 24} if plan.quick else {"ucf101": 128, "vggsound": 48}
    inline = need if plan.tiny else max(need, floor[setup.name])
    loader, loaded = measure_loader(setup, train, plan, batch, workers, inline)
    batches = rebatch(loaded, step_batch, steps)
    del loaded
    warm = plan.warm_step(setup) and len(batches) > 1
    step = step_rate(dataset, settings, batches, plan.precision, warm, setup.num_classes)
    ratio = loader["loader_samples_per_s"] / step
    result = {"settings_from": origin, "workers": workers, "workers_from_option": plan.workers is not None,
              "loader_batch": batch, "train_clips": len(train),
              **loader, "step_batch": len(batches[0]), "step_samples_per_s": step, "step_includes_warmup": not warm,
              "step_threads": torch.get_num_threads(), "ratio": ratio, "pass": ratio >= GOAL,
              "cores_to_feed_step_2x": 2 * step / loader["decode_per_core_in_process"]}  # fmt: skip
    print_dataset(setup.name, result)
    return result


def _repeat(setup: Setup, train: DiskSource, n: int) -> DiskSource:
    return setup.repeat(train, max(n, 1))


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def print_dataset(name: str, r: dict) -> None:
    w = r["workers"]
    warm = "  (first step, includes warm-up)" if r["step_includes_warmup"] else ""
    batch = r["loader_batch"]
    print(f"  loader  {r['loader_samples_per_s']:9.2f} samples/s  training mode, {w} workers, batch {batch}")
    print(f"  step    {r['step_samples_per_s']:9.2f} samples/s  mmtool _train_epoch, batch {r['step_batch']}{warm}")
    verdict = "PASS" if r["pass"] else "FAIL"
    whose = "--workers" if r["workers_from_option"] else "the recipe's workers"
    print(f"  loader/step {r['ratio']:.2f}x  (goal >= {GOAL:g}x with {whose} on this CPU): {verdict}")
    line = f"  decode per core: {r['decode_per_core_in_process']:.2f} samples/s in-process (workers=0, 1 thread)"
    if w > 0:
        line += (f"; {r['decode_per_worker']:.2f} per worker with {w} workers "
                 f"({r['decode_per_core_in_workers']:.2f} per core, {min(w, cpu_cores())} cores)")  # fmt: skip
    print(line)
    print(f"  sizing: a step of S samples/s needs about 2 S / {r['decode_per_core_in_process']:.2f} decoding cores for "
          f"2x headroom ({math.ceil(r['cores_to_feed_step_2x'] - 1e-9)} for this CPU's step)")  # fmt: skip


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one timed epoch per loader, fewer steps (under a minute)")
    p.add_argument("--tiny", action="store_true", help="minute inputs: proves the script runs; numbers mean nothing")
    p.add_argument("--datasets", default="ucf101,vggsound", help="comma-separated: ucf101, vggsound")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"], help="of the training step")
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: the recipe's train.workers)")
    p.add_argument("--batch", type=int, default=None, help="loader batch (default: the recipe's train.batch_size)")
    p.add_argument("--step-batch", type=int, default=None, help="batch of the step measurement")
    p.add_argument("--strict", action="store_true", help="exit 1 when a loader/step ratio misses the goal")
    p.add_argument("--json", type=Path, default=None, help="write the measured numbers here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SETUPS))
    if unknown:
        raise SystemExit(f"--datasets: unknown {unknown} (known: {', '.join(SETUPS)})")
    precision = resolve_precision(args.precision, torch.device("cpu"))
    plan = Plan(args.quick, args.tiny, precision, args.workers, args.batch, args.step_batch)
    capability, load = torch.backends.cpu.get_cpu_capability(), load_average()
    print(f"loader vs training step, {precision}, {cpu_cores()} cores, {torch.get_num_threads()} torch threads, "
          f"CPU capability {capability}, AMX {'yes' if cpu_has_amx() else 'no'}, load average {load:.1f} "
          "(other jobs make every rate noisier)")  # fmt: skip
    report: dict = {"benchmark": "bench_data", "precision": precision, "quick": args.quick, "tiny": args.tiny,
                    "cores": cpu_cores(), "threads": torch.get_num_threads(), "amx": cpu_has_amx(),
                    "load_average": load, "goal": GOAL, "datasets": {}}  # fmt: skip
    # more workers than cores is the recipe's choice for GPU machines; the report states the numbers
    warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        for name in names:
            report["datasets"][name] = run_dataset(SETUPS[name], plan, Path(tmp))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    failed = [n for n, r in report["datasets"].items() if not r["pass"]]
    if args.strict and failed:
        raise SystemExit(f"loader/step below {GOAL:g}x: {', '.join(failed)}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
