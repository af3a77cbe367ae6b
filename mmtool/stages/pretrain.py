"""`mmtool pretrain-unimodal`: one model per modality, with the same encoder as in fusion.

Each modality trains in its own part of the run (:meth:`~mmtool.runs.Run.modality`, with its own metrics,
checkpoints and plots) through the shared loop; the run's results list the modalities, which is what
`decide`, `ensemble` and UMT read.

With ``method: {name: umt}`` and ``teachers: RUN`` (another pretrain run) each modality's model is
distilled from that modality's teacher only: CE + ``distill_weight`` x MSE to the teacher's features
(paper 000, App. A.8 / Table 18). The run is an ordinary pretrain run whose results add ``distilled_from``.
"""

from __future__ import annotations

from mmtool.config import Recipe
from mmtool.data import load_dataset
from mmtool.engine.models_io import teachers_of
from mmtool.engine.runtime import Runtime
from mmtool.engine.train import modalities_of, train_and_evaluate
from mmtool.runs import Run


def run(recipe: Recipe, run: Run, runtime: Runtime, resume: bool = False) -> dict:
    data = load_dataset(recipe.data)
    modalities = modalities_of(recipe, data)
    teachers = {}
    if recipe.teachers:  # the command checked that the method distils (umt)
        teachers = {m: runtime.prepare_model(t) for m, t in teachers_of(recipe, modalities).items()}
    label = "distilled" if teachers else "uni-modal"
    per_modality = {
        m: train_and_evaluate(recipe, data, [m], run.modality(m), runtime, resume, f"{label} {m}",
                              {m: teachers[m]} if m in teachers else None)  # fmt: skip
        for m in modalities
    }
    summary = [
        f"{label} {m}: test {r['test_accuracy']:.2f}%  (val {r['val_accuracy']:.2f}%)" for m, r in per_modality.items()
    ]
    extra = {"distilled_from": str(recipe.teachers), "method": recipe.method.name} if teachers else {}
    return {"stage": "pretrain", "dataset": data.name, **extra, "modalities": per_modality, "summary": summary}
