"""The late-fusion network every architecture builds on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

FeaturesHook = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
EXTRAS = "extras"  # state_dict prefix of the trainable extras methods attach


class MultiModalNet(nn.Module):
    """Late fusion: one encoder per modality, then a fusion head.

    ``forward`` returns ``{"logits": (B, C), "features": {m: (B, D_m)}}`` plus ``"unimodal_logits"``
    when the head is a sum of per-modality parts, and ``"<name>_logits"`` for every module in
    :attr:`extras`. Training methods reach the network only through ``forward`` and its options (so
    that a DistributedDataParallel wrapper sees every parameter they train). ``encode`` and ``fuse`` are
    exposed separately for analyses, which replace a modality's features (utilization) or reuse cached
    features (probes).

    ``extras`` holds trainable modules a training method attaches in its ``setup`` (Aux-CE's
    per-modality heads): each is called on the features the head reads, inside ``forward``. They are
    training machinery, not part of the model a spec describes: :meth:`weights` leaves them out, and
    that is what best.pt and snapshots hold. Empty by default, so state_dict keys are those of a plain model.
    """

    def __init__(
        self, encoders: dict[str, nn.Module], head: nn.Module, transforms: dict[str, nn.Module] | None = None
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.head = head
        # input transforms run on the training device before a modality's encoder (e.g. waveform ->
        # spectrogram); they hold no state_dict entries, so checkpoints keep torchvision's encoder keys
        self.transforms = nn.ModuleDict(transforms or {})
        self.extras = nn.ModuleDict()
        self.head_dropout: nn.Module | None = None  # model.head_dropout > 0: dropout on what the head reads

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def transform_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw batch -> what the encoders read (each modality's input transform, where it has one)."""
        return {m: self.transforms[m](x) if m in self.transforms else x for m, x in inputs.items()}

    def encode(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Features of the modalities present in ``inputs`` (a subset encodes only those)."""
        x = self.transform_inputs(inputs)
        return {m: enc(x[m]) for m, enc in self.encoders.items() if m in x}

    def fuse(self, features: dict[str, torch.Tensor]) -> dict[str, Any]:
        head_in = features if self.head_dropout is None else {m: self.head_dropout(f) for m, f in features.items()}
        out = dict(self.head(head_in))
        out["features"] = features
        return out

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        *,
        modalities: Sequence[str] | None = None,
        features_hook: FeaturesHook | None = None,
    ) -> dict[str, Any]:
        """The prediction, with the options training methods use.

        Args:
            inputs: ``{modality: (B, ...)}``.
            modalities: encode and fuse only these (MLA's one-modality steps); None: every input.
            features_hook: replaces the features before the head and the extras read them (feature
                dropout, modality dropout); ``out["features"]`` holds what it returned.
        """
        if modalities is not None:
            inputs = {m: inputs[m] for m in modalities}
        return self._predict(self.encode(inputs), features_hook)

    def _predict(self, features: dict[str, torch.Tensor], features_hook: FeaturesHook | None) -> dict[str, Any]:
        """Features -> the output dict: the hook, the fusion head, then every extra."""
        if features_hook is not None:
            features = features_hook(features)
        out = self.fuse(features)
        for name, extra in self.extras.items():
            out[f"{name}_logits"] = extra(features)
        return out

    def weights(self) -> dict[str, torch.Tensor]:
        """``state_dict()`` without :attr:`extras`: what ``build_model(spec)`` loads strictly (best.pt,
        snapshots). Keys, order and metadata are those of the same model without extras."""
        state = self.state_dict()
        for key in [k for k in state if k.startswith(f"{EXTRAS}.")]:
            del state[key]
        metadata = getattr(state, "_metadata", None)
        if metadata is not None:
            for key in [k for k in metadata if k == EXTRAS or k.startswith(f"{EXTRAS}.")]:
                del metadata[key]
        return state
