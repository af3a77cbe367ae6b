"""Optimisers and learning-rate schedules from recipe sections."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from mmtool.config import OPTIMIZER_KEYS, OptimConfig, ScheduleConfig, optim_problems
from mmtool.errors import UserError

# optim.name -> its torch.optim class. Table 12 of paper 000 (App. A.3) compares all six on VGG-Sound and
# names no setting of any: mmtool passes lr, weight_decay and the keys of OPTIMIZER_KEYS (mmtool.config) and
# leaves every other constant at PyTorch's default.
TORCH_OPTIMIZERS = {
    "sgd": "SGD",
    "adam": "Adam",  # Table 11: VGG-Sound's optimizer (lr 1e-3)
    "rmsprop": "RMSprop",  # alpha 0.99, eps 1e-8
    "adagrad": "Adagrad",  # lr_decay 0, eps 1e-10
    "adadelta": "Adadelta",  # rho 0.9, eps 1e-6 (PyTorch's lr default is 1.0, mmtool's optim.lr is 0.2)
    "adamw": "AdamW",  # betas (0.9, 0.999), eps 1e-8; weight_decay decoupled
}


def build_optimizer(params: Iterable, cfg: OptimConfig, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
    """``params`` are parameters or parameter-group dicts (a group may set its own ``lr``). A key the named
    optimizer does not read, set away from its default, is refused rather than ignored. With
    ``optim.norm_weight_decay``, each group's parameters of ``model``'s normalisation layers (BatchNorm and
    the other ``_NormBase`` layers, as PySlowFast's ``_is_bn``) form a group of their own with that decay."""
    params = list(params)
    if params and isinstance(params[0], dict):
        params = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in params]
    else:
        params = [p for p in params if p.requires_grad]
    if cfg.norm_weight_decay is not None:
        params = _norm_groups(params, model, cfg.norm_weight_decay)
    if cfg.name not in TORCH_OPTIMIZERS:
        raise UserError(f"optim.name: unknown optimizer {cfg.name!r} (known: {', '.join(TORCH_OPTIMIZERS)})")
    problems = optim_problems(cfg)  # a recipe reports these when it is read; a config built in code, here
    if problems:
        raise UserError(problems[0])
    own = {k: getattr(cfg, k) for k in OPTIMIZER_KEYS[cfg.name]}  # momentum for sgd and rmsprop
    return getattr(torch.optim, TORCH_OPTIMIZERS[cfg.name])(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **own)


def _norm_groups(params: list, model: torch.nn.Module | None, decay: float) -> list[dict]:
    if model is None:
        raise UserError("optim.norm_weight_decay needs the model to find its normalisation layers")
    norm = {id(p) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)
            for p in m.parameters(recurse=False)}  # fmt: skip
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    out = []
    for g in groups:
        rest = {**g, "params": [p for p in g["params"] if id(p) not in norm]}
        own = {**g, "params": [p for p in g["params"] if id(p) in norm], "weight_decay": decay}
        out += [x for x in (rest, own) if x["params"]]
    return out


def build_scheduler(opt: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int = 1, steps_per_epoch: int = 1):
    """A scheduler stepped once per epoch (plateau: on validation loss), or None; ``cosine`` is stepped after
    every training batch instead (its ``per_step`` is True)."""
    if cfg.name == "none":
        return None
    if cfg.name == "cosine":
        return _cosine(opt, cfg, epochs, steps_per_epoch)
    if cfg.name == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=cfg.patience, factor=cfg.factor)
    raise UserError(f"schedule.name: unknown schedule {cfg.name!r} (known: none, step, plateau, cosine)")


def cosine_lr(epoch: float, base_lr: float, cfg: ScheduleConfig, epochs: int) -> float:
    """The lr at fractional epoch ``epoch`` (0 = the start of training), as PySlowFast's ``get_lr_at_epoch``
    computes it for ``lr_policy: cosine`` (slowfast/utils/lr_policy.py): linear warm-up from
    ``warmup_start_lr`` to the cosine's value at ``warmup_epochs``, then the cosine itself."""

    def cosine(e: float) -> float:
        return cfg.end_lr + (base_lr - cfg.end_lr) * (math.cos(math.pi * e / epochs) + 1.0) * 0.5

    if epoch < cfg.warmup_epochs:
        target = cosine(cfg.warmup_epochs)
        return cfg.warmup_start_lr + (target - cfg.warmup_start_lr) * epoch / cfg.warmup_epochs
    return cosine(epoch)


def _cosine(opt: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int, steps_per_epoch: int):
    """:func:`cosine_lr` as a LambdaLR over training steps (each group keeps its ratio to ``optim.lr``)."""
    if cfg.warmup_epochs >= epochs:
        raise UserError(f"schedule.warmup_epochs ({cfg.warmup_epochs:g}) must be below train.epochs ({epochs})")
    base = opt.param_groups[0]["lr"]
    steps = max(1, steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: cosine_lr(step / steps, base, cfg, epochs) / base)
    sched.per_step = True
    return sched
