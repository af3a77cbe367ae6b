"""Optimisers and learning-rate schedules from recipe sections."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from mmtool.config import OptimConfig, ScheduleConfig
from mmtool.errors import UserError


def build_optimizer(params: Iterable, cfg: OptimConfig) -> torch.optim.Optimizer:
    """``params`` are parameters or parameter-group dicts (a group may set its own ``lr``)."""
    params = list(params)
    if params and isinstance(params[0], dict):
        params = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in params]
    else:
        params = [p for p in params if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise UserError(f"optim.name: unknown optimizer {cfg.name!r} (known: sgd, adam)")


def build_scheduler(opt: torch.optim.Optimizer, cfg: ScheduleConfig):
    """A scheduler stepped once per epoch (plateau: on validation loss), or None."""
    if cfg.name == "none":
        return None
    if cfg.name == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=cfg.patience, factor=cfg.factor)
    raise UserError(f"schedule.name: unknown schedule {cfg.name!r} (known: none, step, plateau)")
