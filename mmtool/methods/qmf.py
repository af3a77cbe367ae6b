"""QMF: quality-aware multimodal fusion (Zhang et al., ICML 2023, "Provable Dynamic Fusion for Low-Quality
Multimodal Data"), a baseline of paper 003 (Tables 1-3; App. A.2: "we applied QMF similarly to the late fusion
setting ... The loss calculation aligns with the methodology described in the QMF papers").

The model is late fusion with one linear classifier per modality (``model.head: qmf``,
:class:`~mmtool.models.fusion_heads.QMFHead`). A modality's per-sample confidence is minus the energy of its
logits over a temperature, ``w_m = logsumexp(z_m) / T`` (T = 10), and the fused logits are ``sum_m w_m z_m``
with the weights held constant (detached): a modality whose logits have lower energy weighs more. Training
minimises, per batch,

    fused_weight * CE(fused) + sum_m CE(z_m) + rank_weight * sum_m R_m

where ``R_m`` ranks confidences against each sample's training history. Every step adds each sample's
current CE of modality m to its running total ``h_m[id]`` (kept per sample id, across epochs); the totals
are min-max normalised over the whole table, ``c = (h - min h) / (max h - min h)``. Sample i of the batch is
paired with the next one, j = i + 1 (cyclically), and with ``s = sign(c_i - c_j)``:

    R_m = mean_i max(0, s (w_i - w_j) - |c_i - c_j|)     (w with gradient here)

so a sample whose accumulated loss is higher must not be more confident than its partner by more than the gap
of their normalised histories.

Sources: the formulas are read from the released code (the QMF paper's equations were not at hand to
compare with) -- the QMF authors' (QingyangZhang/QMF,
``RGBD-scene-recognition/models/QMF.py`` d7f31dd, ``train_QMF_nyud2.py`` 276b2d7, ``utils/crl_utils.py``
e608059) and MLA's own QMF run (Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation,
``main.py`` 11ae1ee). Their ``rank_loss`` is ``MarginRankingLoss(0)(w_i, w_j + |c_i - c_j| / s', -s)`` with
``s' = s`` or 1 where s = 0, which is the hinge above; we compute the hinge directly (tests pin the two
equal). Their history ("correctness") accumulates the per-sample CE, despite its name, and keeps one
entry per training sample from the start, so during the first epoch the unseen samples' zeros set the minimum;
here the table grows with the largest sample id seen (ids are positions in the training split), which gives
the same minimum. The history's stored confidences are never read by either code and are not kept.

Choices where the codes differ (docs/methods.md):

* Order: MLA's ``main.py`` (and the QMF text-image script) adds the batch to the history before ranking;
  the QMF RGB-D script ranks first. We update first, as the code behind paper 003's numbers.
* Loss: MLA's audio-video (ResNet-18) path is ``CE(fused) + sum_m CE(z_m) + 0.1 sum_m R_m``, as the QMF RGB-D
  script (``--lamb 0.1``); its M3AE path (Food-101, MVSA, IEMOCAP) has no fused CE and ``lambda = 1``
  (``fused_weight: 0``, ``rank_weight: 1``). The defaults are the former.

With several processes each rank's (id, loss) pairs are summed into every rank's table (one all-reduce of
the table's size per step), so every rank normalises the same history; each rank ranks its own batch.
The history is method state: it is saved in last.pt and restored on resume.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmtool.data import Batch
from mmtool.errors import UserError
from mmtool.methods import METHODS, Method, MethodContext
from mmtool.methods.common import all_reduce_sum, branch_losses, distributed, fused_mask, present_ce, present_kw
from mmtool.methods.params import METHOD_REFERENCES, METHOD_SUMMARIES, QualityAwareFusionParams
from mmtool.models import MultiModalNet
from mmtool.models.fusion_heads import energy_confidence
from mmtool.models.heads import head_name


def normalised(history: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The samples' accumulated losses min-max normalised over the whole table: (N,), (B,) -> (B,).
    All zeros when the table holds one value only (nothing to rank)."""
    lo, hi = history.min(), history.max()
    if hi <= lo:
        return torch.zeros(len(ids), dtype=history.dtype, device=history.device)
    return (history[ids] - lo) / (hi - lo)


def rank_loss(confidence: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """``mean_i max(0, s_ij (w_i - w_j) - |c_i - c_j|)`` over the pairs (i, i + 1 cyclically), with
    ``s_ij = sign(c_i - c_j)``.

    Args:
        confidence: (B,) the samples' confidences w (with gradient).
        history: (B,) the same samples' normalised accumulated losses c.
    """
    c = history.to(confidence.dtype)
    gap = c - torch.roll(c, -1)
    return F.relu(torch.sign(gap) * (confidence - torch.roll(confidence, -1)) - gap.abs()).mean()


@METHODS.register("qmf")
class QualityAwareFusion(Method):
    """Fused CE + uni-modal CEs + ``rank_weight`` x the ranking regulariser of every modality (see module)."""

    Params = QualityAwareFusionParams
    summary, reference = METHOD_SUMMARIES["qmf"], METHOD_REFERENCES["qmf"]
    handles_missing = True

    def __init__(self, params: QualityAwareFusionParams, context: MethodContext) -> None:
        self.params = params
        self.runtime = context.runtime
        self.history: dict[str, torch.Tensor] = {}  # modality -> (N,) accumulated CE per training sample id

    def adapt_spec(self, spec: dict) -> dict:
        """QMF's head, with the method's temperature (saved in the spec, so later stages fuse alike)."""
        if spec["head"] != "qmf":
            raise UserError(f"method 'qmf' needs model.head: qmf (per-modality classifiers, energy-weighted), "
                            f"got {spec['head']!r}")  # fmt: skip
        return {**spec, "head_args": {**spec.get("head_args", {}), "temperature": self.params.temperature}}

    def setup(self, model: MultiModalNet) -> None:
        if head_name(model.head) != "qmf" or len(model.modalities) < 2:
            raise UserError("method 'qmf' needs model.head: qmf and at least two modalities")

    def training_step(self, model: MultiModalNet, batch: Batch) -> dict[str, torch.Tensor]:
        if batch.ids.numel() != len(batch):
            raise RuntimeError("method 'qmf' keeps a history per sample: every training batch needs its ids")
        out = model(batch.inputs, **present_kw(batch))
        losses = {}
        if self.params.fused_weight > 0:
            fused = present_ce(out["logits"], batch.target, fused_mask(batch))
            losses["task_loss"] = self.params.fused_weight * fused
        uni = out["unimodal_logits"]
        losses.update(branch_losses(out, batch.target, batch.present))
        for m, z in uni.items():
            ids, target = batch.ids, batch.target
            if batch.present is not None:  # missing modalities: m's history and ranking read the samples with m
                rows = batch.present[m].nonzero().squeeze(1)
                z, ids, target = z[rows], ids[rows.cpu()], target[rows]
                if not len(ids):
                    losses[f"rank_{m}_loss"] = z.sum() * 0.0
                    continue
            self._record(m, ids, F.cross_entropy(z.detach().float(), target, reduction="none"))
            c = normalised(self.history[m], ids.to(self.history[m].device))
            conf = energy_confidence(z, self.params.temperature)
            losses[f"rank_{m}_loss"] = self.params.rank_weight * rank_loss(conf, c)
        return losses

    def _record(self, modality: str, ids: torch.Tensor, sample_losses: torch.Tensor) -> None:
        """Add each sample's loss to its running total (every rank's samples, under several processes)."""
        ids = ids.to(sample_losses.device)
        table = self.history.get(modality)
        size = max(int(ids.max()) + 1, 0 if table is None else len(table))
        if distributed(self.runtime):
            size = int(self.runtime.all_reduce(torch.tensor([size], device=ids.device), op="max"))
        table = _grown(table, size, sample_losses.device)
        delta = torch.zeros_like(table).index_add_(0, ids, sample_losses.to(table.dtype))
        self.history[modality] = table + all_reduce_sum(self.runtime, delta)

    def epoch_metrics(self) -> dict[str, float]:
        return {f"qmf_history_mean_{m}": float(h.mean()) for m, h in self.history.items()}

    def state_dict(self) -> dict:
        return {"history": {m: h.detach().cpu().clone() for m, h in self.history.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.history = {m: torch.as_tensor(h, dtype=torch.float64).clone() for m, h in state["history"].items()}


def _grown(table: torch.Tensor | None, size: int, device: torch.device) -> torch.Tensor:
    """The history table on ``device``, zero-padded to ``size`` entries (float64, as the original's numpy)."""
    if table is None:
        return torch.zeros(size, dtype=torch.float64, device=device)
    table = table.to(device)
    return table if len(table) >= size else torch.cat([table, table.new_zeros(size - len(table))])
