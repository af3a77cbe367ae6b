"""UMT: Uni-Modal Teacher (paper 000, Algorithm 1, App. A.2)."""

from __future__ import annotations

import torch

from mmtool.data import Batch
from mmtool.errors import UserError
from mmtool.methods import METHODS, Method, MethodContext
from mmtool.methods.common import fused_mask, present_ce, present_kw, present_mse
from mmtool.methods.params import METHOD_REFERENCES, METHOD_SUMMARIES, UniModalTeacherParams
from mmtool.models import MultiModalNet


@METHODS.register("umt")
class UniModalTeacher(Method):
    """CE on the fused prediction (weight 1) + MSE between each student encoder's features and the
    frozen uni-modal teacher's features (weight 50 per modality), logged as separate losses."""

    Params = UniModalTeacherParams
    summary, reference = METHOD_SUMMARIES["umt"], METHOD_REFERENCES["umt"]
    handles_missing = True

    def __init__(self, params: UniModalTeacherParams, context: MethodContext) -> None:
        self.params = params
        if not context.teachers:
            raise UserError("method 'umt' needs --teachers RUN_DIR (a `mmtool pretrain-unimodal` run)")
        chosen = params.modalities or tuple(context.teachers)
        missing = [m for m in chosen if m not in context.teachers]
        if missing:
            raise UserError(f"method.modalities: no teacher for {missing} (teachers: {sorted(context.teachers)})")
        self.teachers = {m: context.teachers[m] for m in chosen}
        for teacher in self.teachers.values():
            teacher.eval()
            teacher.requires_grad_(False)

    def setup(self, model: MultiModalNet) -> None:
        for m, teacher in self.teachers.items():
            if m not in model.encoders:
                raise UserError(f"teacher modality {m!r} is not an input of the model ({model.modalities})")
            got, want = model.encoders[m].out_dim, teacher.encoders[m].out_dim
            if got != want:
                raise UserError(f"model.hidden: student {m} features have {got} dims, the teacher's {want}")

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        out = model(batch.inputs, **present_kw(batch))
        losses = {"task_loss": self.params.task_weight * present_ce(out["logits"], batch.target, fused_mask(batch))}
        for m, teacher in self.teachers.items():
            mask = None if batch.present is None else batch.present[m]  # distil where modality m is there
            with torch.no_grad():
                kw = {} if mask is None else {"present": {m: mask}}
                target = teacher({m: batch.inputs[m]}, **kw)["features"][m]  # (B, D) frozen uni-modal features
            student = out["features"][m].float()
            losses[f"distill_{m}_loss"] = self.params.distill_weight * present_mse(student, target.float(), mask)
        return losses
