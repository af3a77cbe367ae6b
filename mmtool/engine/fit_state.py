"""What a fit carries from step to step, and how it is saved, restored and told to stop: the loop's state
(best epoch, best weights, position inside an epoch), the resumable ``last.pt``, ``best.pt``, each rank's
random state, and the checks the loop makes after every step (a SIGTERM/SIGINT received, a checkpoint due
by steps or by minutes).

A resume continues from the newest readable ``last*.pt``; a damaged ``best.pt`` is written again from the
copy of the best weights that ``last.pt`` keeps, and a run whose every ``last*.pt`` is damaged is refused
(naming them) rather than restarted. A run that completed is not trained again: ``--resume`` only scores it.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from mmtool.config import TrainConfig
from mmtool.engine.checkpoint import damaged, load_checkpoint
from mmtool.engine.loggers import MetricLoggers
from mmtool.engine.runtime import Runtime
from mmtool.errors import UserError
from mmtool.runs import CheckpointStore


@dataclass
class FitResult:
    best_epoch: int
    best_val: dict[str, float]
    epochs: int
    resumed_from: int | None
    best_weights: dict[str, torch.Tensor] | None = None  # the selected model's weights (None: read best.pt)
    diverged_at: int | None = None  # train.on_diverge stop: the epoch whose training loss was not finite


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
    l1: float = 0.0  # optim.l1: the loop adds l1_loss to the method's losses (mmtool.engine.penalties)
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
    result = FitResult(done["best_epoch"], done["best_val"], done["epochs"], done["epochs"],
                       diverged_at=done.get("diverged_at"))  # fmt: skip
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
