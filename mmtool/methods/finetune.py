"""Fine-tuning from uni-modal pre-trained encoders (paper 000, App. A.6 / Table 15; paper 001, Table 2
"Pre-train + Fine-tune").

Every encoder of the fusion model starts from the weights of the matching uni-modal model of a
`mmtool pretrain-unimodal` run (``teachers=RUN_DIR``); the fusion head starts from its usual random
initialisation; the whole model is then trained with CE on the fused prediction. Encoders get their own
learning rate, ``optim.lr * method.encoder_lr_scale`` (A.6: "We set the classifier's learning rate as
1e-3 and try different learning rates on the encoders"; Table 15's rows are scales 1, 0.1, 0.01, 0.001
and 0 of that 1e-3). The default scale 1 is plain pre-train + fine-tune (paper 001, Table 2) and Table
15's best top-1 row; 0 keeps the pre-trained encoders fixed.

The encoders are initialised in ``setup``, which the loop calls once before it builds the
optimizer and, on ``--resume``, before it restores the checkpoint -- so a resumed run continues from its
checkpoint, not from the teachers. The teachers themselves are only read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmtool.data import Batch
from mmtool.errors import UserError
from mmtool.methods import METHODS, Method, MethodContext
from mmtool.methods.params import METHOD_REFERENCES, METHOD_SUMMARIES, FineTuneParams
from mmtool.models import MultiModalNet


@METHODS.register("finetune")
class FineTune(Method):
    """Initialise every encoder from a uni-modal pre-trained model, then train end to end with CE;
    encoders learn at ``encoder_lr_scale`` times the recipe's learning rate."""

    Params = FineTuneParams
    summary, reference = METHOD_SUMMARIES["finetune"], METHOD_REFERENCES["finetune"]

    def __init__(self, params: FineTuneParams, context: MethodContext) -> None:
        if params.encoder_lr_scale < 0:
            raise UserError(f"method.encoder_lr_scale: must be >= 0, got {params.encoder_lr_scale}")
        if not context.teachers:
            raise UserError("method 'finetune' needs --teachers RUN_DIR (a `mmtool pretrain-unimodal` run)")
        self.params = params
        self.teacher_names = sorted(context.teachers)
        # the pre-trained encoders' weights, detached: the method only reads them, and holds no trainable tensor
        self.sources = {m: t.encoders[m].state_dict() for m, t in context.teachers.items() if m in t.encoders}
        self.base_lr = context.lr

    def setup(self, model: MultiModalNet) -> None:
        """Copy each teacher's encoder weights into the model's encoder of the same modality."""
        for m, encoder in model.encoders.items():
            if m not in self.sources:
                raise UserError(
                    f"method 'finetune': no pre-trained model for modality {m!r} (teachers: {self.teacher_names})"
                )
            source = self.sources[m]
            target = encoder.state_dict()
            if {k: v.shape for k, v in source.items()} != {k: v.shape for k, v in target.items()}:
                raise UserError(f"model.encoder/model.hidden: the {m} encoder differs from the pre-trained one")
            encoder.load_state_dict(source)

    def param_groups(self, model: MultiModalNet) -> list[dict]:
        """The rest of the model at optim.lr (first group, the one the loop logs), encoders at lr * scale."""
        encoder_ids = {id(p) for p in model.encoders.parameters()}
        rest = [p for p in model.parameters() if id(p) not in encoder_ids]
        encoders = {"params": list(model.encoders.parameters())}
        if self.params.encoder_lr_scale != 1.0:
            if self.base_lr is None:
                raise RuntimeError("finetune: MethodContext.lr (the recipe's optim.lr) is needed to scale it")
            encoders["lr"] = self.base_lr * self.params.encoder_lr_scale
        return [{"params": rest}, encoders]

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        out = model(batch.inputs)
        return {"task_loss": F.cross_entropy(out["logits"], batch.target)}
