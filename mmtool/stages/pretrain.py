"""`mmtool pretrain-unimodal`: one model per modality, with the same encoder as in fusion.

Each modality trains in its own part of the run (:meth:`~mmtool.runs.Run.modality`, with its own metrics,
checkpoints and plots) through the shared loop; the run's results list the modalities, which is what
`decide`, `ensemble` and UMT read.
"""

from __future__ import annotations

from mmtool.config import Recipe
from mmtool.data import load_dataset
from mmtool.engine.runtime import Runtime
from mmtool.engine.train import modalities_of, train_and_evaluate
from mmtool.runs import Run


def run(recipe: Recipe, run: Run, runtime: Runtime, resume: bool = False) -> dict:
    data = load_dataset(recipe.data)
    per_modality = {
        m: train_and_evaluate(recipe, data, [m], run.modality(m), runtime, resume, f"uni-modal {m}")
        for m in modalities_of(recipe, data)
    }
    summary = [
        f"uni-modal {m}: test {r['test_accuracy']:.2f}%  (val {r['val_accuracy']:.2f}%)"
        for m, r in per_modality.items()
    ]
    return {"stage": "pretrain", "dataset": data.name, "modalities": per_modality, "summary": summary}
