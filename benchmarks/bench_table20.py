"""Wall time of ``make table20`` against the matmul floor of the FLOPs its trainings do, in one run.

Why a floor: the table trains 27 small MLPs full-batch for 1500 epochs, so nearly all the arithmetic is
matrix products; the time this machine needs for exactly those products, at their shapes, bounds what
any orchestration of the table can reach. The ratio wall/floor says how much of the run is something
else (process start-ups, data movement, element-wise ops, validation, files, idle cores).

What is run: the real target, ``make table20`` with its runs folder and table file redirected into a
temporary folder (``T20=... T20_OUT=...``), timed from start to end (prep, every training, the table).
In full mode the table it writes is compared byte for byte with ``results/table20.md``.

What is counted, from the finished runs (each run's config.yaml, the model spec the stage builds from
it, the split sizes and its metrics.jsonl):

* every matrix product of one training step, recorded as autograd runs it (aten ``mm``/``addmm`` with
  their shapes and strides) on the model the recipe builds, for one full-batch step, times the epochs;
* every validation pass the loop actually ran (a metrics.jsonl line each), and the final scoring of the
  selected model on train, val and test (forward only, in the loader's evaluation batches).

The headline floor counts a training step as 3x its forward matmul FLOPs (forward, weight gradient and
input gradient of every layer). Autograd does not compute the input gradient of a first layer, so the
matmuls it really runs are fewer: that stricter floor is reported beside it. Element-wise work (ReLU,
softmax, the SGD update, gathering the shuffled batch) is not counted: the floor is matmuls only.

Throughput: each matmul autograd runs is replayed at its shape and strides (fp32, best of a few
repetitions) in the configuration the table runs in, ``JOBS`` processes of ``T20_THREADS`` threads at
once (the machine's aggregate), and in one process using every core; the faster configuration sets the
throughput (FLOPs of autograd's matmuls per second of their replay), and each floor is its FLOPs at that
throughput. Other processes on a shared machine slow the table run more than the short matmul timings,
so the report gives the CPU share they took during the table run, to read the ratio by.

``--quick`` runs one job of the target on a small alpha (1 seed, ``data.n=1000``, 20 epochs, data cached
under the temporary folder) and few repetitions: a smoke test, not a measurement. ``--serial-reference``
also times the form the target had before it ran jobs in parallel: one process per command, one after
another, torch's default threads (several minutes more).

Usage: python benchmarks/bench_table20.py [--quick] [--jobs N] [--threads N] [--serial-reference]
       [--keep DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parents[1]
GOAL = 1.5  # wall / matmul floor
MATMULS = ("mm", "addmm")
QUICK_ARGS = "data.n=1000 train.epochs=20"
TABLE = REPO / "results" / "table20.md"
# The target as it ran before its jobs ran in parallel (for --serial-reference): datasets in this order per seed.
SERIAL_SETS = ("synth-alpha", "synth-beta", "synth-gamma")


# ----------------------------------------------------------------------------------------- the matmuls
@dataclass(frozen=True)
class Op:
    """One matmul call as autograd issues it: the aten op and each tensor argument's (shape, strides)."""

    name: str
    args: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]

    @property
    def flops(self) -> int:
        (m, k), (_, n) = self.args[-2][0], self.args[-1][0]
        return 2 * m * k * n

    def replay(self) -> tuple[object, list[torch.Tensor]]:
        """The aten function and fresh fp32 inputs of the same shapes and strides."""
        func = getattr(torch.ops.aten, self.name).default
        return func, [torch.empty_strided(shape, stride).normal_() for shape, stride in self.args]

    def describe(self) -> str:
        return f"{self.name}{tuple(shape for shape, _ in self.args)}"


class _Recorder(TorchDispatchMode):
    """Counts the matmuls run inside it, as they reach the kernels (after autograd's decomposition)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[Op] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func.overloadpacket.__name__ in MATMULS:
            tensors = tuple((tuple(a.shape), tuple(a.stride())) for a in args if isinstance(a, torch.Tensor))
            self.ops[Op(func.overloadpacket.__name__, tensors)] += 1
        return func(*args, **(kwargs or {}))


def _chunks(n: int, batch: int) -> Counter[int]:
    """Batch sizes of one pass over ``n`` samples in batches of ``batch`` (<= 0: one batch of all)."""
    if batch <= 0 or batch >= n:
        return Counter({n: 1})
    sizes = Counter({batch: n // batch})
    if n % batch:
        sizes[n % batch] += 1
    return sizes


@dataclass
class Training:
    """One model the table trains and the matmuls it runs: per epoch, per validation, and final scoring."""

    run: str
    epochs: int
    validations: int
    step: Counter[Op] = field(default_factory=Counter)  # one epoch of training steps (forward and backward)
    step_forward: Counter[Op] = field(default_factory=Counter)  # their forward part
    validate: Counter[Op] = field(default_factory=Counter)  # one validation pass
    score: Counter[Op] = field(default_factory=Counter)  # scoring train, val and test once

    def ops(self) -> Counter[Op]:
        """Every matmul call of the whole training."""
        total: Counter[Op] = Counter()
        for part, times in ((self.step, self.epochs), (self.validate, self.validations), (self.score, 1)):
            for op, n in part.items():
                total[op] += n * times
        return total

    def flops(self) -> dict[str, int]:
        evals = self.validations * _flops(self.validate) + _flops(self.score)
        return {"autograd": _flops(self.ops()), "three_x": 3 * self.epochs * _flops(self.step_forward) + evals}


def _flops(ops: Counter[Op]) -> int:
    return sum(op.flops * n for op, n in ops.items())


def _record(model: torch.nn.Module, method: object, inputs: dict[str, torch.Tensor], target: torch.Tensor,
            train: bool) -> tuple[Counter[Op], Counter[Op]]:  # fmt: skip
    """(all matmuls, forward matmuls) of one training step (``train``) or one evaluation forward."""
    from mmtool.data import Batch

    forward, backward = _Recorder(), _Recorder()
    if not train:
        with torch.no_grad(), forward:
            model.eval()(inputs)
        return forward.ops, forward.ops
    model.train()
    with forward:
        losses = method.training_step(model, Batch(inputs, target))  # type: ignore[attr-defined]
    with backward:
        sum(losses.values()).backward()
    return forward.ops + backward.ops, forward.ops


def trainings(runs: Path) -> list[Training]:
    """Every model trained under ``runs`` (as `make table20` lays it out), with the matmuls it ran."""
    from mmtool.config import load_recipe
    from mmtool.data import load_dataset
    from mmtool.data.source import DEFAULT_EVAL_BATCH
    from mmtool.methods import MethodContext, build_method
    from mmtool.models import build_model, model_spec

    out = []
    for config in sorted(runs.glob("*/seed*/*/config.yaml")):
        run = config.parent
        recipe = load_recipe(config)
        data = load_dataset(recipe.data)
        modalities = list(recipe.modalities) or list(data.modalities)
        groups = [[m] for m in modalities] if recipe.stage == "pretrain" else [modalities]
        for group in groups:
            folder = run / group[0] if recipe.stage == "pretrain" else run
            metrics = (folder / "metrics.jsonl").read_text().splitlines()
            item = Training(str(folder.relative_to(runs)), recipe.train.epochs,
                            sum('"val_accuracy"' in line for line in metrics))  # fmt: skip
            torch.manual_seed(0)
            model = build_model(model_spec(recipe.model, data.input_dims, data.num_classes, group))
            context = MethodContext(num_classes=data.num_classes, modalities=tuple(group))
            method = build_method(recipe.method.name, recipe.method.params, context)
            method.setup(model)
            eval_batch = recipe.train.eval_batch_size or DEFAULT_EVAL_BATCH
            for split, source in data.splits.items():
                passes = (("train", _chunks(len(source), recipe.train.batch_size)),) if split == "train" else ()
                passes += (("eval", _chunks(len(source), eval_batch)),)
                for kind, sizes in passes:
                    for size, count in sizes.items():
                        inputs = {m: torch.randn(size, data.input_dims[m]) for m in group}  # type: ignore[arg-type]
                        target = torch.randint(0, data.num_classes, (size,))
                        ops, forward = _record(model, method, inputs, target, kind == "train")
                        if kind == "train":
                            _add(item.step, ops, count)
                            _add(item.step_forward, forward, count)
                            continue
                        _add(item.score, ops, count)
                        if split == "val":
                            _add(item.validate, ops, count)
            out.append(item)
    return out


def _add(into: Counter[Op], ops: Counter[Op], times: int) -> None:
    for op, n in ops.items():
        into[op] += n * times


# ---------------------------------------------------------------------------------------- throughput
def _time_ops(ops: list[Op], threads: int, reps: int, min_seconds: float) -> list[float]:
    """Best seconds per call of each op, with ``threads`` intra-op threads."""
    torch.set_num_threads(threads)
    best = []
    for op in ops:
        func, args = op.replay()
        func(*args)  # warm-up: allocation, kernel choice
        calls = 1
        while True:  # enough calls per repetition to be timed well
            start = time.perf_counter()
            for _ in range(calls):
                func(*args)
            if time.perf_counter() - start >= min_seconds or calls >= 1 << 16:
                break
            calls *= 2
        seconds = []
        for _ in range(reps):
            start = time.perf_counter()
            for _ in range(calls):
                func(*args)
            seconds.append((time.perf_counter() - start) / calls)
        best.append(min(seconds))
    return best


def measure(ops: list[Op], processes: int, threads: int, reps: int, min_seconds: float) -> list[float]:
    """Seconds per call of each op while ``processes`` processes of ``threads`` threads time them at once
    (the mean over the processes): what each of the table's concurrent jobs gets from the machine. The
    processes are started like the table's jobs (``OMP_NUM_THREADS`` set before torch is imported) and
    begin timing together, once every one of them is ready."""
    spec = json.dumps({"ops": [[op.name, op.args] for op in ops], "threads": threads, "reps": reps,
                       "min_seconds": min_seconds})  # fmt: skip
    env = {**_clean_env(), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--time-ops"]
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
             for _ in range(processes)]  # fmt: skip
    try:
        for p in procs:
            _send(p, spec)
        if any(p.stdout.readline().strip() != "ready" for p in procs):  # type: ignore[union-attr]
            raise SystemExit("a matmul timing process failed before it was ready")
        for p in procs:
            _send(p, "go")
        results = [json.loads(p.stdout.readline() or "null") for p in procs]  # type: ignore[union-attr]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    if any(r is None for r in results):
        raise SystemExit("a matmul timing process failed")
    return [sum(r[i] for r in results) / processes for i in range(len(ops))]


def _send(proc: subprocess.Popen, line: str) -> None:
    proc.stdin.write(line + "\n")  # type: ignore[union-attr]
    proc.stdin.flush()  # type: ignore[union-attr]


def _time_ops_child() -> None:
    """``--time-ops``: read the ops from stdin, say ready, wait for go, time them, print the seconds."""
    spec = json.loads(sys.stdin.readline())
    ops = [Op(name, tuple((tuple(shape), tuple(stride)) for shape, stride in args)) for name, args in spec["ops"]]
    torch.set_num_threads(spec["threads"])
    torch.ones(8, 8) @ torch.ones(8, 8)  # the thread pool starts before the timing does
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(_time_ops(ops, spec["threads"], spec["reps"], spec["min_seconds"])), flush=True)


# ------------------------------------------------------------------------------------------ the runs
def make_settings(overrides: list[str]) -> dict[str, str]:
    """The Makefile's own values of the variables the table runs with (after ``overrides``)."""
    names = ("JOBS", "T20_THREADS", "SEEDS", "T20_SETS", "T20_ARGS")
    rule = "_bench_settings: ; @echo " + " '|' ".join(f"$({n})" for n in names)
    text = subprocess.run(["make", "--no-print-directory", "-s", "--eval", rule, *overrides, "_bench_settings"],
                          cwd=REPO, check=True, capture_output=True, text=True).stdout  # fmt: skip
    return dict(zip(names, (v.strip() for v in text.strip().split("|")), strict=True))


class CpuClock:
    """CPU seconds the whole machine and this process's finished children used, to tell others' load."""

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float]:
        tick = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
        busy = sum(fields) - fields[3] - fields[4]  # everything but idle and iowait
        t = os.times()
        return time.perf_counter(), busy / tick, t.children_user + t.children_system

    def others(self) -> float | None:
        """Share of the machine's cores busy with other processes since the clock started (None: unknown)."""
        try:
            end = self._read()
        except OSError:
            return None
        wall, busy, ours = (e - s for e, s in zip(end, self.start, strict=True))
        return max(0.0, busy - ours) / (wall * (os.cpu_count() or 1))


def run_table(folder: Path, overrides: list[str]) -> tuple[float, float | None, Path]:
    """``make table20`` into ``folder``: (wall seconds, others' CPU share, the table it wrote)."""
    out = folder / "table20.md"
    cmd = ["make", "--no-print-directory", "table20", f"T20={folder / 'runs'}", f"T20_OUT={out}",
           f"PYTHON={sys.executable}", *overrides]  # fmt: skip
    clock = CpuClock()
    with open(folder / "make.log", "w") as log:
        done = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=_clean_env())
    wall = time.perf_counter() - clock.start[0]
    if done.returncode:
        tail = (folder / "make.log").read_text().splitlines()[-20:]
        raise SystemExit(f"make table20 failed ({done.returncode}):\n" + "\n".join(tail))
    return wall, clock.others(), out


def run_serial(folder: Path, seeds: list[str], args: list[str]) -> tuple[float, float | None, Path]:
    """The table as it ran before: prep, pretrain-unimodal, train, one process each, one after another."""
    runs, out, log = folder / "runs", folder / "table20.md", folder / "log.txt"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    mmtool = [sys.executable, "-m", "mmtool"]
    env = _clean_env()
    env.pop("OMP_NUM_THREADS", None)  # torch's default threads, as a plain `make table20` had
    clock = CpuClock()
    with open(log, "w") as err:
        for s in seeds:
            for d in SERIAL_SETS:
                common = [f"data.name={d}", f"data.seed={s}", f"train.seed={s}", *args]
                r = runs / d / f"seed{s}"
                for cmd in ([*mmtool, "prep", d, f"data.seed={s}", *args],
                            [*mmtool, "pretrain-unimodal", "-r", "recipes/table20/unimodal.yaml", *common,
                             "--run-dir", str(r / "unimodal")],
                            [*mmtool, "train", "naive", "-r", "recipes/table20/multimodal.yaml", *common,
                             "--run-dir", str(r / "multimodal")]):  # fmt: skip
                    subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, env=env, check=True)
        subprocess.run([sys.executable, "-m", "mmtool.analysis.table20", str(runs), str(out)], cwd=REPO,
                       stdout=subprocess.DEVNULL, stderr=err, env=env, check=True)  # fmt: skip
    return time.perf_counter() - clock.start[0], clock.others(), out


def _clean_env() -> dict[str, str]:
    """This environment without make's variables of an enclosing make (``make bench-table20``)."""
    return {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


def job_times(runs: Path) -> dict[str, dict[str, float]]:
    """Seconds of each run of each (set, seed), from the runs' own sessions (``<set>/seed<k>/<name>-<id>/``)."""
    from mmtool.runs import read_sessions

    out: dict[str, dict[str, float]] = {}
    for run in sorted(p for p in runs.glob("*/seed*/*-*") if p.is_dir()):
        job = f"{run.parent.parent.name}-{run.parent.name.removeprefix('seed')}"
        out.setdefault(job, {})[run.name.rsplit("-", 1)[0]] = sum(s.get("seconds") or 0 for s in read_sessions(run))
    return out


# ------------------------------------------------------------------------------------------- report
def floor(items: list[Training], processes: int, threads: int, reps: int, min_seconds: float) -> dict:
    """The floor of every training's matmuls with ``processes`` x ``threads``: seconds and GFLOP/s."""
    total: Counter[Op] = Counter()
    for item in items:
        total.update(item.ops())
    ops = sorted(total, key=lambda op: (op.name, op.args))
    seconds = measure(ops, processes, threads, reps, min_seconds)
    per_op = dict(zip(ops, seconds, strict=True))
    floor_s = sum(per_op[op] * n for op, n in total.items()) / processes  # the processes share the work
    flops = _flops(total)
    slowest = sorted(ops, key=lambda op: per_op[op] * total[op], reverse=True)[:5]
    return {
        "processes": processes,
        "threads": threads,
        "floor_s": floor_s,
        "gflops_per_s": flops / floor_s / 1e9,
        "distinct_matmuls": len(ops),
        "largest_shares": [
            {
                "op": op.describe(),
                "calls": total[op],
                "gflops_per_s": op.flops / per_op[op] / 1e9,
                "share": per_op[op] * total[op] / processes / floor_s,
            }
            for op in slowest
        ],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small job, few epochs and repetitions")
    parser.add_argument("--jobs", type=int, help="JOBS for make (default: the Makefile's)")
    parser.add_argument("--threads", type=int, help="T20_THREADS for make (default: the Makefile's)")
    parser.add_argument("--serial-reference", action="store_true", help="also time the serial form of before")
    parser.add_argument("--reps", type=int, help="repetitions per matmul (default 5, --quick 2)")
    parser.add_argument("--keep", type=Path, help="write the runs here and keep them")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--time-ops", action="store_true", help=argparse.SUPPRESS)  # a timing process
    args = parser.parse_args(argv)
    if args.time_ops:
        _time_ops_child()
        return {}

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-table20-"))
    folder.mkdir(parents=True, exist_ok=True)
    overrides = [f"JOBS={args.jobs}"] if args.jobs else []
    overrides += [f"T20_THREADS={args.threads}"] if args.threads else []
    if args.quick:
        overrides += ["SEEDS=0", "T20_SETS=synth-alpha", f"T20_ARGS={QUICK_ARGS} data.root={folder / 'data'}"]
    settings = make_settings(overrides)
    jobs, threads = int(settings["JOBS"]), int(settings["T20_THREADS"])
    cores = os.cpu_count() or 1
    reps = args.reps or (2 if args.quick else 5)
    min_seconds = 0.002 if args.quick else 0.02
    try:
        reference = None
        if args.serial_reference:
            ref_args = settings["T20_ARGS"].split()
            wall_ref, others_ref, table_ref = run_serial(folder / "serial", settings["SEEDS"].split(), ref_args)
            reference = {"wall_s": wall_ref, "others_cpu_share": others_ref,
                         "identical_to_results": _same(table_ref) if not args.quick else None}  # fmt: skip
        wall, others, table = run_table(folder, overrides)
        items = trainings(folder / "runs")
        configs = [floor(items, jobs, threads, reps, min_seconds)]
        if (jobs, threads) != (1, cores):
            configs.append(floor(items, 1, cores, reps, min_seconds))
        best = min(configs, key=lambda c: c["floor_s"])
        flops = {k: sum(item.flops()[k] for item in items) for k in ("autograd", "three_x")}
        throughput = flops["autograd"] / best["floor_s"]  # FLOP/s on the matmuls autograd runs
        floor_s, strict_s = flops["three_x"] / throughput, best["floor_s"]
        identical = _same(table) if not args.quick else None
        times = job_times(folder / "runs")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)

    report = {
        "mode": "quick" if args.quick else "full",
        "jobs": jobs,
        "threads": threads,
        "seeds": settings["SEEDS"].split(),
        "datasets": settings["T20_SETS"].split(),
        "overrides": settings["T20_ARGS"],
        "trainings": len(items),
        "wall_s": wall,
        "floor_s": floor_s,
        "ratio": wall / floor_s,
        "goal": GOAL,
        "pass": wall / floor_s <= GOAL,
        "flops": {
            "three_x": flops["three_x"],
            "autograd": flops["autograd"],
            "validations": sum(item.validations for item in items),
            "counted": "training steps: 3 x forward matmul FLOPs x epochs; plus the forward matmuls of every "
            "validation pass run and of scoring train/val/test once per model",
        },
        "strict": {
            "floor_s": strict_s,
            "ratio": wall / strict_s,
            "counted": "the matmuls autograd runs (no input gradient for a first layer)",
        },
        "throughput_gflops_per_s": throughput / 1e9,
        "configurations": configs,
        "others_cpu_share": others,
        "identical_to_results": identical,
        "job_seconds": times,
        "serial_reference": reference,
    }
    if reference is not None:
        reference.update(ratio=reference["wall_s"] / floor_s, speedup=reference["wall_s"] / wall)
    _print(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _same(table: Path) -> bool:
    return table.read_bytes() == TABLE.read_bytes()


def _print(r: dict) -> None:
    f = r["flops"]
    print(f"table20: wall {r['wall_s']:.1f} s, matmul floor {r['floor_s']:.1f} s, ratio W/F = {r['ratio']:.2f} "
          f"(goal <= {GOAL})")  # fmt: skip
    extra = f", {r['overrides']}" if r["overrides"] else ""
    print(f"  {r['mode']}: {r['trainings']} trainings ({' '.join(r['datasets'])} x seeds {' '.join(r['seeds'])}"
          f"{extra}), {r['jobs']} jobs x {r['threads']} thread(s)")  # fmt: skip
    print(f"  floor: {f['three_x'] / 1e12:.2f} TFLOP (3 x forward per step, {f['validations']} validation passes, "
          f"final scoring) at {r['throughput_gflops_per_s']:.1f} GFLOP/s")  # fmt: skip
    for c in r["configurations"]:
        print(f"    {c['processes']} process(es) x {c['threads']} thread(s): {c['gflops_per_s']:.1f} GFLOP/s on "
              f"{c['distinct_matmuls']} matmul shapes")  # fmt: skip
    s = r["strict"]
    print(f"  autograd's own matmuls ({f['autograd'] / 1e12:.2f} TFLOP, no input gradient of a first layer): "
          f"floor {s['floor_s']:.1f} s, ratio {s['ratio']:.2f}")  # fmt: skip
    if r["job_seconds"]:
        busy = sum(sum(t.values()) for t in r["job_seconds"].values())
        print(f"  jobs: {busy:.1f} s of commands in {r['jobs']} slots = {busy / (r['jobs'] * r['wall_s']):.0%} "
              "of the wall x slots")  # fmt: skip
    if r["others_cpu_share"] is not None:
        print(f"  other processes used {r['others_cpu_share']:.0%} of the cores during the table run")
    if r["identical_to_results"] is not None:
        print(f"  table identical to {TABLE.relative_to(REPO)}: {r['identical_to_results']}")
    ref = r["serial_reference"]
    if ref:
        print(f"  before (serial, one process per command): wall {ref['wall_s']:.1f} s, ratio {ref['ratio']:.2f}, "
              f"{ref['speedup']:.2f}x slower than now")  # fmt: skip


if __name__ == "__main__":
    main()
