"""Time and disk of each paper-table target at full size, from FLOPs counted and step costs measured here.

What is measured, on this machine, in this process:

* per dataset and modality, the encoder (with its input transform and the recipe's head) that the table's
  recipes build at the real input size: FLOPs of a forward, and of a forward + backward, of one sample
  (``torch.utils.flop_counter``), and the wall time of that forward + backward step (fp32, batch 1);
* this CPU's fp32 matrix-multiply rate (a 2048^3 GEMM), so that each step's *efficiency* — the fraction of
  the machine's GEMM rate it reaches — is a measured ratio.

How a target's time follows: its plan (the real one, every seed it runs) lists its runs; each run's recipe gives
epochs, evaluation period, test views and which encoders it trains; the dataset sizes are the papers' (App. A.1).
Per run: training samples x forward+backward FLOPs (+ a forward of the frozen teachers for UMT and
self-distillation), evaluation samples x views x forward FLOPs (validation every ``eval_every`` epochs, the
final pass over train, val and test), feature passes for probes, decide and ensembles (every snapshot for a probe
over training). The FLOPs become GPU time under one stated assumption: **a step reaches the same fraction of a
GPU's dense bf16 peak as it reaches of this CPU's fp32 GEMM rate** (A100: 312 TFLOP/s, NVIDIA's data sheet). The
"floor" column is the time at 100% of that peak. 8 GPUs: the one-GPU time / 8 (data-parallel, scaling assumed
linear). Not counted: data loading (on UCF101 it sets the pace: docs/tables.md), prep, G-Blending's and
OGM-GE's extra measuring passes, checkpoint writes. Disk: each trained run keeps its best weights (fp32), a
probe over training every snapshot too.

Usage: python benchmarks/bench_estimates.py [--tables table6,table13] [--json OUT] [--write docs/tables.md]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
A100_BF16 = 312e12  # NVIDIA A100 data sheet: dense BF16 Tensor Core peak, FLOP/s
# The papers' dataset sizes (paper 000 App. A.1; UCF101 split 1 and ModelNet40 as published): train (val is
# carved from it by the recipe's val_fraction) and test.
SIZES = {"kinetics400": (240_000, 19_000), "vggsound": (175_000, 15_000), "ucf101": (9_537, 3_783),
         "modelnet40": (9_483, 2_468), "cremad": (6_698, 744),
         "iemocap": (4_425, 1_106), "food101": (67_988, 22_716),
         # Kinetics-Sounds: about 22k train / 1.6k validation clips of the 31 classes (a copy's count varies);
         # MVSA-Single: 4,511 pairs kept, 8:1:1; MNIST's 60k/10k; NVGesture's 1,050/482
         "kinetics-sounds": (22_000, 1_600), "mvsa": (3_609, 451), "colored-mnist": (60_000, 10_000),
         "nvgesture": (1_050, 482)}  # fmt: skip  CREMA-D: OGM-GE's train/test lists
MARK_BEGIN, MARK_END = "<!-- estimates: begin -->", "<!-- estimates: end -->"


@dataclass
class Cost:
    """One sample of one modality at full size: FLOPs, measured seconds of a forward+backward, parameters."""

    fwd: float
    step: float
    seconds: float
    params: int


def gemm_rate(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start)


def input_dims(recipe) -> dict[str, list[int]]:
    """Each modality's input at the recipe's full size (what the loader delivers)."""
    d, name = recipe.data, recipe.data.name
    s = d.settings
    if name in ("vggsound", "kinetics400", "kinetics-sounds"):
        frames = s.window_frames or s.clip_frames
        seconds = s.audio_window_seconds or s.audio_seconds
        return {"video": [3, frames, s.image_size, s.image_size], "audio": [round(seconds * s.sample_rate)]}
    if name == "ucf101":
        return {"rgb": [3, s.image_size, s.image_size], "flow": [2 * s.flow_stack, s.image_size, s.image_size]}
    if name == "cremad":
        size = s.image_size
        return {"audio": [round(s.audio_seconds * s.sample_rate)], "visual": [3 * s.clip_frames, size, size]}
    if name in ("food101", "mvsa"):
        return {"image": [3, s.image_size, s.image_size], "text": [s.max_tokens]}
    if name == "iemocap":  # text: token ids, max_tokens of them
        return {"audio": [round(s.audio_seconds * s.sample_rate)], "visual": [3 * s.clip_frames, s.image_size,
                s.image_size], "text": [s.max_tokens]}  # fmt: skip
    if name == "modelnet40":
        views = ("front", "rear", "side") if s.side_view is not None else ("front", "rear")
        return {v: [3, s.image_size, s.image_size] for v in views}
    if name == "colored-mnist":
        return {"color": [3, 28, 28], "gray": [1, 28, 28]}
    if name == "nvgesture":
        return {"rgb": [3, s.window_frames, s.image_size, s.image_size],
                "depth": [1, s.window_frames, s.image_size, s.image_size]}  # fmt: skip
    raise SystemExit(f"no full-size input known for {name}")


def measure(recipe, classes: int, cache: dict) -> dict[str, Cost]:
    """Per modality of the recipe's dataset: the one-modality model's cost (memoised by its spec)."""
    from mmtool.models import build_model, model_spec

    dims, out = input_dims(recipe), {}
    if recipe.model.fusion != "late" or recipe.model.head in WHOLE_HEADS:
        return _shared(recipe, dims, classes, cache)
    for m, shape in dims.items():
        spec = model_spec(recipe.model, dims, classes, [m])
        key = json.dumps(spec, sort_keys=True, default=str)
        if key not in cache:
            cache[key] = _cost(build_model(spec), {m: _example(m, shape)})
        out[m] = cache[key]
    return out


# heads built for the modalities together (MMTM fusion, FiLM, gated): the whole model, its cost shared evenly
WHOLE_HEADS = ("film", "gated")


def _shared(recipe, dims: dict, classes: int, cache: dict) -> dict[str, Cost]:
    from mmtool.models import build_model, model_spec

    spec = model_spec(recipe.model, dims, classes, list(dims))
    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in cache:
        whole = _cost(build_model(spec), {m: _example(m, s) for m, s in dims.items()})
        n = len(dims)
        cache[key] = Cost(whole.fwd / n, whole.step / n, whole.seconds / n, whole.params // n)
    return {m: cache[key] for m in dims}


def _example(modality: str, shape: list[int]) -> torch.Tensor:
    """One sample: token ids for text (no padding), floats otherwise."""
    return torch.randint(1, 1000, (1, *shape)) if modality == "text" else torch.randn(1, *shape)


def _cost(model, x) -> Cost:
    with torch.no_grad(), FlopCounterMode(display=False) as fwd:
        model(x)
    with FlopCounterMode(display=False) as step:
        model(x)["logits"].sum().backward()
    model.zero_grad()
    times = []
    for _ in range(2):
        start = time.perf_counter()
        model(x)["logits"].sum().backward()
        times.append(time.perf_counter() - start)
    return Cost(fwd.get_total_flops(), step.get_total_flops(), min(times), sum(p.numel() for p in model.parameters()))


CLASSES = {"kinetics400": 400, "vggsound": 309, "ucf101": 101, "modelnet40": 40, "cremad": 6, "iemocap": 4,
           "food101": 101, "kinetics-sounds": 31, "mvsa": 3, "colored-mnist": 10, "nvgesture": 25}
TEACHERS = {"umt", "self_distill", "self_distill_feature"}


def run_cost(node, plan, cache: dict) -> tuple[float, float, float]:
    """(FLOPs, CPU seconds at the measured rates, bytes kept) of one run of ``plan``."""
    recipe = _recipe(node)
    name = recipe.data.name
    costs = measure(recipe, CLASSES[name], cache)
    views = getattr(recipe.data.settings, "test_clips", 1) * getattr(recipe.data.settings, "test_crops", 1)
    total, test = SIZES[name]
    val = round(total * recipe.data.val_fraction)
    train = total - val
    passes = train + (val + test) * views  # one forward over every split: final scores, or features
    mods = [m for m in costs if not recipe.modalities or m in recipe.modalities]
    fwd = sum(costs[m].fwd for m in mods)
    trains = node.command == "pretrain-unimodal" or (
        node.command == "train" and not recipe.method.params.get("from_teachers"))  # fmt: skip
    if trains:
        epochs, period = recipe.train.epochs, max(recipe.train.eval_every, 1)
        step = sum(costs[m].step for m in mods) + (fwd if recipe.method.name in TEACHERS else 0.0)
        flops = epochs * train * step + (epochs // period) * val * views * fwd + passes * fwd
        snaps = epochs // recipe.train.snapshot_every if recipe.train.snapshot_every else 0
        kept = 4.0 * sum(costs[m].params for m in mods) * (1 + snaps)
    else:  # probe, decide, ensemble: a forward of the frozen encoders over every split
        flops, kept = passes * fwd * _snapshots(node, plan), 0.0
    rate = sum(costs[m].step / costs[m].seconds for m in mods) / len(mods)  # FLOP/s the steps reach here
    return flops, flops / rate, kept


def _recipe(node):
    from mmtool.config import load_recipe

    return load_recipe([REPO / f for f in node.recipes], list(node.overrides))


def _snapshots(node, plan) -> int:
    """How many checkpoints a probe reads: every snapshot of its run with probe.over_training, else one."""
    recipe = _recipe(node)
    if node.command != "probe" or not recipe.probe.over_training:
        return 1
    source = _recipe(plan.nodes[next(i.node for i in node.inputs if i.key == "run")])
    return max(1, source.train.epochs // max(source.train.snapshot_every, 1))


def estimate(table: str, cache: dict, cpu_gemm: float) -> dict:
    from mmtool.analysis import paper_plans

    plan_of = paper_plans.table_plan(table)
    opts = paper_plans.Options(table, {d: "/raw" for d in plan_of.datasets}, (0, 1, 2))
    plan = paper_plans.build(opts)
    flops = seconds = kept = 0.0
    runs = 0
    for node in plan.nodes.values():
        if node.is_prep:
            continue
        f, s, k = run_cost(node, plan, cache)
        flops, seconds, kept, runs = flops + f, seconds + s, kept + k, runs + 1
    efficiency = flops / seconds / cpu_gemm  # of this CPU's GEMM rate, FLOP-weighted over the runs
    gpu_hours = flops / (A100_BF16 * efficiency) / 3600
    return {"table": table, "runs": runs, "pflop": flops / 1e15, "efficiency": efficiency,
            "gpu_hours": gpu_hours, "gpu8_hours": gpu_hours / 8, "floor_hours": flops / A100_BF16 / 3600,
            "disk_gb": kept / 1e9}  # fmt: skip


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 10 else f"{h:.1f}" if h >= 1 else f"{h:.2f}"


def markdown(rows: list[dict], cpu_gemm: float) -> str:
    lines = [
        MARK_BEGIN,
        "| target | runs | PFLOP | step efficiency | 1 A100 (h) | 8 A100 (h) | floor, 1 A100 (h) | weights kept (GB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| `{r['table']}` | {r['runs']} | {r['pflop']:,.1f} | {r['efficiency']:.2f} | "
                     f"{_hours(r['gpu_hours'])} | {_hours(r['gpu8_hours'])} | {_hours(r['floor_hours'])} | "
                     f"{r['disk_gb']:,.1f} |")  # fmt: skip
    lines += ["", f"Measured by `python benchmarks/bench_estimates.py` (this machine's fp32 GEMM: "
              f"{cpu_gemm / 1e9:.0f} GFLOP/s); how the numbers are made: its docstring.", MARK_END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", default="", help="comma-separated targets (default: every paper table)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write", type=Path, help="replace the estimates section of this Markdown file")
    args = parser.parse_args()
    from mmtool.analysis import paper_plans

    torch.manual_seed(0)
    tables = [t for t in args.tables.split(",") if t] or list(paper_plans.TABLES)
    cpu_gemm, cache = gemm_rate(), {}
    rows = [estimate(t, cache, cpu_gemm) for t in tables]
    text = markdown(rows, cpu_gemm)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"cpu_gemm_flops": cpu_gemm, "rows": rows}, indent=1))
    if args.write:
        doc = args.write.read_text()
        pattern = re.compile(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END), re.S)
        if not pattern.search(doc):
            raise SystemExit(f"{args.write}: no {MARK_BEGIN} ... {MARK_END} section to replace")
        args.write.write_text(pattern.sub(lambda _: text, doc))


if __name__ == "__main__":
    main()
