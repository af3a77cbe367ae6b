"""The one training loop, shared by `pretrain-unimodal`, `train`, `probe` and `decide`.

It knows nothing about methods: it asks the method for a dict of named losses, back-propagates their
sum and logs each one. It evaluates on the validation split every ``eval_every`` epochs and keeps the
best model by validation accuracy (never test), writes ``metrics.jsonl``, and writes a resumable
``last.pt`` every ``checkpoint_every`` epochs (atomically: a killed run resumes from its last complete
checkpoint, and metrics logged after that checkpoint are dropped and recomputed).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmtool.config import OptimConfig, ScheduleConfig, TrainConfig
from mmtool.engine.checkpoint import BEST, COMPLETE, LAST, load_checkpoint, save_checkpoint, snapshot_path
from mmtool.engine.evaluate import autocast, evaluate
from mmtool.engine.optim import build_optimizer, build_scheduler
from mmtool.models import MultiModalNet
from mmtool.runs import MetricsWriter, write_json


@dataclass
class FitResult:
    best_epoch: int
    best_val: dict[str, float]
    epochs: int
    resumed_from: int | None


def fit(
    model: MultiModalNet,
    method: Any,
    train: Any,
    val: Any,
    spec: dict,
    out_dir: Path,
    optim: OptimConfig,
    schedule: ScheduleConfig,
    cfg: TrainConfig,
    device: torch.device,
    resume: bool = False,
    label: str = "train",
) -> FitResult:
    """Train ``model`` with ``method`` on ``train``; select on ``val``; write everything under ``out_dir``.

    ``train`` and ``val`` provide ``batches(batch_size, generator=None)`` and ``len()``. ``spec`` is the
    model spec stored in checkpoints so later stages can rebuild the model.
    """
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    metrics = MetricsWriter(out_dir / "metrics.jsonl")
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if hasattr(method, "check_model"):
        method.check_model(model)
    groups = method.param_groups(model) if hasattr(method, "param_groups") else model.parameters()
    opt = build_optimizer(groups, optim)
    sched = build_scheduler(opt, schedule)
    gen = torch.Generator().manual_seed(cfg.seed)
    state = _State(best_epoch=0, best_val={"accuracy": -math.inf}, start=1)
    resumed = None
    if resume:
        if (ckpt_dir / COMPLETE).exists():
            return _finished(ckpt_dir)
        if (ckpt_dir / LAST).exists():
            resumed = _restore(load_checkpoint(ckpt_dir / LAST), model, opt, sched, gen, method, state)
            metrics.truncate_after(resumed)
            _rewind_best(ckpt_dir, state, spec)
        else:
            metrics.truncate_after(0)

    with _progress(cfg.epochs, state.start - 1, label) as advance:
        for epoch in range(state.start, cfg.epochs + 1):
            if hasattr(method, "on_epoch_start"):
                method.on_epoch_start(model, epoch)
            train_losses = _train_epoch(model, method, train, opt, gen, cfg, device)
            record: dict[str, Any] = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], **train_losses}
            if hasattr(method, "epoch_metrics"):
                record.update(method.epoch_metrics())
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                record.update(_validate(model, val, spec, epoch, ckpt_dir, state, cfg, device))
                metrics.write(record)
            _step_scheduler(sched, record)
            if cfg.snapshot_every and epoch % cfg.snapshot_every == 0:
                save_checkpoint(
                    snapshot_path(ckpt_dir, epoch), {"model": model.state_dict(), "spec": spec, "epoch": epoch}
                )
            if cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0 and epoch < cfg.epochs:
                _save_last(ckpt_dir, epoch, model, opt, sched, gen, method, state, spec)
            advance(record)
    _save_last(ckpt_dir, cfg.epochs, model, opt, sched, gen, method, state, spec)
    write_json(ckpt_dir / COMPLETE, {"epochs": cfg.epochs, "best_epoch": state.best_epoch, "best_val": state.best_val})
    return FitResult(state.best_epoch, state.best_val, cfg.epochs, resumed)


@dataclass
class _State:
    best_epoch: int
    best_val: dict[str, float]
    start: int
    best_weights: dict[str, torch.Tensor] | None = None  # copy of best.pt's weights, saved in last.pt


def _mark_best(state: _State, model, epoch: int, val: dict, spec: dict, ckpt_dir: Path) -> None:
    state.best_epoch, state.best_val = epoch, val
    state.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_checkpoint(ckpt_dir / BEST, {"model": state.best_weights, "spec": spec, "epoch": epoch, "val": val})


def _rewind_best(ckpt_dir: Path, state: _State, spec: dict) -> None:
    """After a resume, best.pt must be the best of the epochs kept, not of the epochs being redone."""
    best = ckpt_dir / BEST
    if best.exists() and load_checkpoint(best)["epoch"] == state.best_epoch:
        return
    if state.best_weights is None:
        best.unlink(missing_ok=True)
        return
    save_checkpoint(best, {"model": state.best_weights, "spec": spec, "epoch": state.best_epoch, "val": state.best_val})


def _train_epoch(model, method, train, opt, gen, cfg: TrainConfig, device) -> dict[str, float]:
    model.train()
    sums: dict[str, float] = {}
    seen = 0
    for step, batch in enumerate(train.batches(cfg.batch_size, generator=gen)):
        batch = batch.to(device)
        with autocast(device, cfg.precision):
            losses = method.training_step(model, batch)
        total = sum(losses.values())
        if not torch.isfinite(total):
            detail = {k: float(v.detach()) for k, v in losses.items()}
            raise FloatingPointError(f"non-finite loss {float(total.detach())} ({detail})")
        opt.zero_grad(set_to_none=True)
        total.backward()
        if hasattr(method, "after_backward"):
            method.after_backward(model, step)
        opt.step()
        if hasattr(method, "after_step"):
            method.after_step(model, step)
        n = len(batch)
        seen += n
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
        sums["loss"] = sums.get("loss", 0.0) + float(total.detach()) * n
    return {f"train_{k}": v / max(seen, 1) for k, v in sums.items()}


def _validate(model, val, spec, epoch, ckpt_dir: Path, state: _State, cfg: TrainConfig, device) -> dict[str, float]:
    if val is None or len(val) == 0:  # no validation split: the last epoch is the selected one
        _mark_best(state, model, epoch, {"accuracy": float("nan")}, spec, ckpt_dir)
        return {}
    result = evaluate(model, val, device, cfg.precision)
    if result["accuracy"] > state.best_val["accuracy"]:
        _mark_best(state, model, epoch, result, spec, ckpt_dir)
    return {"val_loss": result["loss"], "val_accuracy": result["accuracy"], "best_epoch": state.best_epoch}


def _step_scheduler(sched, record: dict[str, Any]) -> None:
    if sched is None:
        return
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if "val_loss" in record:
            sched.step(record["val_loss"])
    else:
        sched.step()


def _save_last(ckpt_dir, epoch, model, opt, sched, gen, method, state: _State, spec) -> None:
    save_checkpoint(
        ckpt_dir / LAST,
        {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else {},
            "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "method": method.state_dict() if hasattr(method, "state_dict") else {},
            "best_epoch": state.best_epoch,
            "best_val": state.best_val,
            "best_model": state.best_weights or {},
            "spec": spec,
        },
    )


def _restore(ckpt, model, opt, sched, gen, method, state: _State) -> int:
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    if sched is not None and ckpt["scheduler"]:
        sched.load_state_dict(ckpt["scheduler"])
    gen.set_state(ckpt["generator"])
    torch.set_rng_state(ckpt["torch_rng"])
    if hasattr(method, "load_state_dict"):
        method.load_state_dict(ckpt["method"])
    state.best_epoch, state.best_val, state.start = ckpt["best_epoch"], ckpt["best_val"], ckpt["epoch"] + 1
    state.best_weights = ckpt["best_model"] or None
    return ckpt["epoch"]


def _finished(ckpt_dir: Path) -> FitResult:
    import json

    done = json.loads((ckpt_dir / COMPLETE).read_text())
    return FitResult(done["best_epoch"], done["best_val"], done["epochs"], done["epochs"])


class _progress:
    """A rich progress bar on an interactive stderr; silent otherwise."""

    def __init__(self, total: int, done: int, label: str) -> None:
        self.total, self.done, self.label = total, done, label
        self.bar = None

    def __enter__(self):
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(stderr=True),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total, completed=self.done, info="")
        return self._advance

    def _advance(self, record: dict[str, Any]) -> None:
        if self.bar is None:
            return
        info = f"loss {record.get('train_loss', float('nan')):.4f}"
        if "val_accuracy" in record:
            info += f"  val {record['val_accuracy']:.1f}%"
        self.bar.update(self.task, advance=1, info=info)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
