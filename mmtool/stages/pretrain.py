"""`mmtool pretrain-unimodal`: one model per modality, with the same encoder as in fusion.

Each modality trains in its own sub-folder of the run (``<run>/<modality>/``, with its own metrics,
checkpoints and plots) through the shared loop; the run's results.json lists the modalities, which is
what `decide`, `ensemble` and UMT read.
"""

from __future__ import annotations

from pathlib import Path

from mmtool.config import Recipe
from mmtool.data import load_dataset
from mmtool.stages.common import finish, modalities_of, train_and_evaluate


def run(recipe: Recipe, run_dir: Path, resume: bool = False) -> dict:
    data = load_dataset(recipe.data)
    per_modality = {
        m: train_and_evaluate(recipe, data, [m], run_dir / m, resume, f"uni-modal {m}")
        for m in modalities_of(recipe, data)
    }
    summary = [
        f"uni-modal {m}: test {r['test_accuracy']:.2f}%  (val {r['val_accuracy']:.2f}%)"
        for m, r in per_modality.items()
    ]
    return finish(run_dir, {"stage": "pretrain", "dataset": data.name, "modalities": per_modality, "summary": summary})
