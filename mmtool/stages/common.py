"""Helpers every stage uses: starting a run directory, seeding, reading earlier runs from disk.

Stages never call each other; they share only what earlier runs wrote to disk (config.yaml,
checkpoints, results.json), read through the functions here.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from mmtool.analysis import plots
from mmtool.config import Recipe, load_recipe, save_recipe
from mmtool.data import Dataset, Split, load_dataset
from mmtool.engine.checkpoint import list_snapshots, load_model, model_from_checkpoint
from mmtool.engine.evaluate import evaluate_splits, predict, resolve_device
from mmtool.engine.loop import fit
from mmtool.errors import UserError
from mmtool.methods import MethodContext, build_method
from mmtool.models import MultiModalNet, build_model, model_spec
from mmtool.models.mmtm import MMTMNet
from mmtool.runs import new_run_dir, read_json, require_run, write_env, write_json


def start_run(recipe: Recipe, stage: str, tag: str, run_dir: str | Path | None) -> Path:
    """Create the run directory and write config.yaml and env.json into it."""
    path = new_run_dir(recipe.runs_root, stage, recipe.data.name, tag, run_dir)
    save_recipe(recipe, path / "config.yaml")
    write_env(path, recipe.train.seed, str(resolve_device(recipe.train.device)))
    return path


@contextmanager
def new_run(recipe: Recipe, stage: str, tag: str, run_dir: str | Path | None) -> Iterator[Path]:
    """:func:`start_run` for a ``with`` block: if a user error stops the stage before it trained or wrote
    results, the directory this call created is removed again, so bad input leaves no half-run behind."""
    existed = run_dir is not None and Path(run_dir).exists()
    path = start_run(recipe, stage, tag, run_dir)
    try:
        yield path
    except UserError:
        if not existed and not (path / "results.json").exists() and not (path / "checkpoints").exists():
            shutil.rmtree(path, ignore_errors=True)
        raise


def resume_run(run_dir: str | Path) -> tuple[Path, Recipe]:
    """Re-open a run directory and its resolved recipe for ``--resume``."""
    path = require_run(run_dir, "--resume", "--resume")
    return path, load_recipe(path / "config.yaml")


def finish(run_dir: Path, result: dict) -> dict:
    result["run_dir"] = str(run_dir)
    write_json(run_dir / "results.json", result)
    return result


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)


def modalities_of(recipe: Recipe, dataset: Dataset) -> list[str]:
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
    out_dir: Path,
    resume: bool,
    label: str,
    teachers: dict[str, MultiModalNet] | None = None,
) -> dict:
    """Build the recipe's model on ``modalities``, train it with the recipe's method through the loop,
    reload the checkpoint selected on validation and score it on every split (training curves PNG too)."""
    device = resolve_device(recipe.train.device)
    seed_everything(recipe.train.seed)
    spec = model_spec(recipe.model, data.input_dims, data.num_classes, modalities)
    model = build_model(spec)
    splits = {k: s.select(modalities) for k, s in data.splits.items()}
    context = MethodContext(
        teachers=teachers or {},
        num_classes=data.num_classes,
        modalities=tuple(modalities),
        device=str(device),
        splits={k: splits[k] for k in ("train", "val")},
        epochs=recipe.train.epochs,
        lr=recipe.optim.lr,
        seed=recipe.train.seed,
    )
    method = build_method(recipe.method.name, recipe.method.params, context)
    fitted = fit(model, method, splits["train"], splits["val"], spec, out_dir, recipe.optim, recipe.schedule,
                 recipe.train, device, resume=resume, label=label)  # fmt: skip
    best, _ = load_model(out_dir)
    plots.training_curves(out_dir / "metrics.jsonl", out_dir / "plots" / "curves.png", f"{label} on {data.name}")
    scores = evaluate_splits(best.to(device), splits, data.num_classes, device)
    plots.confusion(scores["test_confusion"], out_dir / "plots" / "confusion.png", f"{label} on {data.name}, test")
    return {"best_epoch": fitted.best_epoch, **scores}


def load_unimodal_models(run_dir: str | Path | None, key: str = "teachers") -> dict[str, MultiModalNet]:
    """The per-modality models of a `pretrain-unimodal` run: ``{modality: model}``."""
    path = require_run(run_dir, "this stage", key)
    results = read_json(path / "results.json") if (path / "results.json").is_file() else None
    if results is None or results.get("stage") != "pretrain":
        raise UserError(f"{key}: {path} is not a finished `mmtool pretrain-unimodal` run (no results.json)")
    models = {}
    for m in results["modalities"]:
        model, _ = load_model(path, subdir=m)
        models[m] = model
    return models


def teachers_and_data(recipe: Recipe) -> tuple[Dataset, torch.device, dict[str, MultiModalNet]]:
    """The dataset, the device and the uni-modal models of ``recipe.teachers`` for the chosen modalities,
    after checking that the teachers were trained on the same data and split."""
    data = load_dataset(recipe.data)
    check_same_data(recipe, recipe.teachers, "teachers")
    models = load_unimodal_models(recipe.teachers)
    chosen = {m: models[m] for m in modalities_of(recipe, data) if m in models}
    return data, resolve_device(recipe.train.device), chosen


def load_encoders(run_dir: str | Path | None) -> dict[str, torch.nn.Module]:
    """Encoders of a pretrain run (one per modality) or of a fusion run (taken out of the model)."""
    path = require_run(run_dir, "this stage", "run")
    if _is_fusion_run(path):
        model, _ = load_model(path)
        return _separable_encoders(model, path)
    return {m: model.encoders[m] for m, model in load_unimodal_models(path, "run").items()}


def _separable_encoders(model: MultiModalNet, path: Path) -> dict[str, torch.nn.Module]:
    """A late-fusion model's encoders; an MMTM model's branches are not functions of one modality."""
    if isinstance(model, MMTMNet):
        raise UserError(
            f"run: {path} fuses its branches with MMTMs, so an encoder alone is not what the model computes; "
            "use `mmtool utilization --run` for each branch's accuracy with the other modality cut"
        )
    return dict(model.encoders)


def encoder_snapshots(run_dir: str | Path | None) -> Iterator[tuple[int, dict[str, torch.nn.Module]]]:
    """``(epoch, {modality: encoder})`` for every snapshot a run kept (``train.snapshot_every``), in order.

    Works for fusion runs and for pretrain runs (whose modalities train in sub-folders); an epoch is
    yielded with the modalities that have a snapshot at that epoch.
    """
    path = require_run(run_dir, "this stage", "run")
    if _is_fusion_run(path):
        for epoch, ckpt in list_snapshots(path / "checkpoints"):
            yield epoch, _separable_encoders(model_from_checkpoint(ckpt)[0], path)
        return
    modalities = read_json(path / "results.json")["modalities"] if (path / "results.json").is_file() else {}
    per_epoch: dict[int, dict[str, Path]] = {}
    for m in modalities:
        for epoch, ckpt in list_snapshots(path / m / "checkpoints"):
            per_epoch.setdefault(epoch, {})[m] = ckpt
    for epoch in sorted(per_epoch):
        yield epoch, {m: model_from_checkpoint(p)[0].encoders[m] for m, p in per_epoch[epoch].items()}


def _is_fusion_run(path: Path) -> bool:
    return (path / "checkpoints" / "best.pt").is_file()


def check_same_data(recipe: Recipe, run_dir: str | Path, key: str) -> None:
    """Refuse to combine runs trained on a different dataset or split than ``recipe`` uses."""
    other = load_recipe(require_run(run_dir, "this stage", key) / "config.yaml").data
    mine = recipe.data
    if (other.name, other.seed, other.n, other.test_fraction, other.val_fraction) != (
        mine.name,
        mine.seed,
        mine.n,
        mine.test_fraction,
        mine.val_fraction,
    ):
        raise UserError(
            f"{key}: {run_dir} was trained on {other.name} (seed {other.seed}, n {other.n}), "
            f"but this recipe uses {mine.name} (seed {mine.seed}, n {mine.n}); pass matching data.* overrides"
        )


@torch.no_grad()
def feature_splits(encoders: dict[str, torch.nn.Module], dataset: Dataset, device: torch.device) -> dict[str, Split]:
    """Frozen features of every split: ``{split: Split({m: (N, D)}, target)}``."""
    out = {}
    for name, split in dataset.splits.items():
        feats: dict[str, list] = {m: [] for m in encoders}
        for batch in split.batches(4096):
            batch = batch.to(device)
            for m, enc in encoders.items():
                feats[m].append(enc.to(device).eval()(batch.inputs[m]).float().cpu())
        out[name] = Split({m: torch.cat(v) for m, v in feats.items()}, split.target)
    return out


def unimodal_predictions(
    models: dict[str, MultiModalNet], split: Split, device: torch.device
) -> dict[str, torch.Tensor]:
    """Logits of each one-modality model on its own modality: ``{m: (N, C)}``."""
    return {m: predict(model.to(device), split.select([m]), device)["logits"] for m, model in models.items()}
