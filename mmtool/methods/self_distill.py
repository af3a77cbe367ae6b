"""Self-distillation from a trained naive-fusion model (paper 000, Sec. 4.3 / Table 8 "Self-Distill
(label)" and "Self-Distill (feature)"; paper 001, Table 2: "distilling a pre-trained naive fusion model
to a new one").

The student is trained from scratch with CE on its fused prediction plus one distillation term from a
frozen teacher that is itself a multi-modal fusion model (``method.teacher_run``, a finished
`mmtool train` run, normally of ``naive``):

* ``level: label`` -- soft labels (Hinton et al., 2015): ``weight * T^2 * KL(softmax(z_t / T) ||
  softmax(z_s / T))``, averaged over the batch. The T^2 factor keeps the gradient size independent of
  T (Hinton et al., Sec. 2). Defaults: T = 4, a usual choice since the paper gives none (at T = 1 the
  soft labels of a teacher that fits its training set are almost one-hot, i.e. the CE again), and
  weight 1, the CE's own weight.
* ``level: feature`` -- features (Romero et al., 2014, as paper 000 cites): ``weight * MSE(f_s^m,
  f_t^m)`` per modality between the student's and the teacher's encoder outputs. This is UMT (App. A.2)
  with the fusion model as teacher instead of uni-modal models, so the default weight is UMT's 50: the
  two methods then differ only in the teacher, the comparison Table 8 makes.

``method.weight`` left empty takes the level's default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmtool.data import Batch
from mmtool.engine.models_io import load_teacher
from mmtool.errors import UserError
from mmtool.methods import METHODS, Method, MethodContext
from mmtool.methods.params import METHOD_REFERENCES, METHOD_SUMMARIES, SelfDistillationParams
from mmtool.models import MultiModalNet

DEFAULT_WEIGHT = {"label": 1.0, "feature": 50.0}


@METHODS.register("self_distill")
class SelfDistillation(Method):
    """CE on the fused prediction + distillation (soft labels or encoder features) from a frozen,
    trained naive-fusion model (paper 000, Sec. 4.3 / Table 8)."""

    Params = SelfDistillationParams
    summary, reference = METHOD_SUMMARIES["self_distill"], METHOD_REFERENCES["self_distill"]

    def __init__(self, params: SelfDistillationParams, context: MethodContext) -> None:
        if params.level not in DEFAULT_WEIGHT:
            raise UserError(f"method.level: expected 'label' or 'feature', got {params.level!r}")
        if params.temperature <= 0:
            raise UserError(f"method.temperature: must be positive, got {params.temperature}")
        self.params = params
        self.weight = DEFAULT_WEIGHT[params.level] if params.weight is None else params.weight
        self.teacher, spec = load_teacher(params.teacher_run)
        self.teacher.to(context.device)
        if context.num_classes and spec["num_classes"] != context.num_classes:
            raise UserError(
                f"method.teacher_run: the teacher predicts {spec['num_classes']} classes, "
                f"the data has {context.num_classes}"
            )

    def setup(self, model: MultiModalNet) -> None:
        mods = self.teacher.modalities
        if sorted(mods) != sorted(model.modalities):
            raise UserError(
                f"method.teacher_run: the teacher's modalities {mods} differ from the model's {model.modalities}"
            )
        if self.params.level == "feature":
            for m in mods:
                got, want = model.encoders[m].out_dim, self.teacher.encoders[m].out_dim
                if got != want:
                    raise UserError(f"model.hidden: student {m} features have {got} dims, the teacher's {want}")

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        out = model(batch.inputs)
        losses = {"task_loss": F.cross_entropy(out["logits"], batch.target)}
        with torch.no_grad():
            teacher = self.teacher(batch.inputs)
        if self.params.level == "label":
            kl = soft_label_kl(out["logits"], teacher["logits"], self.params.temperature)
            losses["distill_loss"] = self.weight * kl
        else:
            for m, f in teacher["features"].items():
                losses[f"distill_{m}_loss"] = self.weight * F.mse_loss(out["features"][m].float(), f.float())
        return losses


def soft_label_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch.

    Args:
        student: (B, C) logits.
        teacher: (B, C) logits.
        temperature: T > 0.
    """
    log_s = F.log_softmax(student.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher.float() / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")
