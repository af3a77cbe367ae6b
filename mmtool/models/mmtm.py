"""Intermediate fusion with multi-modal transfer modules (MMTM; Joze et al. 2020), as paper 002 uses it.

Two uni-modal branches run block by block; after every block but the last, an MMTM squeezes each
branch's activations to a vector (``h_m``: the activations themselves for vectors, their spatial mean
for feature maps), computes ``w0, w1 = g([h0, h1])`` with ``g`` = FC + ReLU, then one FC per branch
(paper 002, Eq. 1), and rescales each branch channel-wise, ``A_m <- 2 sigmoid(w_m) * A_m`` (Eq. 2).
Each branch ends in its own classifier; the prediction averages the two (``head: ensemble``), and the
training loss is the sum of the branch losses (Eq. 4; method ``ume``).

``encode(inputs, squeeze_override)`` can replace a modality's squeezed vectors by fixed ones (its
training-set means): that is how paper 002 derives the single-modality variants for conditional
utilization rates (Eq. 6-8). ``encode(inputs, excite_override)`` replaces a modality's excitation
``w_m`` by a fixed vector instead (its mean over earlier steps): the re-balancing steps of balanced
multi-modal learning (paper 002, Eq. 13-14; method ``balanced``). ``forward`` takes the same options
as keywords, which is how training methods use them (they reach the network through ``forward`` only).

``fusion_args.running_mean`` (``none`` by default) makes every MMTM keep what the authors' released code
keeps for its re-balancing steps: a running mean of the per-batch means of ``sigmoid(w_m)``, updated by every
forward (training and evaluation, re-balancing steps included), stored as buffers so a checkpoint carries
it. ``each``: one per modality; ``first``: all fed from the first modality, as the released code does (a
bug; equal widths needed). ``encode(inputs, excite_average=[m])`` then rescales branch ``m`` by that mean,
after the current batch was absorbed (the ``code`` variant of method ``balanced``).

More than two modalities (paper 002, Sec. 7; Joze et al. 2020, Sec. 3, define the MMTM for any number of
inputs): M branches run side by side and every MMTM takes all M squeezed vectors, ``Z = ReLU(W[h_1, ..., h_M]
+ b)`` with ``C_Z = (C_1 + ... + C_M) / bottleneck``, then ``w_m = W_m Z`` per branch, so each excitation depends
on every modality. ``squeeze_override``, ``excite_override``, ``excite_average`` and the running means work per
modality as for two. With two modalities the model, its parameter names and its numbers are the two-modality
ones, so earlier checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mmtool.errors import UserError
from mmtool.models.base import FeaturesHook, MultiModalNet

MMTM_DEFAULTS = {"excite_scale": 2.0, "bottleneck": 4, "running_mean": "none"}  # Eq. 2's factor; our divisor
RUNNING_MEANS = ("none", "each", "first")


def squeeze(a: torch.Tensor) -> torch.Tensor:
    """(B, C, ...) -> (B, C): global average over every spatial dimension."""
    return a.flatten(2).mean(-1) if a.dim() > 2 else a


def excite(a: torch.Tensor, w: torch.Tensor, factor: float = 2.0) -> torch.Tensor:
    """``factor * sigmoid(w) * a`` channel-wise; ``w`` is (B, C)."""
    scale = factor * torch.sigmoid(w)
    return a * scale.view(*scale.shape, *([1] * (a.dim() - 2)))


class MMTM(nn.Module):
    """``w_1, ..., w_M = g([h_1, ..., h_M])``: a shared FC + ReLU, then one FC per branch (paper 002, Eq. 1;
    Joze et al. 2020 define it for any number of inputs: ``Z = W[S_1, ..., S_M] + b``, ``E_m = W_m Z``).

    ``shared`` lies on the path to every branch's prediction, ``to_w[m]`` only on branch m's (the green,
    green/blue and green/red blocks of paper 002, Fig. 1). With two inputs the parameter and buffer names
    are the ones two-modality checkpoints hold (``shared.0``, ``to_w.0``, ``to_w.1``, ``mean0``, ``mean1``).
    """

    def __init__(self, *dims: int, bottleneck: int = 4, running_mean: str = "none") -> None:
        super().__init__()
        hidden = max(1, sum(dims) // bottleneck)  # (C_1 + ... + C_M) / 4: mmtool's choice, see the module docstring
        self.shared = nn.Sequential(nn.Linear(sum(dims), hidden), nn.ReLU())
        self.to_w = nn.ModuleList([nn.Linear(hidden, c) for c in dims])
        self.running_mean = running_mean
        if running_mean != "none":  # buffers only where asked: other models' checkpoints keep their keys
            for m, c in enumerate(dims):  # "first": every mean is fed from the first modality (equal widths)
                self.register_buffer(f"mean{m}", torch.zeros(c if running_mean == "each" else dims[0]))
            self.register_buffer("forwards", torch.zeros((), dtype=torch.float64))

    def means(self) -> list[torch.Tensor]:
        """The running means of ``sigmoid(w_m)``, one per branch (``running_mean`` other than none)."""
        return [getattr(self, f"mean{m}") for m in range(len(self.to_w))]

    @torch.no_grad()
    def absorb(self, *ws: torch.Tensor) -> None:
        """Fold this batch's mean of ``sigmoid(w)`` into the running means (in place: under
        ``inference_mode`` too, and the buffers stay usable by a later training step)."""
        n = float(self.forwards)
        for m, mean in enumerate(self.means()):
            w = ws[0] if self.running_mean == "first" else ws[m]
            mean.copy_((torch.sigmoid(w.float()).mean(0) + mean * n) / (n + 1))
        self.forwards += 1

    def forward(self, *hs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = self.shared(torch.cat(hs, dim=1))
        return tuple(to_w(z) for to_w in self.to_w)


class MMTMNet(MultiModalNet):
    """Two or more branches linked by MMTMs, then a fusion head.

    Encoders expose ``blocks`` (their stages in order), ``block_dims`` (channels out of each) and
    ``mmtm_after`` (the block indices an MMTM follows; all encoders must agree), and optionally ``pool``
    (last block's output -> (B, D) features; CNN encoders pool globally). MLP encoders put an MMTM after
    every block but the last; ResNet-18 / R3D-18 after layer2, layer3 and layer4, as paper 002 does; I3D after
    its six last inception modules (:mod:`mmtool.models.i3d`).
    """

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        head: nn.Module,
        transforms: dict[str, nn.Module] | None = None,
        excite_scale: float = 2.0,
        bottleneck: int = 4,
        running_mean: str = "none",
    ) -> None:
        super().__init__(encoders, head, transforms)
        if excite_scale <= 0 or bottleneck < 1 or running_mean not in RUNNING_MEANS:
            raise UserError("model fusion_args: excite_scale must be > 0, bottleneck >= 1 and running_mean one of "
                            f"{', '.join(RUNNING_MEANS)}")  # fmt: skip
        self.excite_scale = excite_scale
        self.fusion_args = {"excite_scale": float(excite_scale), "bottleneck": int(bottleneck),
                            "running_mean": running_mean}  # what built it  # fmt: skip
        if len(encoders) < 2:
            raise UserError(f"model.fusion: mmtm links two modalities or more, got {list(encoders)}")
        encs = list(encoders.values())
        if not all(hasattr(e, "blocks") and hasattr(e, "mmtm_after") for e in encs):
            raise UserError("model.fusion: mmtm needs encoders made of blocks (mlp, cnn, resnet18, r3d18, i3d)")
        points = [tuple(e.mmtm_after) for e in encs]
        if any(p != points[0] for p in points) or not points[0]:
            raise UserError(
                "model.fusion: mmtm needs the same fusion points in every encoder and at least one "
                f"(got {' and '.join(map(str, points))}; for mlp encoders give >= 2 widths, e.g. model.hidden=[64,32])"
            )
        self.points = points[0]
        dims = [tuple(e.block_dims[k] for e in encs) for k in self.points]
        if running_mean == "first" and any(len(set(cs)) > 1 for cs in dims):
            raise UserError(f"model fusion_args.running_mean: first needs equal widths at every MMTM, got {dims}")
        self.mmtm = nn.ModuleList([MMTM(*cs, bottleneck=bottleneck, running_mean=running_mean) for cs in dims])

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        *,
        modalities: Sequence[str] | None = None,
        features_hook: FeaturesHook | None = None,
        squeeze_override: dict[str, list[torch.Tensor]] | None = None,
        record: dict[str, list[torch.Tensor]] | None = None,
        excite_override: dict[str, list[torch.Tensor]] | None = None,
        excite_record: dict[str, list[torch.Tensor]] | None = None,
        excite_average: Sequence[str] = (),
    ) -> dict[str, Any]:
        """:meth:`MultiModalNet.forward` with :meth:`encode`'s options. ``modalities`` may only name all the
        modalities: each branch reads every other one at every MMTM."""
        if modalities is not None and sorted(modalities) != sorted(self.modalities):
            raise ValueError(f"MMTMNet encodes all of its modalities {self.modalities}, not only {list(modalities)}")
        features = self.encode(
            inputs,
            squeeze_override=squeeze_override,
            record=record,
            excite_override=excite_override,
            excite_record=excite_record,
            excite_average=excite_average,
        )
        return self._predict(features, features_hook)

    def encode(
        self,
        inputs: dict[str, torch.Tensor],
        squeeze_override: dict[str, list[torch.Tensor]] | None = None,
        record: dict[str, list[torch.Tensor]] | None = None,
        excite_override: dict[str, list[torch.Tensor]] | None = None,
        excite_record: dict[str, list[torch.Tensor]] | None = None,
        excite_average: Sequence[str] = (),
    ) -> dict[str, torch.Tensor]:
        """Branch features after every MMTM. ``squeeze_override`` replaces a modality's squeezed vectors
        (one per MMTM) before ``g``; ``record`` collects the squeezed vectors ``{m: [(B, C_k)]}``.
        ``excite_override`` replaces a modality's excitation ``w_m`` (before the sigmoid; one (C_k,)
        vector per MMTM) for every sample, which cuts the path from the other modality to this branch;
        ``excite_record`` collects the excitations ``{m: [(B, C_k)]}``, detached. ``excite_average`` names the
        modalities rescaled by the running mean of ``sigmoid(w_m)`` instead (``running_mean``; module docstring)."""
        mods = self.modalities
        blocks = {m: enc.blocks for m, enc in self.encoders.items()}
        a = self.transform_inputs({m: inputs[m] for m in mods})
        for b in range(len(blocks[mods[0]])):
            a = {m: blocks[m][b](a[m]) for m in mods}
            if b not in self.points:
                continue
            k = self.points.index(b)  # which MMTM
            h = {m: squeeze(a[m]) for m in mods}
            if record is not None:
                for m in mods:
                    record.setdefault(m, []).append(h[m].detach().float())
            for m, means in (squeeze_override or {}).items():
                h[m] = means[k].to(h[m].dtype).expand_as(h[m])
            w = dict(zip(mods, self.mmtm[k](*(h[m] for m in mods)), strict=True))
            if excite_record is not None:
                for m in mods:
                    excite_record.setdefault(m, []).append(w[m].detach().float())
            for m, fixed in (excite_override or {}).items():
                w[m] = fixed[k].to(w[m].dtype).expand_as(w[m])
            a = self._excite(k, a, w, excite_average)
        return {m: self.encoders[m].pool(a[m]) if hasattr(self.encoders[m], "pool") else a[m] for m in mods}

    def _excite(self, k: int, a: dict, w: dict, averaged: Sequence[str]) -> dict[str, torch.Tensor]:
        """Rescale every branch at MMTM ``k``: by ``excite_scale * sigmoid(w_m)``, or by the running mean for
        the modalities in ``averaged`` (after this batch's excitations were absorbed)."""
        mmtm, mods = self.mmtm[k], self.modalities
        if mmtm.running_mean == "none":
            if averaged:
                raise ValueError("excite_average needs an MMTM model built with fusion_args.running_mean")
            return {m: excite(a[m], w[m], self.excite_scale) for m in mods}
        mmtm.absorb(*(w[m] for m in mods))
        means = dict(zip(mods, mmtm.means(), strict=True))
        out = {}
        for m in mods:
            if m not in averaged:
                out[m] = excite(a[m], w[m], self.excite_scale)
                continue
            scale = (self.excite_scale * means[m]).to(a[m].dtype)
            out[m] = a[m] * scale.view(1, -1, *([1] * (a[m].dim() - 2)))
        return out

    def squeezed(self, inputs: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        """A forward for statistics: every MMTM's squeezed input, ``{"squeezed": {"m/k": (B, C_k)}}`` (the
        evaluation pass that runs it over a split lives above the models, in the engine)."""
        record: dict[str, list[torch.Tensor]] = {}
        self.encode(inputs, record=record)
        return {"squeezed": {f"{m}/{k}": h for m, hs in record.items() for k, h in enumerate(hs)}}
