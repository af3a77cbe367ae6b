"""Training methods as registered strategies.

A method is a class registered in :data:`METHODS` that subclasses :class:`~mmtool.methods.base.Method`
directly (the protocol and its hooks are described there) with

* ``Params`` — a frozen dataclass of its recipe options, defined in :mod:`mmtool.methods.params` (the
  ``method:`` section is validated against it without importing torch);
* ``__init__(params, context)`` — ``context`` is a :class:`MethodContext` (teachers, dataset facts, runtime);
* ``training_step(model, batch) -> dict[str, Tensor]`` — named, already-weighted losses; the loop
  back-propagates their sum and logs each one; the hooks it needs besides.

The loop never asks which method it runs, nor whether a hook exists.

Importing this package (or :mod:`mmtool.methods.params`) loads no torch: the method modules are imported
the first time :data:`METHODS` is asked for a method.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmtool.methods.base import Method
from mmtool.methods.params import METHOD_PARAMS, METHOD_REFERENCES, METHOD_SUMMARIES
from mmtool.registry import LazyRegistry

if TYPE_CHECKING:
    from mmtool.engine.runtime import Runtime

__all__ = ["METHODS", "Method", "MethodContext", "build_method", "describe"]

# the modules that register methods, imported on first use of METHODS
_MODULES = (
    "aux_ce",
    "balanced",
    "dropout",
    "finetune",
    "gblending",
    "mla",
    "modality_dropout",
    "naive",
    "ogm_ge",
    "qmf",
    "rubi",
    "self_distill",
    "umt",
)


class MethodRegistry(LazyRegistry[type]):
    """The method registry: loads the method modules on first lookup, and registers a class only if it
    follows the protocol -- a direct subclass of :class:`Method` whose ``Params``, ``summary`` and
    ``reference`` are the ones :mod:`mmtool.methods.params` lists for its name."""

    def __init__(self) -> None:
        super().__init__("method")

    def register(self, name: str) -> Callable[[type], type]:
        add = super().register(name)

        def checked(cls: type) -> type:
            _check_method_class(name, cls)
            return add(cls)

        return checked

    def load_all(self) -> None:
        for module in _MODULES:
            importlib.import_module(f"mmtool.methods.{module}")


def _check_method_class(name: str, cls: type) -> None:
    if cls.__bases__ != (Method,):
        bases = ", ".join(b.__name__ for b in cls.__bases__)
        raise TypeError(f"method {name!r}: {cls.__name__} must subclass Method directly, not {bases}")
    if name not in METHOD_PARAMS:
        raise TypeError(f"method {name!r}: no Params in mmtool.methods.params.METHOD_PARAMS")
    if cls.__dict__.get("Params") is not METHOD_PARAMS[name]:
        raise TypeError(f"method {name!r}: {cls.__name__}.Params must be METHOD_PARAMS[{name!r}]")
    if (cls.summary, cls.reference) != (METHOD_SUMMARIES.get(name), METHOD_REFERENCES.get(name)):
        raise TypeError(f"method {name!r}: summary and reference must be those of mmtool.methods.params")


METHODS: MethodRegistry = MethodRegistry()


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
    batches_per_epoch: int = 0  # training batches per epoch on each rank (0: unknown)
    lr: float | None = None  # the recipe's optim.lr, for methods whose param_groups scale it for a part
    seed: int = 0  # the recipe's train.seed, for methods that draw random numbers of their own
    # where the numbers are computed; methods sum their batch statistics across ranks with
    # runtime.all_reduce (None: one process, nothing to reduce)
    runtime: Runtime | None = None


def build_method(name: str, params: dict[str, Any], context: MethodContext) -> Method:
    cls = METHODS.get(name)
    return cls(cls.Params(**params), context)


def describe() -> list[tuple[str, str, str]]:
    """(name, one-line description, paper reference) for every method, without importing torch."""
    return [(name, METHOD_SUMMARIES[name], METHOD_REFERENCES[name]) for name in sorted(METHOD_PARAMS)]
