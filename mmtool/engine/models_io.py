"""Models read from earlier runs: a pretrain run's uni-modal models, a fusion run's model, the encoders of
either (as trained, or at each snapshot the run kept), and a distillation teacher. Stages share only what
earlier runs wrote; every path comes from the run's :class:`~mmtool.runs.Run`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mmtool.config import Recipe
from mmtool.errors import UserError
from mmtool.models import MultiModalNet
from mmtool.models.mmtm import MMTMNet
from mmtool.runs import Layout, Run


def unimodal_models(run: Run) -> dict[str, MultiModalNet]:
    """The per-modality models of a finished `pretrain-unimodal` run: ``{modality: model}``."""
    return {m: run.modality(m).checkpoints().load_model()[0] for m in run.modalities()}


def teachers_of(recipe: Recipe, modalities: list[str]) -> dict[str, MultiModalNet]:
    """The uni-modal models of ``recipe.teachers`` for ``modalities``, after checking that the teachers
    were trained on the same data and split."""
    run = Run.open(recipe.teachers, key="teachers")
    run.check_same_data(recipe, "teachers")
    models = unimodal_models(run.expect(("pretrain",), "teachers", finished=True))
    return {m: models[m] for m in modalities if m in models}


def fusion_model(recipe: Recipe) -> tuple[MultiModalNet, Run]:
    """The model of the `mmtool train` run ``recipe.run`` (trained on the same data), and that run."""
    run = Run.open(recipe.run, key="run", expect=("train",))
    run.check_same_data(recipe, "run")
    return run.checkpoints().load_model()[0], run


def encoders_of(run: Run) -> tuple[dict[str, MultiModalNet], dict[str, Layout]]:
    """The models whose encoders a pretrain run (one per modality) or a fusion run (one for all) holds:
    ``({modality: model}, {modality: the layout its checkpoint is in, where its features are cached})``."""
    run.expect(("pretrain", "train"), "run")
    if run.kind == "train":
        model = run.checkpoints().load_model()[0]
        _check_separable(model, run.path)
        return {m: model for m in model.modalities}, {m: run for m in model.modalities}
    models = unimodal_models(run.expect(("pretrain",), "run", finished=True))
    return models, {m: run.modality(m) for m in models}


def encoder_snapshots(run: Run) -> Iterator[tuple[int, dict[str, MultiModalNet]]]:
    """``(epoch, {modality: model})`` for every snapshot a run kept (``train.snapshot_every``), in order.

    Works for fusion runs and for pretrain runs (whose modalities train in sub-folders); an epoch is
    yielded with the modalities that have a snapshot at that epoch.
    """
    from mmtool.engine.checkpoint import model_from_checkpoint

    if run.kind == "train":
        for epoch, ckpt in run.checkpoints().snapshots():
            model = model_from_checkpoint(ckpt)[0]
            _check_separable(model, run.path)
            yield epoch, {m: model for m in model.modalities}
        return
    per_epoch: dict[int, dict[str, Path]] = {}
    for m in run.modalities():
        for epoch, ckpt in run.modality(m).checkpoints().snapshots():
            per_epoch.setdefault(epoch, {})[m] = ckpt
    for epoch in sorted(per_epoch):
        yield epoch, {m: model_from_checkpoint(p)[0] for m, p in per_epoch[epoch].items()}


def _check_separable(model: MultiModalNet, path: Path) -> None:
    """A late-fusion model's encoders stand alone; an MMTM model's branches are not functions of one modality."""
    if isinstance(model, MMTMNet):
        raise UserError(
            f"run: {path} fuses its branches with MMTMs, so an encoder alone is not what the model computes; "
            "use `mmtool utilization --run` for each branch's accuracy with the other modality cut"
        )


def load_teacher(teacher_run: str | None) -> tuple[MultiModalNet, dict]:
    """The selected model of a `mmtool train` run, frozen and in eval mode, and its spec (self-distillation)."""
    if not teacher_run:
        raise UserError("method 'self_distill' needs method.teacher_run=RUN_DIR (a finished `mmtool train naive` run)")
    store = Layout(teacher_run).checkpoints()
    if not store.best.is_file():
        where = store.best.relative_to(Path(teacher_run))
        raise UserError(f"method.teacher_run: {teacher_run} has no {where} (expected a `mmtool train` run)")
    teacher, ckpt = store.load_model()
    teacher.requires_grad_(False)
    return teacher.eval(), ckpt["spec"]
