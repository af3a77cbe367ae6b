"""A recipe's training, from model to scores: build the model on the chosen modalities, train it with the
recipe's method through the loop (:func:`~mmtool.engine.loop.fit`), reload the model selected on
validation and score it on every split. `pretrain-unimodal` runs it once per modality, `train` once."""

from __future__ import annotations

import torch

from mmtool.analysis import plots
from mmtool.config import Recipe, relative_to_recipe
from mmtool.data import Dataset
from mmtool.engine.evaluate import evaluate_splits
from mmtool.engine.inference import run_inference
from mmtool.engine.loop import fit, selected_model
from mmtool.engine.penalties import sparsity
from mmtool.engine.runtime import Runtime
from mmtool.errors import UserError
from mmtool.methods import MethodContext, build_method
from mmtool.models import MultiModalNet, build_model, encoder_config, model_spec
from mmtool.models.base import refuse_missing
from mmtool.runs import Layout


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)


def modalities_of(recipe: Recipe, dataset: Dataset) -> list[str]:
    """The recipe's ``modalities`` (all of the dataset's when it names none), checked against the dataset."""
    chosen = list(recipe.modalities) or list(dataset.modalities)
    unknown = [m for m in chosen if m not in dataset.modalities]
    if unknown:
        raise UserError(
            f"{recipe.source}: key 'modalities': {unknown} not in {dataset.name} ({list(dataset.modalities)})"
        )
    return chosen


def train_and_evaluate(
    recipe: Recipe,
    data: Dataset,
    modalities: list[str],
    out: Layout,
    runtime: Runtime,
    resume: bool,
    label: str,
    teachers: dict[str, MultiModalNet] | None = None,
) -> dict:
    """Build the recipe's model on ``modalities``, train it with the recipe's method through the loop into
    ``out``, reload the checkpoint selected on validation and score it on every split (training curves and
    the test confusion matrix drawn in ``out``'s plots)."""
    splits = {k: s.select(modalities) for k, s in data.splits.items()}
    context = _method_context(recipe, data, modalities, splits, runtime, teachers)
    method = build_method(recipe.method.name, recipe.method.params, context)
    spec = method.adapt_spec(model_spec(recipe.model, data.input_dims, data.num_classes, modalities))
    seed_everything(recipe.train.seed)  # after the method: the model's init never depends on what it drew
    model = build_model(spec)
    if any(s.present is not None for s in splits.values()):  # missing modalities: refused before training starts
        refuse_missing_method(recipe.method.name, method)
        refuse_missing(model)
    if not resume:
        init_pretrained(recipe, model)
    fitted = fit(model, method, splits["train"], splits["val"], spec, out, recipe.optim, recipe.schedule,
                 recipe.train, runtime, resume=resume, label=label)  # fmt: skip
    best = selected_model(fitted, out, spec)
    plots.training_curves(out.metrics().path, out.plot("curves.png"), f"{label} on {data.name}")
    scores = evaluate_splits(runtime.prepare_model(best), splits, data.num_classes, runtime)
    plots.confusion(scores["test_confusion"], out.plot("confusion.png"), f"{label} on {data.name}, test")
    # R(f) of paper 002, Sec. 6.3: the share of parameters below 1e-7 in magnitude (optim.l1 raises it)
    diverged = {} if fitted.diverged_at is None else {"diverged_at_epoch": fitted.diverged_at}
    return {"best_epoch": fitted.best_epoch, "sparsity_r": sparsity(best), **diverged, **scores}


def _method_context(recipe: Recipe, data: Dataset, modalities: list[str], splits: dict, runtime: Runtime,
                    teachers: dict[str, MultiModalNet] | None) -> MethodContext:  # fmt: skip
    """What a method may know: teachers, dataset facts, the runtime, and a way to measure the model."""

    def measure(net: MultiModalNet, name: str, forward, want: tuple[str, ...]) -> dict:
        return run_inference(net, splits[name], runtime, want=want, forward=forward)

    return MethodContext(
        teachers=teachers or {},
        num_classes=data.num_classes,
        modalities=tuple(modalities),
        device=str(runtime.device),
        runtime=runtime,
        measure=measure,
        epochs=recipe.train.epochs,
        batches_per_epoch=batches_per_epoch(len(splits["train"]), recipe.train.batch_size, runtime.world_size),
        lr=recipe.optim.lr,
        seed=recipe.train.seed,
    )


def batches_per_epoch(samples: int, batch_size: int, world_size: int = 1) -> int:
    """Training batches each rank reads in an epoch: its padded shard of ``samples`` in batches of its share
    of ``batch_size`` (0: the whole shard in one batch), as the split sources deal them out."""
    shard = -(-samples // world_size)
    if batch_size <= 0:
        return 1
    return max(1, -(-shard // max(batch_size // world_size, 1)))


def init_pretrained(recipe: Recipe, model: MultiModalNet) -> None:
    """Load the ``pretrained:`` weights files the recipe names into their modalities' encoders."""
    from mmtool.models.pretrained import load_pretrained

    for m in model.modalities:
        path = encoder_config(recipe.model, m).pretrained
        if path:
            load_pretrained(model.encoders[m], relative_to_recipe(recipe, path), f"model.encoders.{m}.pretrained")


def refuse_missing_method(name: str, method: object) -> None:
    """One line when method ``name`` does not count each modality only where it is there (data.missing_rate)."""
    if not type(method).handles_missing:
        from mmtool.methods import METHODS

        able = [n for n in METHODS.names() if METHODS.get(n).handles_missing]
        raise UserError(f"data.missing_rate > 0: method {name} does not handle missing modalities "
                        f"(methods that do: {', '.join(able)})")  # fmt: skip
