"""Modality dropout (paper 000, App. A.5 / Table 14 "Modal-Drop"; paper 001, Table 2): "randomly drops
(with probability 1/3) the feature from one modality in each iteration", akin to ModDrop (Neverova et
al., 2015).

Readings chosen:

* per sample, not per batch: each sample independently, with probability ``p`` (default 1/3), has the
  whole feature vector of one modality dropped, that modality picked uniformly at random; otherwise all
  modalities are kept. At most one modality is dropped, so the head always sees some input, and each
  modality is dropped with probability p / M. (The other reading of the sentence for two modalities --
  each modality dropped with probability 1/3, never both -- is ``p = 2/3``.)
* a dropped feature is replaced by zeros, the value of a missing modality;
* no rescaling of the kept features: they are the real features of that modality, which is what the
  head must learn to use on its own. (Element-wise dropout rescales because it thins every feature; here
  a sample either has a modality or does not.)

Training only: ``training_step`` runs ``model(inputs, features_hook=drop)``, which drops between the
encoders and the head; evaluation runs ``model(...)`` with every modality. Masks come from torch's CPU
generator (saved in ``last.pt``), so a resumed run draws the same masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmtool.data import Batch
from mmtool.errors import UserError
from mmtool.methods import METHODS, Method, MethodContext
from mmtool.methods.params import METHOD_REFERENCES, METHOD_SUMMARIES, ModalityDropoutParams
from mmtool.models import MultiModalNet


@METHODS.register("modality_dropout")
class ModalityDropout(Method):
    """Naive fusion where, per training sample, one modality's features are zeroed with probability p."""

    Params = ModalityDropoutParams
    summary, reference = METHOD_SUMMARIES["modality_dropout"], METHOD_REFERENCES["modality_dropout"]
    helpers = ("drop", "keep_masks")

    def __init__(self, params: ModalityDropoutParams, context: MethodContext) -> None:
        if not 0.0 <= params.p <= 1.0:
            raise UserError(f"method.p: modality dropout probability must be in [0, 1], got {params.p}")
        self.params = params

    def setup(self, model: MultiModalNet) -> None:
        if len(model.modalities) < 2:
            raise UserError(f"method 'modality_dropout' needs two or more modalities, the model has {model.modalities}")

    def keep_masks(self, batch_size: int, modalities: list[str]) -> dict[str, torch.Tensor]:
        """``{m: (B,) bool}``, False where sample b drops modality m (at most one False per sample)."""
        dropped = torch.rand(batch_size) < self.params.p  # (B,) CPU generator: resumable
        which = torch.randint(len(modalities), (batch_size,))  # (B,) the modality a drop hits
        return {m: ~(dropped & (which == i)) for i, m in enumerate(modalities)}

    def drop(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Replace the dropped modalities' feature vectors by zeros; kept ones pass unchanged."""
        batch_size = len(next(iter(features.values())))
        keep = self.keep_masks(batch_size, list(features))
        out = {}
        for m, f in features.items():
            mask = keep[m].to(device=f.device, dtype=f.dtype).view(-1, *([1] * (f.dim() - 1)))  # (B, 1, ...)
            out[m] = f * mask
        return out

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        out = model(batch.inputs, features_hook=self.drop)
        return {"task_loss": F.cross_entropy(out["logits"], batch.target)}
