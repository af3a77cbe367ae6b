"""The method protocol: one class with a no-op default for every hook the training loop calls.

The loop calls every hook of every method, in this order (it never asks whether a hook exists, so a
misspelt hook cannot silently stay uncalled)::

    adapt_spec(spec) -> spec          once, before the model is built (what the method needs of the model)
    setup(model)                      once, before the optimizer is built and before any wrapping (DDP)
    param_groups(model)               the optimizer's parameter groups
    for each epoch (from 1):
        on_epoch_start(model, epoch)
        for each step (a batch), updates_per_batch times (1 unless the method says otherwise):
            training_step(model, batch) -> {"<name>_loss": Tensor}   the loop back-propagates their sum
            after_backward(model, step)   gradients computed (and, under DDP, already averaged)
            after_step(model, step)       after the optimizer step, gradients still in place
        epoch_metrics() -> dict           logged in metrics.jsonl
    state_dict() / load_state_dict(state) resumable method state, in last.pt

Rules that keep a method correct under DistributedDataParallel:

* ``training_step`` reaches the network only through ``model(inputs, **options)`` (the options of
  :meth:`mmtool.models.base.MultiModalNet.forward`), never through ``encode``/``fuse``/``head``: DDP only
  synchronises gradients of what ran inside the wrapped model's forward.
* A trainable module a method needs (Aux-CE's uni-modal heads) is attached to the model in ``setup``, as
  ``model.extras[name]``; the method itself holds no trainable parameter.
* Statistics a method accumulates from its batches (OGM-GE's scores, MLA's mean feature, balanced's mean
  excitations) are summed across ranks with ``context.runtime.all_reduce`` before use.

Every registered method subclasses :class:`Method` directly; methods never inherit from each other
(what two methods share is a plain function in :mod:`mmtool.methods.common`). A subclass may define
public callables only for the protocol's hooks and for the names it lists in ``helpers``: anything
else (``after_backwards``, ``check_model``) is refused when the class is defined.

This module imports nothing heavy, so a method's schema (:mod:`mmtool.methods.params`) and this protocol
load without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from torch import Tensor

    from mmtool.data import Batch
    from mmtool.models import MultiModalNet

HOOKS = frozenset(
    {
        "adapt_spec",
        "setup",
        "param_groups",
        "on_epoch_start",
        "training_step",
        "after_backward",
        "after_step",
        "epoch_metrics",
        "state_dict",
        "load_state_dict",
    }
)
CLASS_ATTRIBUTES = frozenset(
    {"Params", "summary", "reference", "helpers", "uses_every_parameter", "updates_per_batch", "handles_missing"}
)


class Method:
    """A training method: named losses per batch, plus optional hooks around the optimizer step.

    Subclasses set ``Params`` (a frozen dataclass from :mod:`mmtool.methods.params`), ``summary`` and
    ``reference``, implement :meth:`training_step`, and override the hooks they need.
    """

    Params: ClassVar[type]
    summary: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    helpers: ClassVar[tuple[str, ...]] = ()  # public callables that are not hooks (e.g. ``drop``)
    # False when a training step leaves part of the model out (MLA: one modality per step); DDP then
    # looks for the parameters a step did not use
    uses_every_parameter: ClassVar[bool] = True
    # optimizer updates the loop makes on each batch, each a full training_step ... after_step round (MLA's
    # released code updates once per modality on every batch); an instance may set its own
    updates_per_batch: int = 1
    # True when the method's losses count each modality only where it is there (data.missing_rate > 0,
    # mmtool.data.missing): ``model(inputs, present=batch.present)`` and masked per-modality terms. A method
    # that leaves it False is refused on data with missing modalities before training starts.
    handles_missing: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        allowed = HOOKS | CLASS_ATTRIBUTES | set(cls.helpers)
        for name, value in vars(cls).items():
            if name.startswith("_") or name in allowed:
                continue
            if callable(value) or isinstance(value, (staticmethod, classmethod, property)):
                raise TypeError(
                    f"{cls.__qualname__}.{name} is neither a hook of the method protocol "
                    f"({', '.join(sorted(HOOKS))}) nor a declared helper: a misspelt hook would never run. "
                    f"Rename it, make it private (_{name}), or list it in {cls.__qualname__}.helpers"
                )

    def __init__(self, params: Any, context: Any) -> None:
        self.params = params

    def adapt_spec(self, spec: dict) -> dict:
        """The model spec to build from the recipe's (default: unchanged). What a method sets here (MLA's
        released test-time fusion in the shared head) is saved with the model, so later stages rebuild it."""
        return spec

    def setup(self, model: MultiModalNet) -> None:
        """Check the model and attach the trainable modules the method needs to ``model.extras``."""

    def param_groups(self, model: MultiModalNet) -> list[dict]:
        """The optimizer's parameter groups (a group may set its own ``lr``)."""
        return [{"params": list(model.parameters())}]

    def on_epoch_start(self, model: MultiModalNet, epoch: int) -> None:
        """Before the first step of ``epoch`` (epochs count from 1)."""

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, Tensor]:
        """Named, already-weighted losses of one batch; the loop back-propagates their sum."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_step(model, batch)")

    def after_backward(self, model: MultiModalNet, step: int) -> None:
        """Between backward and the optimizer step: gradients may be rescaled or projected here."""

    def after_step(self, model: MultiModalNet, step: int) -> None:
        """After the optimizer step, gradients still in place: update statistics here."""

    def epoch_metrics(self) -> dict[str, float]:
        """Extra numbers for metrics.jsonl at the end of an epoch."""
        return {}

    def state_dict(self) -> dict:
        """Resumable method state (plain tensors and containers; saved in last.pt)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s result. A method without state refuses state it does not know."""
        if state:
            raise ValueError(f"method {type(self).__name__} keeps no state, the checkpoint has {sorted(state)}")
