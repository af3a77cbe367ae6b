"""Models: multi-modal networks assembled from registered encoders and heads.

A model is described by a *spec*, a plain dict saved in every checkpoint, so any later stage can rebuild
it from a run directory without the recipe that trained it::

    {"modalities": {"video": [3, 32, 224, 224], "audio": [160000]}, "num_classes": 309,
     "encoders": {"video": {"name": "r3d18", "args": {}},
                  "audio": {"name": "resnet18", "args": {}, "transform": "stft", "transform_args": {}}},
     "head": "linear", "head_args": {}, "fusion": "late"}

``modalities`` holds each modality's per-sample input shape as the data delivers it; an input
``transform`` (:mod:`mmtool.models.transforms`, e.g. the STFT of a waveform) runs on the training device
before the encoder, and the encoder is built for the transform's output shape. Specs of older runs, with
one ``encoder``/``encoder_args`` for every modality, still build.

``fusion`` picks how the encoders are connected: ``late`` (:class:`MultiModalNet`, they meet in the
head) or ``mmtm`` (:class:`~mmtool.models.mmtm.MMTMNet`, MMTM modules between encoder blocks); an
optional ``fusion_args`` dict holds the fusion's settings (MMTM's ``excite_scale`` and ``bottleneck``,
which a method may set through ``adapt_spec``).
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from mmtool.config import EncoderConfig, ModelConfig
from mmtool.errors import UserError
from mmtool.models import cav_mae, clip, cnn, convnet, fbank, fusion_heads, i3d, m3ae, slowfast, text  # noqa: F401
from mmtool.models.base import MultiModalNet
from mmtool.models.encoders import ENCODERS
from mmtool.models.heads import HEADS
from mmtool.models.mmtm import MMTMNet

FUSIONS = {"late": MultiModalNet, "mmtm": MMTMNet}  # how the encoders are connected


def _accepted(cls: type, candidates: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in candidates.items() if k in params}


def encoder_config(cfg: ModelConfig, modality: str) -> EncoderConfig:
    """The encoder of ``modality``: its own entry in ``model.encoders``, else ``model.encoder``."""
    own = cfg.encoders.get(modality)
    if own is None:
        return EncoderConfig(name=cfg.encoder, hidden=tuple(cfg.hidden))
    return own if own.hidden else EncoderConfig(**{**own.__dict__, "hidden": tuple(cfg.hidden)})


def _encoder_entry(ec: EncoderConfig, modality: str) -> dict:
    cls = ENCODERS.get(ec.name)
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(ec.args) - set(params))
    if unknown:
        raise UserError(f"model.encoders.{modality}.args: encoder {ec.name!r} takes no {unknown}")
    entry: dict[str, Any] = {"name": ec.name, "args": {**_accepted(cls, {"hidden": list(ec.hidden)}), **ec.args}}
    if ec.transform is not None:
        from mmtool.models.transforms import INPUT_TRANSFORMS

        accepted = inspect.signature(INPUT_TRANSFORMS.get(ec.transform).__init__).parameters
        unknown = sorted(set(ec.transform_args) - set(accepted) - {"in_shape"})
        if unknown:
            raise UserError(f"model.encoders.{modality}.transform_args: transform {ec.transform!r} takes no {unknown}")
        entry["transform"], entry["transform_args"] = ec.transform, dict(ec.transform_args)
    return entry


def model_spec(
    cfg: ModelConfig,
    input_dims: dict[str, int | list[int]],
    num_classes: int,
    modalities: list[str] | tuple[str, ...],
) -> dict:
    """Turn the recipe's model section into a spec for the given modalities (flat numbers and names).
    An input is an int (a vector's size) or a list (a shape such as [C, H, W])."""
    unknown = sorted(set(cfg.encoders) - set(input_dims))
    if unknown:
        raise UserError(f"model.encoders: {unknown} are not modalities of this dataset ({list(input_dims)})")
    head_cls = HEADS.get(cfg.head)
    return {
        "modalities": {m: _shape(input_dims[m]) for m in modalities},
        "num_classes": int(num_classes),
        "encoders": {m: _encoder_entry(encoder_config(cfg, m), m) for m in modalities},
        "head": cfg.head,
        "head_args": _accepted(head_cls, {"hidden": cfg.head_hidden}),
        "fusion": cfg.fusion,
        **({"head_dropout": cfg.head_dropout} if cfg.head_dropout > 0 else {}),
    }


def _shape(d: int | list[int] | tuple[int, ...]) -> int | list[int]:
    return [int(x) for x in d] if isinstance(d, (list, tuple)) else int(d)


def encoder_entries(spec: dict) -> dict[str, dict]:
    """Per-modality encoder entries of a spec, old (one encoder for all) or new."""
    if "encoders" in spec:
        return spec["encoders"]
    return {m: {"name": spec["encoder"], "args": spec["encoder_args"]} for m in spec["modalities"]}


def build_model(spec: dict) -> MultiModalNet:
    """Build a :class:`MultiModalNet` from a spec (see module docstring)."""
    encoders, transforms = {}, {}
    for m, entry in encoder_entries(spec).items():
        in_dim = spec["modalities"][m]
        if entry.get("transform"):
            from mmtool.models.transforms import INPUT_TRANSFORMS

            transforms[m] = INPUT_TRANSFORMS.get(entry["transform"])(in_dim, **entry.get("transform_args", {}))
            in_dim = transforms[m].out_shape
        encoders[m] = ENCODERS.get(entry["name"])(in_dim, **entry["args"])
    dims = {m: e.out_dim for m, e in encoders.items()}
    head = HEADS.get(spec["head"])(dims, spec["num_classes"], **spec["head_args"])
    fusion = spec.get("fusion", "late")
    if fusion not in FUSIONS:
        raise UserError(f"model.fusion: unknown fusion {fusion!r} (known: {', '.join(FUSIONS)})")
    model = FUSIONS[fusion](encoders, head, transforms, **spec.get("fusion_args", {}))
    if spec.get("head_dropout", 0) > 0:
        model.head_dropout = nn.Dropout(spec["head_dropout"])
    model.spec = spec  # what rebuilds it: later stages combine models by their specs
    return model
