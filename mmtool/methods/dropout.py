"""Feature dropout before the fusion head (paper 000, App. A.5 / Table 14 "Dropout"; paper 001, Table 2:
"naive fusion with 0.5 dropout ratio").

Reading: ordinary (inverted) dropout, Srivastava et al. 2014, applied element-wise to every modality's
feature vector -- equivalently to the concatenated features the head receives -- during training only:
each element is zeroed with probability ``p`` and the kept ones are scaled by 1 / (1 - p), so the head
sees features of the same expected size at training and test time. ``p`` defaults to paper 001's 0.5.

The method changes the training forward, not the model: ``training_step`` runs
``model(inputs, features_hook=drop)``, which drops the features between the encoders and the head.
Evaluation runs ``model(...)``, which has no dropout, and checkpoints hold a plain naive-fusion model.
Masks are drawn on the CPU from torch's global generator (the one the loop saves in ``last.pt``), so a
resumed run draws the same masks as an uninterrupted one on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmtool.data import Batch
from mmtool.errors import UserError
from mmtool.methods import METHODS, Method, MethodContext
from mmtool.methods.params import METHOD_REFERENCES, METHOD_SUMMARIES, FeatureDropoutParams
from mmtool.models import MultiModalNet


@METHODS.register("dropout")
class FeatureDropout(Method):
    """Naive fusion with dropout (rate p) on the encoder features before the head, at training time."""

    Params = FeatureDropoutParams
    summary, reference = METHOD_SUMMARIES["dropout"], METHOD_REFERENCES["dropout"]
    helpers = ("drop",)

    def __init__(self, params: FeatureDropoutParams, context: MethodContext) -> None:
        if not 0.0 <= params.p < 1.0:
            raise UserError(f"method.p: dropout rate must be in [0, 1), got {params.p}")
        self.params = params

    def drop(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Zero each element with probability p and scale the kept ones by 1 / (1 - p)."""
        p = self.params.p
        out = {}
        for m, f in features.items():
            keep = torch.rand(f.shape) >= p  # CPU generator: resumable, device independent
            out[m] = f * keep.to(device=f.device, dtype=f.dtype) / (1.0 - p)
        return out

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        out = model(batch.inputs, features_hook=self.drop)
        return {"task_loss": F.cross_entropy(out["logits"], batch.target)}
