"""Initialising an encoder from a local weights file (``pretrained:`` in a recipe).

``resnet18`` and ``r3d18`` keep torchvision's ``state_dict`` keys, so a published checkpoint
(``resnet18-f37072fd.pth``, ``r3d_18-b3b3357e.pth``) loads by name once its ``fc`` is dropped;
``slowfast50``/``slowfast101`` keep PySlowFast's keys (:mod:`mmtool.models.slowfast`), so a PySlowFast
checkpoint loads once its ``head.*`` (``head.projection``) is dropped. The classifier keys of either are
reported as ignored. The file may hold the bare state dict or wrap it under ``state_dict``/``model``/
``model_state`` (PySlowFast's), with or without the ``module.`` prefix of DataParallel; it is read with
``weights_only=True``, so no pickled code runs. (PySlowFast's model-zoo ``.pkl`` files are Caffe2 blobs
with other names, not PyTorch checkpoints; they do not load here.)

Cross-modality initialisation (Wang et al., Temporal Segment Networks, as the two-stream work uses it for
optical flow): when the encoder's first convolution takes another number of channels than the weights
were trained on (RGB: 3), the first-layer weights are averaged over their input channels and the average
is replicated over the encoder's channels — 20 for a stack of 10 x and 10 y flow frames, 1 for a
spectrogram. Everything else must match by name and shape; a mismatch is a one-line error naming the key.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mmtool.errors import UserError

FIRST_CONVS = ("conv1.weight", "stem.0.weight", "s1.pathway0_stem.conv.weight", "s1.pathway1_stem.conv.weight")
CLASSIFIERS = ("fc.", "head.")  # torchvision's and PySlowFast's classifier keys: not part of an encoder
WRAPPERS = ("state_dict", "model", "model_state")  # keys training scripts keep the weights under


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped and without DataParallel's ``module.`` prefix."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pretrained: no weights file {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (torch raises several types for a bad file)
        raise UserError(f"pretrained: {path} is not a readable weights file ({type(err).__name__})") from None
    for key in WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"pretrained: {path} holds no state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def adapt_first_conv(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """(O, C, k...) -> (O, channels, k...): the mean over C replicated ``channels`` times."""
    mean = weight.mean(dim=1, keepdim=True)
    return mean.expand(-1, channels, *weight.shape[2:]).clone()


def load_pretrained(encoder: nn.Module, path: Path, where: str) -> dict[str, list[str]]:
    """Load ``path`` into ``encoder`` (see module docstring); ``where`` names the recipe key in errors.
    Returns the keys left out of the file (the classifier's) and those adapted across modalities.
    An encoder of a published checkpoint in its own layout (CLIP, CAV-MAE, M3AE: :mod:`mmtool.models.clip`,
    :mod:`mmtool.models.cav_mae`, :mod:`mmtool.models.m3ae`) loads through its own ``load_pretrained``."""
    own_loader = getattr(encoder, "load_pretrained", None)
    if callable(own_loader):
        return own_loader(Path(path), where)
    if Path(path).is_dir():  # a transformers model folder: the text encoders' weights (mmtool.models.text)
        from mmtool.models.text import load_folder

        return load_folder(encoder, Path(path), where)
    state = read_state_dict(path)
    own = encoder.state_dict()
    adapted = []
    for key in FIRST_CONVS:
        if key in state and key in own and state[key].shape[1] != own[key].shape[1]:
            state[key] = adapt_first_conv(state[key], own[key].shape[1])
            adapted.append(key)
    ignored = sorted(k for k in state if k not in own)
    extra = [k for k in ignored if not k.startswith(CLASSIFIERS)]
    if extra:
        raise UserError(f"{where}: {path} has weights this encoder lacks, e.g. {extra[0]!r}")
    missing = sorted(k for k in own if k not in state)
    if missing:
        raise UserError(f"{where}: {path} lacks {len(missing)} of the encoder's weights, e.g. {missing[0]!r}")
    for key, value in own.items():
        if state[key].shape != value.shape:
            raise UserError(
                f"{where}: {key} is {list(state[key].shape)} in {path}, the encoder needs {list(value.shape)}"
            )
    encoder.load_state_dict({k: state[k] for k in own})
    return {"ignored": ignored, "adapted": adapted}
