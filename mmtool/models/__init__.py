"""Models: multi-modal networks assembled from registered encoders and heads.

A model is described by a *spec*, a plain dict saved in every checkpoint, so any later stage can rebuild
it from a run directory without the recipe that trained it::

    {"modalities": {"m1": 200, "m2": 100}, "num_classes": 3,
     "encoder": "mlp", "encoder_args": {"hidden": [100]}, "head": "linear", "head_args": {},
     "fusion": "late"}

``fusion`` picks how the encoders are connected: ``late`` (:class:`MultiModalNet`, they meet in the
head) or ``mmtm`` (:class:`~mmtool.models.mmtm.MMTMNet`, MMTM modules between encoder blocks).
"""

from __future__ import annotations

import inspect
from typing import Any

from mmtool.config import ModelConfig
from mmtool.errors import UserError
from mmtool.models import cnn  # noqa: F401  (registers the CNN encoders)
from mmtool.models.base import MultiModalNet
from mmtool.models.encoders import ENCODERS
from mmtool.models.heads import HEADS
from mmtool.models.mmtm import MMTMNet

FUSIONS = {"late": MultiModalNet, "mmtm": MMTMNet}  # how the encoders are connected


def _accepted(cls: type, candidates: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in candidates.items() if k in params}


def model_spec(
    cfg: ModelConfig,
    input_dims: dict[str, int | list[int]],
    num_classes: int,
    modalities: list[str] | tuple[str, ...],
) -> dict:
    """Turn the recipe's model section into a spec for the given modalities (flat numbers and names).
    An input is an int (a vector's size) or a list (a shape such as [C, H, W])."""
    encoder_cls, head_cls = ENCODERS.get(cfg.encoder), HEADS.get(cfg.head)
    return {
        "modalities": {m: _shape(input_dims[m]) for m in modalities},
        "num_classes": int(num_classes),
        "encoder": cfg.encoder,
        "encoder_args": _accepted(encoder_cls, {"hidden": list(cfg.hidden)}),
        "head": cfg.head,
        "head_args": _accepted(head_cls, {"hidden": cfg.head_hidden}),
        "fusion": cfg.fusion,
    }


def _shape(d: int | list[int] | tuple[int, ...]) -> int | list[int]:
    return [int(x) for x in d] if isinstance(d, (list, tuple)) else int(d)


def build_model(spec: dict) -> MultiModalNet:
    """Build a :class:`MultiModalNet` from a spec (see module docstring)."""
    encoder_cls = ENCODERS.get(spec["encoder"])
    encoders = {m: encoder_cls(d, **spec["encoder_args"]) for m, d in spec["modalities"].items()}
    dims = {m: e.out_dim for m, e in encoders.items()}
    head = HEADS.get(spec["head"])(dims, spec["num_classes"], **spec["head_args"])
    fusion = spec.get("fusion", "late")
    if fusion not in FUSIONS:
        raise UserError(f"model.fusion: unknown fusion {fusion!r} (known: {', '.join(FUSIONS)})")
    return FUSIONS[fusion](encoders, head)
