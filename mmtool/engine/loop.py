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

What a fit carries between steps (its state, ``last.pt`` and ``best.pt``, the resume from the newest readable
``last*.pt``, the signal and timed-checkpoint checks) is in :mod:`mmtool.engine.fit_state`; the progress
shown while it trains, in :mod:`mmtool.engine.progress`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
from pathlib import Path
from typing import Any

import torch

from mmtool.config import OptimConfig, ScheduleConfig, TrainConfig
from mmtool.engine.evaluate import evaluate
from mmtool.engine.fit_state import FitResult, _mark_best, _resume, _Run, _Signals, _State
from mmtool.engine.loggers import MetricLoggers
from mmtool.engine.optim import build_optimizer, build_scheduler
from mmtool.engine.penalties import l1_loss
from mmtool.engine.progress import _progress
from mmtool.engine.runtime import Runtime
from mmtool.errors import Interrupted, UserError
from mmtool.faults import armed
from mmtool.models import MultiModalNet, build_model
from mmtool.runs import CheckpointStore, Layout


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
    model, step_model, opt, sched, scaler = _training_parts(model, method, optim, schedule, runtime, train, cfg)
    state = _State(best_epoch=0, best_val={"accuracy": -math.inf}, start=1)
    resumed = None
    if resume:
        done = _resume(store, spec, model, opt, sched, scaler, method, state, metrics, runtime)
        if isinstance(done, FitResult):
            return done
        resumed = done
    run = _Run(model, step_model, method, opt, sched, scaler, state, spec, store, cfg, runtime, l1=optim.l1)
    with (
        _progress(cfg.epochs, state.start - 1, label, runtime.is_main) as advance,
        _Signals() as signals,
        contextlib.closing(metrics),
    ):
        run.signals = signals
        diverged = _epochs(run, train, val, metrics, advance)
        _complete(run, optim, diverged)
    runtime.barrier()  # every rank leaves with rank 0's files complete
    return FitResult(state.best_epoch, state.best_val, cfg.epochs, resumed, state.best_weights, diverged)


def _epochs(run: _Run, train: Any, val: Any, metrics: MetricLoggers, advance: Any) -> int | None:
    """The epochs from ``run.state.start``; the epoch whose training loss was not finite when ``train.on_diverge``
    is ``stop`` (training ends there), else None."""
    for epoch in range(run.state.start, run.cfg.epochs + 1):
        try:
            _epoch(run, train, val, epoch, metrics, advance)
        except NonFiniteLoss as err:  # the same verdict on every rank (the loss sums are all-reduced)
            if run.cfg.on_diverge != "stop":
                raise
            metrics.write({"epoch": epoch, "diverged": str(err)})
            return epoch
    return None


def _length(train: Any, cfg: TrainConfig, runtime: Runtime) -> tuple[int, int]:
    """(epochs, training batches per epoch): the global batch over the split; <= 0 is one batch."""
    batch = runtime.local_batch_size(cfg.batch_size) * runtime.world_size
    return cfg.epochs, 1 if batch <= 0 else max(1, math.ceil(len(train) / batch))


def _training_parts(model: MultiModalNet, method: Any, optim: OptimConfig, schedule: ScheduleConfig,
                    runtime: Runtime, train: Any, cfg: TrainConfig) -> tuple:  # fmt: skip
    """(model, the model a step runs: DDP-wrapped under torchrun, optimizer, scheduler, grad scaler); the
    training split and settings give a schedule stepped every batch its length."""
    runtime.prepare_model(model)
    method.setup(model)  # attaches the method's trainable extras to the model, before the optimizer sees it
    model = runtime.convert_sync_batchnorm(model)
    opt = build_optimizer(method.param_groups(model), optim, model)
    sched = build_scheduler(opt, schedule, *_length(train, cfg, runtime))
    step_model = runtime.wrap(model, find_unused_parameters=not method.uses_every_parameter)
    return model, step_model, opt, sched, runtime.grad_scaler()


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


def _complete(run: _Run, optim: OptimConfig, diverged: int | None = None) -> None:
    """After the last epoch (or the epoch training diverged in, ``train.on_diverge: stop``): the final last.pt
    and the COMPLETE marker (a signal now leaves only the scoring to a resume)."""
    cfg, state = run.cfg, run.state
    if state.best_epoch == 0 and diverged is not None:
        raise UserError(f"the training loss was not finite in epoch {diverged}, before any validated epoch: no "
                        f"model to keep (train.on_diverge: stop keeps the best epoch before it); lower optim.lr "
                        f"(now {optim.lr:g})")  # fmt: skip
    if state.best_epoch == 0:  # every validation loss was NaN or infinite: nothing to select
        raise UserError(
            f"the validation loss was not finite at any evaluation (every {cfg.eval_every} epochs of "
            f"{cfg.epochs}): no epoch can be selected. The model diverges on held-out data (often batch-norm "
            f"statistics from a high learning rate or tiny batches): lower optim.lr (now {optim.lr:g}) or "
            "raise train.batch_size"
        )
    run.save(cfg.epochs)
    run.store.mark_complete({"epochs": cfg.epochs, "best_epoch": state.best_epoch, "best_val": state.best_val,
                             **({"diverged_at": diverged} if diverged is not None else {})})  # fmt: skip
    stop = run.stop_requested()
    if stop:  # training is complete; what follows (scoring the splits) is left to the resume
        raise Interrupted(stop, run.store.last, cfg.epochs, None)


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
            if getattr(run.sched, "per_step", False):
                run.sched.step()
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
    if run.l1:  # paper 002, Sec. 6.3: L' = L + lambda ||theta||_1, for every method
        losses = {**losses, "l1_loss": l1_loss(model, run.l1)}
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
    if sched is None or getattr(sched, "per_step", False):  # a per-batch schedule has stepped already
        return
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if "val_loss" in record:
            sched.step(record["val_loss"])
    else:
        sched.step()
