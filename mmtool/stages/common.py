"""Helpers every stage uses: starting a run directory, seeding, reading earlier runs from disk.

Stages never call each other; they share only what earlier runs wrote to disk (config.yaml,
checkpoints, results.json), read through the functions here.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from mmtool.analysis import plots
from mmtool.config import DataConfig, Recipe, load_recipe, relative_to_recipe, save_recipe
from mmtool.data import ArraySource, Dataset, load_dataset
from mmtool.engine.checkpoint import COMPLETE, compact_last, list_snapshots, load_model, model_from_checkpoint
from mmtool.engine.evaluate import evaluate_splits
from mmtool.engine.inference import encode_only, run_inference
from mmtool.engine.loop import fit, selected_model
from mmtool.engine.runtime import Runtime
from mmtool.errors import Interrupted, UserError
from mmtool.methods import MethodContext, build_method
from mmtool.models import MultiModalNet, build_model, encoder_config, model_spec
from mmtool.models.mmtm import MMTMNet
from mmtool.paths import runs_root
from mmtool.runs import (
    COMMANDS,
    begin_session,
    created_runs,
    end_session,
    has_progress,
    is_writer,
    lock_run,
    new_run_dir,
    read_json,
    require_run,
    seconds_held,
    unlock_run,
    write_env,
    write_json,
)


def start_run(recipe: Recipe, stage: str, tag: str, run_dir: str | Path | None) -> Path:
    """Create the run directory, take its lock, and write config.yaml and env.json into it (with the
    sha256 of config.yaml, which ``--resume`` checks). The runtime is checked first: a device or precision
    this machine lacks stops the command before any folder exists."""
    runtime = Runtime.from_config(recipe.train)
    if not runtime.is_main:  # under torchrun, rank 0 creates the folder and every rank uses its path
        return Path(runtime.broadcast_object(None))
    try:
        path = new_run_dir(runs_root(recipe.runs_root), stage, recipe.data.name, tag, run_dir)
        lock_run(path)
        save_recipe(recipe, path / "config.yaml")
        write_env(path, recipe.train.seed, {**runtime.describe(), CONFIG_SHA256: _sha256(path / "config.yaml")})
    except BaseException:
        runtime.broadcast_object(None)  # the other ranks stop too (each with its own line)
        raise
    return Path(runtime.broadcast_object(str(path)))


@contextmanager
def new_run(recipe: Recipe, stage: str, tag: str, run_dir: str | Path | None) -> Iterator[Path]:
    """:func:`start_run` for a ``with`` block: if the command fails before it finished an epoch or wrote
    results, the directory this call created is removed again, so a failed start leaves nothing that
    blocks a rerun (a run that trained at least one epoch is kept: ``--resume`` continues it). The run's
    path is announced on stderr when it starts and, with its outcome, when it ends; the outcome is recorded
    in the run (sessions.json, and failed.json for an error) for `mmtool runs`."""
    existed = run_dir is not None and Path(run_dir).exists()
    made = len(created_runs())
    try:
        path = start_run(recipe, stage, tag, run_dir)
    except BaseException as err:
        for folder in created_runs()[made:]:  # made before the start failed (a full disk at config.yaml, say)
            _discard(folder, err)
        raise
    began = None
    try:
        began = begin_session(path)
        _announce(path)
        yield path
    except BaseException as err:
        if not existed and is_writer() and not has_progress(path):
            _discard(path, err)
        else:
            _close(path, began, err)
        raise
    _close(path, began, None)


def _discard(path: Path, err: BaseException) -> None:
    """Remove the folder of a run that failed before it made progress, and say so."""
    unlock_run(path)
    shutil.rmtree(path, ignore_errors=True)
    for parent in (path.parent, path.parent.parent):  # runs/<stage>/ and runs/, when this left them empty
        try:
            parent.rmdir()
        except OSError:
            break
    _announce(path, f"{_outcome(err)[0]}, nothing kept")


@contextmanager
def resumed_run(run_dir: str | Path, stage: str, overrides: list[str] | None = None, method: str | None = None
                ) -> Iterator[tuple[Path, Recipe]]:  # fmt: skip
    """:func:`resume_run` for a ``with`` block: the run's path and outcome are announced and recorded as
    for :func:`new_run` (a resume that completes clears an earlier failure; one that fails records its own)."""
    path, recipe = resume_run(run_dir, stage, overrides, method)
    began = None
    try:
        began = begin_session(path)
        _announce(path)
        yield path, recipe
    except BaseException as err:
        _close(path, began, err)
        raise
    _close(path, began, None)


def _outcome(err: BaseException | None) -> tuple[str, str | None]:
    """(outcome, one-line error): a signal (:class:`Interrupted`, Ctrl-C) interrupts, any other error fails."""
    if err is None:
        return "complete", None
    if isinstance(err, Interrupted) or not isinstance(err, Exception):
        return "interrupted", None
    message = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
    return "failed", (message.strip().splitlines() or [type(err).__name__])[0][:500]


def _close(path: Path, began: float | None, err: BaseException | None) -> None:
    outcome, error = _outcome(err)
    if began is not None:
        end_session(path, began, outcome, error)
    _announce(path, outcome)


def _announce(path: Path, outcome: str | None = None) -> None:
    """``run: PATH`` (and ``(outcome)`` at the end) on stderr, from rank 0 only under torchrun."""
    if os.environ.get("RANK", "0") != "0":
        return
    print(f"run: {path}" + (f" ({outcome})" if outcome else ""), file=sys.stderr, flush=True)


def resume_run(run_dir: str | Path, stage: str, overrides: list[str] | None = None, method: str | None = None
               ) -> tuple[Path, Recipe]:  # fmt: skip
    """Re-open a run directory for ``--resume``: its lock, and its recipe exactly as it was. A resume that
    asks for anything else (another stage, method or recipe value) is refused, listing each change:
    continuing a run under other settings would leave a config.yaml describing a run that never happened.
    So is a config.yaml edited since the run started (see :func:`check_unedited`)."""
    path = require_run(run_dir, "--resume", "--resume")
    check_unedited(path, stage)
    saved = load_recipe(path / "config.yaml")
    changes = []
    if saved.stage != stage:
        changes.append(f"stage: {saved.stage} -> {stage}")
    if method is not None and method != saved.method.name:
        changes.append(f"method: {saved.method.name} -> {method}")
    if overrides:
        wanted = load_recipe(path / "config.yaml", overrides)
        changes += [f"{k}: {a!r} -> {b!r}" for k, (a, b) in _flat_diff(saved.to_dict(), wanted.to_dict()).items()]
    if changes:
        raise UserError(
            f"--resume {path}: the run was made with other settings ({'; '.join(changes)}); resume it as it "
            "is, or start a new run"
        )
    if Runtime.from_config(saved.train).is_main:
        lock_run(path)
    return path, saved


CONFIG_SHA256 = "config_sha256"  # env.json key: config.yaml's hash when the run started


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_unedited(path: Path, stage: str) -> None:
    """Refuse to resume a run whose config.yaml changed since it started: the checkpoints were trained
    under the recorded recipe, and a resume under another would describe a run that never happened. A run
    started before the hash was recorded is taken as it is."""
    env = read_json(path / "env.json") if (path / "env.json").is_file() else {}
    started = env.get(CONFIG_SHA256) if isinstance(env, dict) else None
    if started is None:
        return
    now = _sha256(path / "config.yaml")
    if now != started:
        raise UserError(
            f"{path / 'config.yaml'} was edited after the run started (sha256 {started[:12]} then, {now[:12]} now); "
            f"put it back or start a new run with that recipe: {COMMANDS.get(stage, 'mmtool ' + stage)} "
            f"-r {path / 'config.yaml'}"
        )


def check_resume_recipe(run_dir: str | Path, stage: str, wanted: Recipe, given: str) -> None:
    """Refuse ``--resume`` together with a recipe (``given``: what named it, e.g. ``-r other.yaml``) that is
    not the run's own, listing the differences (old -> new); the same recipe is accepted, so that a
    command line with ``--resume RUN`` added continues the run it started."""
    path = require_run(run_dir, "--resume", "--resume")
    check_unedited(path, stage)
    saved = load_recipe(path / "config.yaml")
    changes = [f"{k}: {a!r} -> {b!r}" for k, (a, b) in _flat_diff(saved.to_dict(), wanted.to_dict()).items()]
    if changes:
        raise UserError(
            f"--resume {path}: {given} is not the recipe of the run ({'; '.join(changes)}); resume it as it is "
            f"({COMMANDS.get(stage, 'mmtool ' + stage)} --resume {path}), or start a new run"
        )


class _Unset:
    """A key one recipe does not have (another method's parameter), shown as ``unset`` in a diff."""

    def __repr__(self) -> str:
        return "unset"


def _flat_diff(a: dict, b: dict, prefix: str = "") -> dict[str, tuple]:
    """``{dotted key: (value in a, value in b)}`` for every key whose values differ."""
    out: dict[str, tuple] = {}
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key, _Unset()), b.get(key, _Unset())
        if isinstance(x, dict) and isinstance(y, dict):
            out.update(_flat_diff(x, y, f"{prefix}{key}."))
        elif x != y:
            out[f"{prefix}{key}"] = (x, y)
    return out


def finish(run_dir: Path, result: dict) -> dict:
    """Write ``results.json``: the stage's numbers, plus where and how they were computed (device,
    precision, threads and processes, from env.json) and the wall time of the command that finished it.
    First, each finished training's older last.prev*.pt are removed and its last.pt is cut down to the
    weights and counters unless the recipe sets ``train.keep_optimizer``
    (:func:`~mmtool.engine.checkpoint.compact_last`)."""
    result = _rounded(result)
    result["run_dir"] = str(run_dir)
    env = read_json(run_dir / "env.json") if (run_dir / "env.json").is_file() else {}
    result["runtime"] = {k: env[k] for k in ("device", "device_name", "precision", "threads", "world_size") if k in env}
    held = seconds_held(run_dir)
    if held is not None:
        result["wall_seconds"] = round(held, 1)
    if is_writer():
        keep = load_recipe(run_dir / "config.yaml").train.keep_optimizer
        for marker in sorted(run_dir.rglob(COMPLETE)):
            compact_last(marker.parent, keep)
    write_json(run_dir / "results.json", result)
    return result


ACCURACY_DECIMALS = 4  # k/N exactly for test sets up to a million samples; beyond that, float32 noise


def _rounded(value, key: str = ""):
    """Accuracies (any key mentioning ``accuracy``, at any depth) rounded to :data:`ACCURACY_DECIMALS`
    decimals: they are computed in float32, and 72.45370483398438 says no more than 72.4537."""
    if isinstance(value, dict):
        return {k: _rounded(v, k if "accuracy" in str(k) else key) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, key) for v in value]
    if isinstance(value, float) and "accuracy" in key and math.isfinite(value):
        return round(value, ACCURACY_DECIMALS)
    return value


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
    runtime = Runtime.from_config(recipe.train)
    seed_everything(recipe.train.seed)
    spec = model_spec(recipe.model, data.input_dims, data.num_classes, modalities)
    model = build_model(spec)
    if not resume:
        init_pretrained(recipe, model)
    splits = {k: s.select(modalities) for k, s in data.splits.items()}

    def measure(net: MultiModalNet, name: str, forward, want: tuple[str, ...]) -> dict:
        return run_inference(net, splits[name], runtime, want=want, forward=forward)

    context = MethodContext(
        teachers=teachers or {},
        num_classes=data.num_classes,
        modalities=tuple(modalities),
        device=str(runtime.device),
        runtime=runtime,
        measure=measure,
        epochs=recipe.train.epochs,
        lr=recipe.optim.lr,
        seed=recipe.train.seed,
    )
    method = build_method(recipe.method.name, recipe.method.params, context)
    fitted = fit(model, method, splits["train"], splits["val"], spec, out_dir, recipe.optim, recipe.schedule,
                 recipe.train, runtime, resume=resume, label=label)  # fmt: skip
    best = selected_model(fitted, out_dir, spec)
    plots.training_curves(out_dir / "metrics.jsonl", out_dir / "plots" / "curves.png", f"{label} on {data.name}")
    scores = evaluate_splits(runtime.prepare_model(best), splits, data.num_classes, runtime)
    plots.confusion(scores["test_confusion"], out_dir / "plots" / "confusion.png", f"{label} on {data.name}, test")
    return {"best_epoch": fitted.best_epoch, **scores}


def init_pretrained(recipe: Recipe, model: MultiModalNet) -> None:
    """Load the ``pretrained:`` weights files the recipe names into their modalities' encoders."""
    from mmtool.models.pretrained import load_pretrained

    for m in model.modalities:
        path = encoder_config(recipe.model, m).pretrained
        if path:
            load_pretrained(model.encoders[m], relative_to_recipe(recipe, path), f"model.encoders.{m}.pretrained")


@dataclass(frozen=True)
class RunInfo:
    """What kind of run a folder holds, read from its config.yaml (the one answer every stage uses)."""

    path: Path
    stage: str
    method: str
    data: DataConfig
    finished: bool  # results.json written

    def describe(self) -> str:
        what = f"`{COMMANDS.get(self.stage, self.stage)}` run"
        return what + (f" (method {self.method})" if self.stage == "train" else "")


def run_info(run_dir: str | Path | None, key: str) -> RunInfo:
    path = require_run(run_dir, "this stage", key)
    recipe = load_recipe(path / "config.yaml")
    return RunInfo(path, recipe.stage, recipe.method.name, recipe.data, (path / "results.json").is_file())


def expect_run(run_dir: str | Path | None, key: str, stages: tuple[str, ...], finished: bool = False) -> RunInfo:
    """The run at ``run_dir`` if it is of one of ``stages`` (and finished, when asked); else one line
    saying what it is and what this stage needs."""
    info = run_info(run_dir, key)
    wanted = " or ".join(f"a `{COMMANDS[s]}` run" for s in stages)
    if info.stage not in stages:
        raise UserError(f"{key}: {info.path} is a {info.describe()}; this needs {wanted}")
    if finished and not info.finished:
        raise UserError(
            f"{key}: {info.path} has not finished (no results.json); complete it with "
            f"`{COMMANDS[info.stage]} --resume {info.path}`"
        )
    return info


def load_unimodal_models(run_dir: str | Path | None, key: str = "teachers") -> dict[str, MultiModalNet]:
    """The per-modality models of a finished `pretrain-unimodal` run: ``{modality: model}``."""
    path = expect_run(run_dir, key, ("pretrain",), finished=True).path
    results = read_json(path / "results.json")
    models = {}
    for m in results["modalities"]:
        model, _ = load_model(path, subdir=m)
        models[m] = model
    return models


def teachers_and_data(recipe: Recipe) -> tuple[Dataset, Runtime, dict[str, MultiModalNet]]:
    """The dataset, the runtime and the uni-modal models of ``recipe.teachers`` for the chosen modalities,
    after checking that the teachers were trained on the same data and split."""
    data = load_dataset(recipe.data)
    check_same_data(recipe, recipe.teachers, "teachers")
    models = load_unimodal_models(recipe.teachers)
    chosen = {m: models[m] for m in modalities_of(recipe, data) if m in models}
    return data, Runtime.from_config(recipe.train), chosen


def load_encoders(run_dir: str | Path | None) -> tuple[dict[str, MultiModalNet], dict[str, Path]]:
    """The models whose encoders a pretrain run (one per modality) or a fusion run (one for all) holds:
    ``({modality: model}, {modality: folder of its checkpoint, where its features are cached})``."""
    path = expect_run(run_dir, "run", ("pretrain", "train")).path
    if _is_fusion_run(path):
        model, _ = load_model(path)
        _check_separable(model, path)
        return {m: model for m in model.modalities}, {m: path for m in model.modalities}
    models = load_unimodal_models(path, "run")
    return models, {m: path / m for m in models}


def _check_separable(model: MultiModalNet, path: Path) -> None:
    """A late-fusion model's encoders stand alone; an MMTM model's branches are not functions of one modality."""
    if isinstance(model, MMTMNet):
        raise UserError(
            f"run: {path} fuses its branches with MMTMs, so an encoder alone is not what the model computes; "
            "use `mmtool utilization --run` for each branch's accuracy with the other modality cut"
        )


def encoder_snapshots(run_dir: str | Path | None) -> Iterator[tuple[int, dict[str, MultiModalNet]]]:
    """``(epoch, {modality: model})`` for every snapshot a run kept (``train.snapshot_every``), in order.

    Works for fusion runs and for pretrain runs (whose modalities train in sub-folders); an epoch is
    yielded with the modalities that have a snapshot at that epoch.
    """
    path = require_run(run_dir, "this stage", "run")
    if _is_fusion_run(path):
        for epoch, ckpt in list_snapshots(path / "checkpoints"):
            model = model_from_checkpoint(ckpt)[0]
            _check_separable(model, path)
            yield epoch, {m: model for m in model.modalities}
        return
    modalities = read_json(path / "results.json")["modalities"] if (path / "results.json").is_file() else {}
    per_epoch: dict[int, dict[str, Path]] = {}
    for m in modalities:
        for epoch, ckpt in list_snapshots(path / m / "checkpoints"):
            per_epoch.setdefault(epoch, {})[m] = ckpt
    for epoch in sorted(per_epoch):
        yield epoch, {m: model_from_checkpoint(p)[0] for m, p in per_epoch[epoch].items()}


def _is_fusion_run(path: Path) -> bool:
    return run_info(path, "run").stage == "train"




def check_same_data(recipe: Recipe, run_dir: str | Path, key: str) -> None:
    """Refuse to combine runs trained on another dataset or split than ``recipe`` uses: a teacher that saw
    this recipe's validation or test samples would leak them."""
    other = load_recipe(require_run(run_dir, "this stage", key) / "config.yaml").data.sample_keys()
    mine = recipe.data.sample_keys()
    differ = [f for f in {**other, **mine} if other.get(f, "unset") != mine.get(f, "unset")]
    if differ:
        diff = ", ".join(f"data.{f} {other.get(f)!r} there, {mine.get(f)!r} here" for f in differ)
        raise UserError(f"{key}: {run_dir} was trained on other samples ({diff}); pass matching data.* overrides")


FEATURES_FORMAT = 1


def frozen_features(
    recipe: Recipe,
    models: dict[str, MultiModalNet],
    data: Dataset,
    runtime: Runtime,
    cache: dict[str, Path] | None = None,
) -> dict[str, ArraySource]:
    """Features of frozen encoders on every split, ``{split: ArraySource({m: (N, D)}, targets)}``.

    ``models`` maps a modality to the model whose encoder to read (a one-modality model of a pretrain run,
    or a fusion model for several modalities; each model is run once per split, on its modalities only).
    ``cache`` maps a modality to the run folder to keep its features in (``features/<key>/``): they are
    extracted once per (run, checkpoint, data) in one streamed pass and reused by later probes and
    decisions; a cache that does not match the checkpoint or the data is rebuilt.
    """
    key = data_key(recipe, data)
    per_model: dict[int, tuple[MultiModalNet, list[str]]] = {}
    for m, model in models.items():
        per_model.setdefault(id(model), (model, []))[1].append(m)
    out: dict[str, dict[str, torch.Tensor]] = {name: {} for name in data.splits}
    for model, mods in per_model.values():
        folder = (cache or {}).get(mods[0])
        for name, split in data.splits.items():
            feats = _cached(folder, key, name, mods) if folder else None
            if feats is None:
                runtime.prepare_model(model)
                feats = run_inference(model, split.select(mods), runtime, want=("features",),
                                      forward=encode_only)["features"]  # fmt: skip
                if folder:
                    _store(folder, key, name, feats)
            out[name].update(feats)
    return {name: ArraySource(feats, data.splits[name].targets()) for name, feats in out.items()}


def data_key(recipe: Recipe, data: Dataset) -> str:
    """A short fingerprint of what the splits' samples are (the data settings and the split sizes)."""
    import hashlib
    import json

    facts = {"data": recipe.data.flat(), "sizes": {k: len(s) for k, s in data.splits.items()}}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fingerprint(folder: Path) -> dict:
    """Which checkpoint the features come from: its size and modification time (no hashing)."""
    ckpt = folder / "checkpoints" / "best.pt"
    st = ckpt.stat()
    return {"checkpoint": str(ckpt), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "format": FEATURES_FORMAT}


def _cached(folder: Path, key: str, split: str, mods: list[str]) -> dict[str, torch.Tensor] | None:
    import json

    import numpy as np

    base = folder / "features" / key
    meta = base / f"{split}.json"
    if not meta.is_file() or json.loads(meta.read_text()) != {**_fingerprint(folder), "modalities": mods}:
        return None
    try:
        return {m: torch.from_numpy(np.load(base / f"{split}-{m}.npy")) for m in mods}
    except (OSError, ValueError):
        return None


def _store(folder: Path, key: str, split: str, feats: dict[str, torch.Tensor]) -> None:
    """Write the features (then their metadata, which marks them complete); a read-only run folder only
    means no cache."""
    from mmtool.data.pipeline import save_npy

    base = folder / "features" / key
    try:
        for m, f in feats.items():
            save_npy(base / f"{split}-{m}.npy", f.numpy())
        write_json(base / f"{split}.json", {**_fingerprint(folder), "modalities": list(feats)})
    except (OSError, UserError) as err:  # atomic writes report a refused write as a UserError
        print(f"warning: features not cached ({str(err).split(';')[0]})", file=sys.stderr)


def unimodal_predictions(
    models: dict[str, MultiModalNet], split, runtime: Runtime | None = None
) -> dict[str, torch.Tensor]:
    """Logits of each one-modality model on its own modality: ``{m: (N, C)}``."""
    runtime = Runtime.of(runtime)
    return {
        m: run_inference(runtime.prepare_model(model), split.select([m]), runtime, want=("logits",))["logits"]
        for m, model in models.items()
    }
