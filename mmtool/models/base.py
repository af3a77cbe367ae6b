"""The late-fusion network every architecture builds on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from mmtool.data.missing import any_present

Present = dict[str, torch.Tensor]  # {modality: (B,) bool}, True where the modality is there
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

    def encode(self, inputs: dict[str, torch.Tensor], present: Present | None = None) -> dict[str, torch.Tensor]:
        """Features of the modalities in ``inputs`` (a subset encodes only those). With ``present`` (missing
        modalities, :mod:`mmtool.data.missing`) each encoder reads only the rows where its modality is there;
        the other rows' features are zeros that nothing downstream reads as data."""
        x = self.transform_inputs(inputs)
        if present is None:
            return {m: enc(x[m]) for m, enc in self.encoders.items() if m in x}
        return {m: _encode_rows(enc, x[m], present[m]) for m, enc in self.encoders.items() if m in x}

    def fuse(self, features: dict[str, torch.Tensor], present: Present | None = None) -> dict[str, Any]:
        head_in = features if self.head_dropout is None else {m: self.head_dropout(f) for m, f in features.items()}
        if present is None:
            out = dict(self.head(head_in))
        else:  # only heads that sum or average per-modality parts take masks (refuse_missing)
            present = {m: present[m] for m in features}
            out = dict(self.head(head_in, present=present))
            none = ~any_present(present)  # (B,): a sample with none of this model's modalities: uniform logits
            out["logits"] = torch.where(none.unsqueeze(1), torch.zeros_like(out["logits"]), out["logits"])
        out["features"] = features
        return out

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        *,
        modalities: Sequence[str] | None = None,
        features_hook: FeaturesHook | None = None,
        present: Present | None = None,
    ) -> dict[str, Any]:
        """The prediction, with the options training methods use.

        Args:
            inputs: ``{modality: (B, ...)}``.
            modalities: encode and fuse only these (MLA's one-modality steps); None: every input.
            features_hook: replaces the features before the head and the extras read them (feature
                dropout, modality dropout); ``out["features"]`` holds what it returned.
            present: ``{modality: (B,) bool}``, True where the modality is there (missing modalities,
                ``Batch.present``); None: all there. Heads sum or average only the parts that are there.
        """
        if modalities is not None:
            inputs = {m: inputs[m] for m in modalities}
        return self._predict(self.encode(inputs, present), features_hook, present)

    def _predict(self, features: dict[str, torch.Tensor], features_hook: FeaturesHook | None,
                 present: Present | None = None) -> dict[str, Any]:  # fmt: skip
        """Features -> the output dict: the hook, the fusion head, then every extra."""
        if features_hook is not None:
            features = features_hook(features)
        out = self.fuse(features, present)
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


def _encode_rows(encoder: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``encoder`` on the rows of ``x`` where ``mask`` is True, scattered into zeros: (B, ...) -> (B, D). Rows
    without the modality never reach the encoder (nor its batch statistics); none there: no encoder call."""
    rows = mask.nonzero().squeeze(1)  # (K,)
    if rows.numel() == mask.numel():
        return encoder(x)
    if rows.numel() == 0:
        return torch.zeros(mask.numel(), encoder.out_dim, device=x.device)
    f = encoder(x[rows])  # (K, D)
    return f.new_zeros((mask.numel(), *f.shape[1:])).index_copy(0, rows, f)


# heads whose fused prediction sums or averages per-modality parts: with missing modalities they combine the
# parts that are there (``forward(features, present=...)``); every other head mixes modalities and refuses
MISSING_HEADS = frozenset({"linear", "concat", "sum", "qmf", "ensemble", "members", "shared"})


def refuse_missing(model: nn.Module, head: bool = True) -> None:
    """One line when ``model`` cannot take data with missing modalities (data.missing_rate > 0); ``head``:
    its fused prediction is wanted (False: its encoders' features only)."""
    from mmtool.errors import UserError
    from mmtool.models.heads import head_name

    net = getattr(model, "module", model)  # a DDP wrapper's model
    if type(net).encode is not MultiModalNet.encode:  # MMTM: branches exchange information inside the encoders
        raise UserError("data.missing_rate > 0: model.fusion mmtm mixes the modalities inside the encoders; "
                        "it cannot leave a missing one out (use model.fusion: late)")  # fmt: skip
    name = head_name(net.head)
    if head and name not in MISSING_HEADS:
        raise UserError(f"data.missing_rate > 0: model.head {name} mixes the modalities; it cannot leave a missing "
                        f"one out (heads that can: {', '.join(sorted(MISSING_HEADS))})")  # fmt: skip
