"""Training methods as registered strategies.

A method is a class registered in :data:`METHODS` with

* ``Params`` — a frozen dataclass of its recipe options (the ``method:`` section is validated against it);
* ``__init__(params, context)`` — ``context`` is a :class:`MethodContext` (teachers, dataset facts);
* ``training_step(model, batch) -> dict[str, Tensor]`` — named, already-weighted losses; the loop
  back-propagates their sum and logs each one;
* optional hooks the loop calls when present:
  ``check_model(model)`` before training;
  ``param_groups(model) -> list[dict]`` to give parts of the model their own learning rate;
  ``on_epoch_start(model, epoch)`` (epochs count from 1);
  ``after_backward(model, step)`` between backward and the optimizer step (gradient modulation);
  ``after_step(model, step)`` after the optimizer step, gradients still in place (update statistics);
  ``epoch_metrics() -> dict`` extra numbers logged in metrics.jsonl at evaluation epochs;
  ``state_dict()`` / ``load_state_dict(state)`` for resumable method state.

The loop never asks which method it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmtool.registry import Registry

METHODS: Registry[type] = Registry("method")


@dataclass
class MethodContext:
    """What a method may need besides its parameters; filled by the stage that trains."""

    teachers: dict[str, Any] = field(default_factory=dict)  # modality -> frozen uni-modal MultiModalNet
    num_classes: int = 0
    modalities: tuple[str, ...] = ()
    device: str = "cpu"
    # measure(model, split_name, forward, want) -> run_inference's result on the "train" or "val" split:
    # how a method that measures data (G-Blending) reaches it without holding the splits
    measure: Callable[[Any, str, Callable, tuple[str, ...]], dict[str, Any]] | None = None
    epochs: int = 0  # total training epochs
    lr: float | None = None  # the recipe's optim.lr, for methods whose param_groups scale it for a part
    seed: int = 0  # the recipe's train.seed, for methods that draw random numbers of their own


def build_method(name: str, params: dict[str, Any], context: MethodContext) -> Any:
    cls = METHODS.get(name)
    return cls(cls.Params(**params), context)


def describe() -> list[tuple[str, str, str]]:
    """(name, one-line description, paper reference) for every registered method."""
    return [(name, cls.summary, cls.reference) for name, cls in METHODS.items()]


from mmtool.methods import (  # noqa: E402,F401  (registration)
    aux_ce,
    balanced,
    dropout,
    finetune,
    gblending,
    mla,
    modality_dropout,
    naive,
    ogm_ge,
    self_distill,
    umt,
)
