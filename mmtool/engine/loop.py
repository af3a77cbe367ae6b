"""The one training loop, shared by `pretrain-unimodal`, `train`, `probe` and `decide`.

It knows nothing about methods: it asks the method for a dict of named losses, back-propagates their
sum and logs each one. It evaluates on the validation split every ``eval_every`` epochs and keeps the
best model by validation accuracy (never test), writes ``metrics.jsonl``, and writes a resumable
``last.pt`` every ``checkpoint_every`` epochs (atomically: a killed run resumes from its last complete
checkpoint, and metrics logged after that checkpoint are dropped and recomputed).

Data comes from the split's own loader, shuffled by (train.seed, epoch), so a resumed epoch reads the
same batches. Device, precision (autocast, fp16 gradient scaling) and memory format come from the
:class:`~mmtool.engine.runtime.Runtime`. The loop never waits for the device inside an epoch: a step
keeps references to its losses, read back in one transfer every ``train.log_every`` steps and at the end
of the epoch; a non-finite loss is noticed then, and reported with the epoch, the first bad step and the loss terms
that were not finite, before anything is validated or saved (one line, :class:`NonFiniteLoss`).

A resume continues from the newest readable ``last*.pt``; a damaged ``best.pt`` is written again from the
copy of the best weights that ``last.pt`` keeps, and a run whose every ``last*.pt`` is damaged is refused
(naming them) rather than restarted. A run that completed is not trained again: ``--resume`` only scores it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmtool.config import OptimConfig, ScheduleConfig, TrainConfig
from mmtool.engine.checkpoint import damaged, load_checkpoint
from mmtool.engine.evaluate import evaluate
from mmtool.engine.loggers import MetricLoggers
from mmtool.engine.optim import build_optimizer, build_scheduler
from mmtool.engine.runtime import Runtime
from mmtool.errors import Interrupted, UserError
from mmtool.faults import armed
from mmtool.models import MultiModalNet, build_model
from mmtool.runs import CheckpointStore, Layout


@dataclass
class FitResult:
    best_epoch: int
    best_val: dict[str, float]
    epochs: int
    resumed_from: int | None
    best_weights: dict[str, torch.Tensor] | None = None  # the selected model's weights (None: read best.pt)


def selected_model(result: FitResult, out: Layout, spec: dict) -> MultiModalNet:
    """The model selected on validation, in eval mode: from memory when :func:`fit` trained it (every rank
    has it, whether or not rank 0 has finished writing best.pt), else from ``out``'s best.pt."""
    if result.best_weights is None:
        return out.checkpoints().load_model()[0]
    model = build_model(spec)
    model.load_state_dict(result.best_weights)
    return model.eval()


def fit(
    model: MultiModalNet,
    method: Any,
    train: Any,
    val: Any,
    spec: dict,
    out: Layout | Path,
    optim: OptimConfig,
    schedule: ScheduleConfig,
    cfg: TrainConfig,
    runtime: Runtime,
    resume: bool = False,
    label: str = "train",
) -> FitResult:
    """Train ``model`` with ``method`` on ``train``; select on ``val``; write everything into ``out`` (a
    run's :class:`~mmtool.runs.Layout`, or a part of one; a bare folder is taken as one).

    ``train`` and ``val`` are split sources (:class:`~mmtool.data.source.SplitSource`). ``spec`` is the
    model spec stored in checkpoints so later stages can rebuild the model. ``runtime`` is the command's
    :class:`Runtime`. SIGTERM and SIGINT end training after the current step with a resumable checkpoint,
    raising :class:`Interrupted`.
    """
    if not isinstance(runtime, Runtime):
        raise TypeError(f"fit needs the command's Runtime, got {type(runtime).__name__}")
    out = out if isinstance(out, Layout) else Layout(out)
    store = out.checkpoints()
    if runtime.is_main:
        store.create()
    metrics = MetricLoggers(out, cfg.loggers)
    model, step_model, opt, sched, scaler = _training_parts(model, method, optim, schedule, runtime)
    state = _State(best_epoch=0, best_val={"accuracy": -math.inf}, start=1)
    resumed = None
    if resume:
        done = _resume(store, spec, model, opt, sched, scaler, method, state, metrics, runtime)
        if isinstance(done, FitResult):
            return done
        resumed = done
    run = _Run(model, step_model, method, opt, sched, scaler, state, spec, store, cfg, runtime)
    with (
        _progress(cfg.epochs, state.start - 1, label, runtime.is_main) as advance,
        _Signals() as signals,
        contextlib.closing(metrics),
    ):
        run.signals = signals
        for epoch in range(state.start, cfg.epochs + 1):
            _epoch(run, train, val, epoch, metrics, advance)
        _complete(run, optim)
    runtime.barrier()  # every rank leaves with rank 0's files complete
    return FitResult(state.best_epoch, state.best_val, cfg.epochs, resumed, state.best_weights)


def _training_parts(model: MultiModalNet, method: Any, optim: OptimConfig, schedule: ScheduleConfig,
                    runtime: Runtime) -> tuple:  # fmt: skip
    """(model, the model a step runs: DDP-wrapped under torchrun, optimizer, scheduler, grad scaler)."""
    runtime.prepare_model(model)
    method.setup(model)  # attaches the method's trainable extras to the model, before the optimizer sees it
    model = runtime.convert_sync_batchnorm(model)
    opt = build_optimizer(method.param_groups(model), optim)
    sched = build_scheduler(opt, schedule)
    step_model = runtime.wrap(model, find_unused_parameters=not method.uses_every_parameter)
    return model, step_model, opt, sched, runtime.grad_scaler()


def _resume(store: CheckpointStore, spec: dict, model, opt, sched, scaler, method, state: _State,
            metrics: MetricLoggers, runtime: Runtime) -> FitResult | int | None:  # fmt: skip
    """Continue from the newest readable last*.pt: the epochs it holds (None: from the start), or the
    :class:`FitResult` of a training that already completed (only scored again)."""
    if store.complete() is not None:
        return _finished(store, spec, runtime.is_main)
    last = store.latest_good()  # last.pt, or an older one when last.pt is damaged
    if last is not None and last.get("complete"):  # a finished run's small last.pt (its marker lost)
        return FitResult(last["best_epoch"], last["best_val"], last["epoch"], last["epoch"])
    if last is None:
        metrics.truncate_after(0)
        return None
    resumed = _restore(last, model, opt, sched, scaler, method, state, runtime)
    metrics.truncate_after(resumed)
    if runtime.is_main:
        _rewind_best(store, state, spec)
    return resumed


def _epoch(run: _Run, train: Any, val: Any, epoch: int, metrics: MetricLoggers, advance: Any) -> None:
    """One epoch: train, validate when due, step the scheduler, snapshot and checkpoint when due, show progress.
    A signal received during it saves last.pt and raises :class:`Interrupted` (unless it is the last)."""
    model, method, cfg, state, store = run.model, run.method, run.cfg, run.state, run.store
    if state.partial is None:
        method.on_epoch_start(model, epoch)  # a resumed epoch's method state already reflects it
    train_losses = _train_epoch(run, train, epoch)
    record: dict[str, Any] = {"epoch": epoch, "lr": run.opt.param_groups[0]["lr"], **train_losses}
    record.update(method.epoch_metrics())
    if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
        record.update(_validate(model, val, run.spec, epoch, store, state, run.runtime))
        metrics.write(record)
    _step_scheduler(run.sched, record)
    if cfg.snapshot_every and epoch % cfg.snapshot_every == 0:
        store.save_snapshot(epoch, {"model": model.weights(), "spec": run.spec, "epoch": epoch})
    stop = run.stop_requested()
    if stop or (cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0 and epoch < cfg.epochs):
        run.save(epoch)
    advance(record)
    if stop and epoch < cfg.epochs:
        raise Interrupted(stop, store.last, epoch, None)


def _complete(run: _Run, optim: OptimConfig) -> None:
    """After the last epoch: the final last.pt and the COMPLETE marker (a signal now leaves only the scoring
    to a resume)."""
    cfg, state = run.cfg, run.state
    if state.best_epoch == 0:  # every validation loss was NaN or infinite: nothing to select
        raise UserError(
            f"the validation loss was not finite at any evaluation (every {cfg.eval_every} epochs of "
            f"{cfg.epochs}): no epoch can be selected. The model diverges on held-out data (often batch-norm "
            f"statistics from a high learning rate or tiny batches): lower optim.lr (now {optim.lr:g}) or "
            "raise train.batch_size"
        )
    run.save(cfg.epochs)
    run.store.mark_complete({"epochs": cfg.epochs, "best_epoch": state.best_epoch, "best_val": state.best_val})
    stop = run.stop_requested()
    if stop:  # training is complete; what follows (scoring the splits) is left to the resume
        raise Interrupted(stop, run.store.last, cfg.epochs, None)


@dataclass
class _State:
    best_epoch: int
    best_val: dict[str, float]
    start: int
    best_weights: dict[str, torch.Tensor] | None = None  # copy of best.pt's weights, saved in last.pt
    step: int = 0  # training steps (batches) taken since the run began
    partial: dict | None = None  # a mid-epoch checkpoint's position: {"step": k, "sums": ...}


_clock = time.monotonic  # what checkpoint_every_minutes measures with (tests replace it)


@dataclass
class _Run:
    """What a training step and a checkpoint need: the models, the optimizer state and the run's settings."""

    model: Any
    step_model: Any  # what training_step calls: the model, or DistributedDataParallel around it
    method: Any
    opt: Any
    sched: Any
    scaler: Any
    state: _State
    spec: dict
    store: CheckpointStore | None
    cfg: TrainConfig
    runtime: Runtime
    signals: Any = None
    last_save: float = field(default_factory=lambda: _clock())  # looked up when the run starts

    def stop_requested(self) -> int:
        """The signal to stop for, or 0: after the step it arrived in. In one process that is the handler's
        flag (an attribute read); several ranks agree on it with a one-integer sum on the CPU control group,
        so a signal reaching one rank stops every rank at the same step."""
        got = self.signals.received if self.signals is not None else 0
        if not self.runtime.distributed:
            return got
        return (got or signal.SIGTERM) if self.runtime.any_rank(bool(got)) else 0

    def save_due(self, steps_done: int, agree: bool = True) -> bool:
        """A mid-epoch checkpoint is due: every ``checkpoint_every_steps`` steps (the same step count on
        every rank), or every ``checkpoint_every_minutes`` by rank 0's clock, which several ranks agree on
        only when ``agree`` (every ``train.log_every`` steps, as for signals)."""
        cfg = self.cfg
        due = bool(cfg.checkpoint_every_steps) and steps_done % cfg.checkpoint_every_steps == 0
        if cfg.checkpoint_every_minutes and (agree or not self.runtime.distributed):
            late = self.runtime.is_main and _clock() - self.last_save >= 60 * cfg.checkpoint_every_minutes
            due = due or self.runtime.any_rank(late)
        return due

    def save(self, epoch: int, partial: dict | None = None) -> None:
        """``last.pt``: after ``epoch`` complete, or inside epoch ``epoch`` at ``partial``'s position."""
        _save_last(self, epoch, partial)
        self.last_save = _clock()


def _mark_best(state: _State, model, epoch: int, val: dict, spec: dict, store: CheckpointStore) -> None:
    state.best_epoch, state.best_val = epoch, val
    state.best_weights = {k: v.detach().clone() for k, v in model.weights().items()}  # no method extras
    store.save_best({"model": state.best_weights, "spec": spec, "epoch": epoch, "val": val})


def _rewind_best(store: CheckpointStore, state: _State, spec: dict) -> None:
    """After a resume, best.pt must be the best of the epochs kept, not of the epochs being redone; a
    damaged best.pt is written again from the copy in last.pt (with a warning naming it)."""
    best = store.best
    try:
        if best.exists() and load_checkpoint(best)["epoch"] == state.best_epoch:
            return
    except UserError as err:
        print(f"warning: {str(err).split(';')[0]}; writing it again from the best weights kept in last.pt",
              file=sys.stderr)  # fmt: skip
    if state.best_weights is None:
        store.remove_best()
        return
    store.save_best({"model": state.best_weights, "spec": spec, "epoch": state.best_epoch, "val": state.best_val})


def train_epoch(model, method, source, opt, epoch: int, cfg: TrainConfig, runtime: Runtime, scaler=None,
                step_model=None) -> dict[str, float]:  # fmt: skip
    """One training epoch of ``fit``'s loop on its own, without checkpoints or validation (benchmarks).
    ``step_model``: what the training step calls, e.g. ``runtime.wrap(model)`` (default: ``model``)."""
    run = _Run(model, step_model or model, method, opt, None, scaler, _State(0, {}, 1), {}, None, cfg, runtime)
    return _train_epoch(run, source, epoch)


def _train_epoch(run: _Run, train: Any, epoch: int) -> dict[str, float]:
    """One epoch (or what is left of it after a mid-epoch resume); the epoch's mean losses."""
    model, method, cfg, runtime, state = run.model, run.method, run.cfg, run.runtime, run.state
    model.train()
    first = state.partial["step"] if state.partial else 0
    sums = _LossSums(runtime, state.partial["sums"] if state.partial else None)
    state.partial = None
    batches = train.loader(runtime.local_batch_size(cfg.batch_size), train=True, seed=cfg.seed, epoch=epoch,
                           workers=runtime.workers, shard=runtime.shard, pin_memory=runtime.pin_memory,
                           start=first)  # fmt: skip
    step, fault = first, armed()
    try:
        for step, batch in enumerate(batches, start=first):
            batch = runtime.to_device(batch)
            fault("train_forward")  # tests: MMTOOL_FAULT=train_forward:N:oom runs out of memory here
            for _ in range(method.updates_per_batch):
                losses, total = _update(run, batch, step)
                sums.add(step, losses, total, len(batch))
            state.step += 1
            fault("train_step")  # tests: MMTOOL_FAULT=train_step:N:kill dies here after the N-th step
            boundary = (step + 1) % runtime.log_every == 0  # where ranks agree and losses are read back
            if boundary:
                sums.check(epoch)
            stop = run.stop_requested()
            if stop or run.save_due(state.step, boundary):
                sums.check(epoch)
                run.save(epoch - 1, {"epoch": epoch, "step": step + 1, "sums": sums.state()})
                if stop:
                    raise Interrupted(stop, run.store.last, epoch, step + 1)
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        raise UserError(_oom_message(epoch, step, cfg, runtime)) from None
    sums.check(epoch)
    return sums.means()


def _update(run: _Run, batch: Any, step: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One optimizer update on ``batch`` (step ``step`` of the epoch): the method's losses and their sum."""
    model, method, opt, scaler, runtime = run.model, run.method, run.opt, run.scaler, run.runtime
    with runtime.autocast():
        losses = method.training_step(run.step_model, batch)
    total = functools.reduce(operator.add, losses.values())  # no `0 + loss` kernel for one loss
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.unscale_(opt)  # methods that rescale or project gradients see their true values
    else:
        total.backward()
    method.after_backward(model, step)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    method.after_step(model, step)
    return losses, total


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure (a RuntimeError)."""
    text = str(err)
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def _oom_message(epoch: int, step: int, cfg: TrainConfig, runtime: Runtime) -> str:
    lower = [f"train.batch_size (now {cfg.batch_size or 'the whole split'})"]
    if runtime.precision == "fp32":
        lower.append("train.precision=bf16" + ("/fp16" if runtime.device.type == "cuda" else ""))
    if cfg.workers:
        lower.append(f"train.workers (now {cfg.workers}) if host memory ran out")
    return f"out of memory at epoch {epoch}, step {step} on {runtime.device}: lower {', or '.join(lower)}"


class NonFiniteLoss(UserError, FloatingPointError):
    """A loss that was not finite: the CLI's one line with the epoch, the step and the terms to blame (a
    setting to change, not a bug: a :class:`UserError`, and a ``FloatingPointError`` for callers of fit)."""


class _LossSums:
    """Running, sample-weighted loss sums and the first step whose loss was not finite. A step only keeps
    references to its (detached) loss tensors; :meth:`check` stacks them on their device, reads them back
    in one transfer and folds them into the sums: the only place the host waits for the device."""

    def __init__(self, runtime: Runtime, saved: dict | None = None) -> None:
        self.runtime = runtime
        self.names: list[str] | None = saved["names"] if saved else None
        self.sums: list[float] | None = saved["sums"] if saved else None  # each named loss, then their total
        self.seen = saved["seen"] if saved else 0
        self.pending: list[tuple[int, list[torch.Tensor], int]] = []

    def state(self) -> dict:
        """The sums so far (call :meth:`check` first), for a mid-epoch checkpoint."""
        return {"names": self.names, "sums": self.sums, "seen": self.seen}

    def add(self, step: int, losses: dict[str, torch.Tensor], total: torch.Tensor, n: int) -> None:
        if self.names is None:
            self.names = [*losses, "loss"]
        self.pending.append((step, [v.detach() for v in (*losses.values(), total)], n))

    def check(self, epoch: int) -> None:
        if not self.pending:
            return
        width = len(self.pending[0][1])
        values = torch.stack([t for _, v, _ in self.pending for t in v]).float().view(-1, width)  # (S, K + 1)
        counts = [n for _, _, n in self.pending]
        if self.runtime.distributed:  # every rank's samples: the same sums, and the same verdict, on every rank
            weights = values.new_tensor(counts)[:, None]
            both = self.runtime.all_reduce(torch.cat([values * weights, weights], dim=1))
            counts = [int(c) for c in both[:, -1].tolist()]
            values = both[:, :-1] / both[:, -1:]
        finite = torch.isfinite(values).all(dim=1)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0, 0])
            self._raise(epoch, self.pending[first][0], values[first].tolist())
        rows = values.double().tolist()  # one transfer; summed in order, in float64, as the steps came
        sums = self.sums or [0.0] * len(rows[0])
        for row, n in zip(rows, counts, strict=True):
            sums = [acc + v * n for acc, v in zip(sums, row, strict=True)]
            self.seen += n
        self.sums = sums
        self.pending.clear()

    def _raise(self, epoch: int, step: int, row: list[float]) -> None:
        values = dict(zip(self.names or [], row, strict=True))
        bad = [k for k, v in values.items() if not math.isfinite(v) and k != "loss"] or ["loss"]
        detail = ", ".join(f"{k}={v}" for k, v in values.items())
        raise NonFiniteLoss(
            f"non-finite loss at epoch {epoch}, step {step} in {', '.join(bad)} ({detail}); "
            "lower optim.lr or check the inputs"
        )

    def means(self) -> dict[str, float]:
        if self.names is None or self.sums is None:
            return {"train_loss": float("nan")}
        return {f"train_{k}": v / max(self.seen, 1) for k, v in zip(self.names, self.sums, strict=True)}


def _validate(model, val, spec, epoch, store: CheckpointStore, state: _State, runtime: Runtime) -> dict[str, float]:
    if val is None or len(val) == 0:  # no validation split: the last epoch is the selected one
        _mark_best(state, model, epoch, {"accuracy": float("nan")}, spec, store)
        return {}
    result = evaluate(model, val, runtime)
    if math.isfinite(result["loss"]) and result["accuracy"] > state.best_val["accuracy"]:
        _mark_best(state, model, epoch, result, spec, store)
    return {"val_loss": result["loss"], "val_accuracy": result["accuracy"], "best_epoch": state.best_epoch}


def _step_scheduler(sched, record: dict[str, Any]) -> None:
    if sched is None:
        return
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if "val_loss" in record:
            sched.step(record["val_loss"])
    else:
        sched.step()


def _save_last(run: _Run, epoch: int, partial: dict | None) -> None:
    """The resumable checkpoint: everything an uninterrupted run would hold at this point, including each
    rank's random state and, inside an epoch, the step reached and the epoch's loss sums so far."""
    state, sched, scaler = run.state, run.sched, run.scaler
    rng = run.runtime.gather_objects(_rng_state(run.runtime))  # every rank's, in rank order
    weights = run.model.state_dict()
    run.store.save_last(
        {
            "epoch": epoch,  # epochs complete
            "partial": partial or {},  # {"epoch": e, "step": k, "sums": ...}: k steps of epoch e done
            "step": state.step,
            "model": weights,
            "optimizer": run.opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else {},
            "scaler": scaler.state_dict() if scaler is not None else {},
            "torch_rng": rng[0]["cpu"],
            "rng": rng,
            "method": run.method.state_dict(),
            "best_epoch": state.best_epoch,
            "best_val": state.best_val,
            "best_model": _sharing(state.best_weights or {}, weights),
            "spec": run.spec,
        },
        keep=run.cfg.keep_last,
    )


def _sharing(best: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The best weights, each tensor that equals the model's own replaced by the model's: torch.save writes
    a shared storage once, so ``last.pt`` saved right after a best epoch (or with frozen layers) does not
    hold the same weights twice (a video model's best copy alone is hundreds of MB)."""
    out = {}
    for key, value in best.items():
        mine = weights.get(key)
        same = mine is not None and mine.shape == value.shape and mine.dtype == value.dtype
        out[key] = mine if same and torch.equal(mine, value) else value
    return out


def _rng_state(runtime: Runtime) -> dict[str, torch.Tensor]:
    out = {"cpu": torch.get_rng_state()}
    if runtime.device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(runtime.device)
    return out


def _restore(ckpt, model, opt, sched, scaler, method, state: _State, runtime: Runtime) -> int:
    """Load a resumable checkpoint; returns the number of complete epochs it holds."""
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    if sched is not None and ckpt["scheduler"]:
        sched.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    ranks = ckpt.get("rng") or [{"cpu": ckpt["torch_rng"]}]
    mine = ranks[runtime.rank] if runtime.rank < len(ranks) else ranks[0]
    torch.set_rng_state(mine["cpu"])
    if "cuda" in mine and runtime.device.type == "cuda":
        torch.cuda.set_rng_state(mine["cuda"], runtime.device)
    method.load_state_dict(ckpt["method"])
    state.best_epoch, state.best_val, state.start = ckpt["best_epoch"], ckpt["best_val"], ckpt["epoch"] + 1
    state.best_weights = ckpt["best_model"] or None
    state.step = int(ckpt.get("step", 0))
    partial = ckpt.get("partial") or None
    if partial:
        state.start, state.partial = partial["epoch"], {"step": partial["step"], "sums": partial["sums"]}
    return ckpt["epoch"]


def _finished(store: CheckpointStore, spec: dict, writer: bool) -> FitResult:
    """The result of a training that completed (``COMPLETE``), for a ``--resume`` that only scores it.
    A damaged best.pt is written again from the best weights in last.pt when it still holds them (a run
    with ``train.keep_optimizer``, or one stopped before its last.pt was cut down); else the one line
    names it and says what to do."""
    done = store.complete()
    result = FitResult(done["best_epoch"], done["best_val"], done["epochs"], done["epochs"])
    problem = damaged(store.best)
    if problem is None or not writer:
        return result
    try:
        copy = load_checkpoint(store.last).get("best_model")
    except UserError:
        copy = None
    if not copy:
        raise UserError(problem)  # it says what to do for a finished run
    print(f"warning: {problem.split(';')[0]}; writing it again from the best weights kept in last.pt", file=sys.stderr)
    store.save_best({"model": copy, "spec": spec, "epoch": done["best_epoch"], "val": done["best_val"]})
    return result


class _progress:
    """Progress of the epochs on stderr: a rich bar on a terminal; otherwise (a cluster job's log, a pipe)
    a plain line each time another 5% of the epochs is done — at most one per ``MMTOOL_PROGRESS_SECONDS``
    (default 10) seconds, so short trainings such as linear probes stay quiet — and one at the last
    epoch, with the latest loss, validation accuracy, elapsed time and ETA, so a log shows the job is
    alive. Nothing in other ranks than rank 0."""

    EVERY = 0.05

    def __init__(self, total: int, done: int, label: str, show: bool = True) -> None:
        self.total, self.done, self.label, self.show = total, done, label, show
        self.bar = None
        self.lines = False
        self.start = time.monotonic()
        self.first = done  # epochs done before this process started (a resume): not part of the rate
        self.next_line = done + 1

    def __enter__(self):
        if self.show and sys.stderr.isatty():
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
        else:
            self.lines = self.show
            self.step = max(1, math.ceil(self.total * self.EVERY))
            self.next_line = (self.done // self.step + 1) * self.step
            self.gap = float(os.environ.get("MMTOOL_PROGRESS_SECONDS", "10"))
            self.last_line = self.start
        return self._advance

    def _advance(self, record: dict[str, Any]) -> None:
        self.done = int(record.get("epoch", self.done + 1))
        info = f"loss {record.get('train_loss', float('nan')):.4f}"
        if "val_accuracy" in record:
            info += f"  val {record['val_accuracy']:.1f}%"
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, info=info)
        elif self.lines and (self.done >= self.next_line or self.done == self.total):
            self.next_line = (self.done // self.step + 1) * self.step
            now = time.monotonic()
            if now - self.last_line < self.gap and self.done != self.total:
                return
            self.last_line = now
            elapsed = now - self.start
            rate = elapsed / max(self.done - self.first, 1)
            eta = rate * (self.total - self.done)
            print(f"{self.label}: epoch {self.done}/{self.total} ({100 * self.done / self.total:.0f}%)  {info}  "
                  f"elapsed {_duration(elapsed)}  ETA {_duration(eta)}", file=sys.stderr, flush=True)  # fmt: skip

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class _Signals:
    """SIGTERM and SIGINT, while training, only set :attr:`received`: the loop then finishes its step,
    saves a checkpoint and raises :class:`Interrupted`. A second signal (during that save, say) is recorded
    and changes nothing, so it cannot leave a half-written checkpoint. Outside the main thread (where
    Python allows no handler) signals keep their default behaviour."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received = 0
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.received:
            self.received = signum
            print(f"{signal.Signals(signum).name}: saving a checkpoint after this step", file=sys.stderr, flush=True)

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
