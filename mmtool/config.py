"""Recipes: YAML files validated into typed, frozen dataclasses.

A recipe file is read, merged over its ``base:`` files and the ``key=value`` overrides (see
:mod:`mmtool.recipe_files`), then validated here. Validation is strict: an unknown key, a value of the
wrong type or a missing file raises :class:`~mmtool.errors.UserError` naming the file and the dotted
key, which the CLI prints with exit code 2. Values are coerced and problems worded by
:mod:`mmtool.coercion`; range checks (:mod:`mmtool.checks`) sit next to the fields they constrain. Every
problem of a recipe (unknown keys, wrong types, values out of range, in every section) is collected and
reported in ONE :class:`~mmtool.errors.UserError`, so a recipe is fixed in one round.

The ``data:`` section is :class:`~mmtool.data_config.DataConfig`, validated in :mod:`mmtool.data_config`
against the settings class of the named dataset.

The ``method:`` section is validated against the parameter dataclass that the named method registers
(see :mod:`mmtool.methods`), so each method's options are typed without a catch-all dictionary. A
parameter dataclass that declares ``checked(...)`` fields gets the same range checks; one that does not
is type-checked only (the method's own constructor may still refuse a value).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mmtool.checks import SEED, above, at_least, between, checked, one_of
from mmtool.coercion import WrongType, build, describe, did_you_mean, given, located, raise_problems
from mmtool.data_config import DataConfig, build_data
from mmtool.recipe_files import Layer, RecipeDumper, apply_overrides, deep_merge, read_layer

STAGES = ("prep", "pretrain", "train", "probe", "decide", "ensemble", "utilization")


@dataclass(frozen=True)
class EncoderConfig:
    """One modality's encoder: registry name, its arguments, an input transform, optional weights."""

    name: str = "mlp"
    hidden: tuple[int, ...] = checked((), at_least(1))  # mlp/cnn widths; empty = model.hidden
    args: dict[str, Any] = field(default_factory=dict)  # other constructor arguments of the encoder
    transform: str | None = None  # input transform run on the training device before the encoder (e.g. stft)
    transform_args: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None  # a local file of torchvision-format weights (relative to the recipe)


@dataclass(frozen=True)
class ModelConfig:
    """Encoder per modality and fusion head, by registry name.

    ``encoder``/``hidden`` give every modality the same encoder; ``encoders`` maps a modality to its own
    (VGG-Sound: r3d18 for video, resnet18 on spectrograms for audio) and wins where it names one.
    """

    encoder: str = "mlp"
    # mlp encoder: hidden widths; the last one is the feature size
    hidden: tuple[int, ...] = checked((100,), at_least(1))
    encoders: dict[str, EncoderConfig] = field(default_factory=dict)
    head: str = "linear"
    head_hidden: int = checked(200, at_least(1))  # mlp head only
    # dropout on the features the head reads, in training (PySlowFast MODEL.DROPOUT_RATE, before its projection);
    # the features methods distil or analyses read are not dropped
    head_dropout: float = checked(0.0, between(0, 1, "[)"))
    fusion: str = "late"  # late: encoders meet in the head; mmtm: MMTM modules between encoder blocks


# optim.name -> the keys besides name, lr and weight_decay that its optimizer reads (mmtool.engine.optim passes
# them to the torch class by these names); a recipe that sets a key its optimizer does not read is refused.
OPTIMIZER_KEYS: dict[str, tuple[str, ...]] = {
    "sgd": ("momentum", "nesterov"),
    "adam": (),
    "rmsprop": ("momentum",),
    "adagrad": (),
    "adadelta": (),
    "adamw": (),
}


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer: ``torch.optim`` SGD, Adam, RMSprop, Adagrad, Adadelta or AdamW.

    Paper 000, App. A.3 (Table 12) trains VGG-Sound's late-fusion model (linear head) with "SGD, RMSprop,
    Adagrad, Adadelta, Adamw and Adam" and names no setting of any of them; the only optimizer settings the
    paper gives are Table 11's (VGG-Sound: Adam, lr 1e-3; UCF101: SGD, lr 1e-2). So a recipe sets lr,
    weight_decay and (sgd, rmsprop) momentum, and every other constant (betas, eps, RMSprop's alpha,
    Adadelta's rho, Adagrad's lr_decay) is PyTorch's default: no key sets what the paper does not.
    """

    name: str = checked("sgd", one_of(*OPTIMIZER_KEYS))  # what mmtool.engine.optim builds
    lr: float = checked(0.2, above(0))
    momentum: float = checked(0.0, between(0, 1, "[)"))  # sgd and rmsprop only; 1 would never forget a gradient
    nesterov: bool = False  # sgd only, with momentum > 0 (PySlowFast's SOLVER.NESTEROV is True)
    # every optimizer; adamw's is decoupled (Loshchilov & Hutter) and must be > 0: at 0 AdamW is Adam, and
    # PyTorch's AdamW default (0.01) does not apply, this key's default being 0 for every optimizer
    weight_decay: float = checked(0.0, at_least(0))
    # every optimizer: the weight decay of normalisation layers' weights and biases (None: weight_decay);
    # PySlowFast BN.WEIGHT_DECAY is 0 (slowfast/config/defaults.py; slowfast/models/optimizer.py)
    norm_weight_decay: float | None = checked(None, at_least(0))
    # every optimizer: lambda of paper 002's L1 penalty on all parameters (Sec. 6.3), the loss l1_loss
    # (mmtool.engine.penalties); 0: none
    l1: float = checked(0.0, at_least(0))

    def unused_keys(self) -> list[str]:
        """Keys set away from their defaults that this optimizer does not read."""
        return [k for k in optional_optim_keys() if getattr(self, k) != getattr(OptimConfig, k)
                and k not in OPTIMIZER_KEYS.get(self.name, ())]  # fmt: skip


def optional_optim_keys() -> list[str]:
    """The ``optim`` keys that only some optimizers read."""
    return [f.name for f in dataclasses.fields(OptimConfig)
            if f.name not in ("name", "lr", "weight_decay", "norm_weight_decay", "l1")]  # fmt: skip


def optim_problems(optim: OptimConfig) -> list[str]:
    """What the named optimizer would ignore: a key set away from its default that it does not read (a key
    at its default passes: momentum 0 is no momentum, which every optimizer has), or adamw without decay."""
    problems = [f"key 'optim.{k}': {not_read(optim.name, k)}; remove it" for k in optim.unused_keys()]
    if optim.name == "adamw" and optim.weight_decay == 0:
        problems.append(f"key 'optim.weight_decay': {ADAMW_WITHOUT_DECAY}")
    if optim.name == "sgd" and optim.nesterov and optim.momentum == 0:
        problems.append("key 'optim.nesterov': Nesterov momentum needs optim.momentum > 0")
    return problems


def not_read(name: str, key: str) -> str:
    """Why optimizer ``name`` refuses ``key``: ``adam does not read it (only sgd, rmsprop do)``."""
    return f"{name} does not read it (only {', '.join(n for n, keys in OPTIMIZER_KEYS.items() if key in keys)} do)"


ADAMW_WITHOUT_DECAY = "adamw with weight_decay 0 is adam; set it > 0 (PyTorch's AdamW default is 0.01) or use adam"


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = checked("none", one_of("none", "step", "plateau", "cosine"))
    step_size: int = checked(10, at_least(1))  # step
    gamma: float = checked(0.1, between(0, 1, "(]"))  # step; 1 = constant lr, 0 would stop learning
    patience: int = checked(1, at_least(0))  # plateau (on validation loss)
    factor: float = checked(0.1, between(0, 1, "()"))  # plateau; torch refuses factor >= 1
    # cosine (PySlowFast's lr_policy "cosine" with warm-up, updated every iteration): half a cosine from optim.lr
    # at epoch 0 to end_lr at train.epochs; during the first warmup_epochs the lr rises linearly from
    # warmup_start_lr to the cosine's value at warmup_epochs
    warmup_epochs: float = checked(0.0, at_least(0))
    warmup_start_lr: float = checked(0.0, at_least(0))
    end_lr: float = checked(0.0, at_least(0))


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = checked(100, at_least(1))
    batch_size: int = checked(0, at_least(0))  # 0 = full batch
    eval_every: int = checked(1, at_least(1))  # epochs between validation passes (and best-model selection)
    checkpoint_every: int = checked(10, at_least(0))  # epochs between resumable checkpoints; 0 = only at the end
    # resumable checkpoints inside epochs too: every k optimizer steps and/or every m minutes (0 = off)
    checkpoint_every_steps: int = checked(0, at_least(0))
    checkpoint_every_minutes: float = checked(0.0, at_least(0))
    keep_last: int = checked(2, at_least(1))  # resumable checkpoints kept: last.pt, last.prev.pt, last.prev2.pt, ...
    # keep the weights every k epochs (checkpoints/epoch_*.pt) for probes over training; 0 = none
    snapshot_every: int = checked(0, at_least(0))
    seed: int = checked(0, SEED)
    device: str = "auto"  # auto | cpu | cuda | cuda:N  (auto: CUDA when present; checked by the runtime)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"  # auto: bf16 where the hardware runs it fast
    channels_last: bool = False  # channels_last memory format for 4-D (and channels_last_3d for 5-D) tensors
    # DataLoader worker processes of on-disk datasets (0: read in the training process)
    workers: int = checked(0, at_least(0))
    eval_batch_size: int = checked(0, at_least(0))  # evaluation batch size; 0 = the dataset's default
    # steps between reading the running losses back from the device (progress only)
    log_every: int = checked(50, at_least(1))
    sync_batchnorm: bool = False  # under torchrun: batch-norm statistics over the global batch (nn.SyncBatchNorm)
    # metrics.jsonl is always written; csv adds metrics.csv, tensorboard adds <run>/tensorboard/ event files
    loggers: tuple[str, ...] = checked(("jsonl",), one_of("jsonl", "csv", "tensorboard"))
    # a finished run's last.pt keeps the optimizer and scheduler state (to continue training it later);
    # off: last.pt is cut down to the weights and counters when the run completes (best.pt is kept either way)
    keep_optimizer: bool = False
    # a non-finite training loss: "fail" the run (one line), or "stop" training there and keep the model selected on
    # validation so far (learning-rate sweeps reaching rates where a model diverges; results say diverged_at_epoch)
    on_diverge: Literal["fail", "stop"] = "fail"


@dataclass(frozen=True)
class MethodConfig:
    """``name`` picks a registered method; the other keys are that method's typed parameters."""

    name: str = "naive"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeConfig:
    """Linear classifier trained on frozen features (probe, and decide's multi-modal classifier)."""

    epochs: int = checked(300, at_least(1))
    optim: str = checked("adam", one_of("sgd", "adam"))  # as optim.name
    lr: float = checked(0.01, above(0))
    weight_decay: float = checked(0.0, at_least(0))  # as optim.weight_decay
    batch_size: int = checked(0, at_least(0))  # as train.batch_size: 0 = full batch
    over_training: bool = False  # probe every snapshot of the run (train.snapshot_every) instead of best.pt


@dataclass(frozen=True)
class DecideConfig:
    bootstrap: int = checked(2000, at_least(1))  # paired bootstrap resamples of the test set
    confidence: float = checked(0.95, between(0, 1, "()"))
    umt_recipe: str = "umt.yaml"  # relative to this recipe's folder
    ume_recipe: str = "ume.yaml"


@dataclass(frozen=True)
class EnsembleConfig:
    # mean: (weighted) average of probabilities (UME); entropy: MLA's Eq. 6-8
    combine: str = checked("mean", one_of("mean", "entropy"))
    weights: tuple[float, ...] = checked((), at_least(0))  # mean only: one per modality; empty = plain average


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. ``source`` marks the file it came from (for messages and relative paths)."""

    stage: str
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    method: MethodConfig = MethodConfig()
    probe: ProbeConfig = ProbeConfig()
    decide: DecideConfig = DecideConfig()
    ensemble: EnsembleConfig = EnsembleConfig()
    modalities: tuple[str, ...] = ()  # modalities the stage uses; empty = all of the dataset's
    teachers: str | None = None  # a pretrain-unimodal run directory
    run: str | None = None  # the run directory a probe/utilization analyses
    runs_root: str = "runs"
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, not tuples) with the method parameters inlined, ready for YAML."""
        out = _plain(dataclasses.asdict(self))
        out["data"] = _plain(self.data.flat())  # flat, as recipes write it (no nested settings)
        out["method"] = {"name": self.method.name, **self.method.params}
        out.pop("source")
        return out


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def load_recipe(
    path: str | Path | list[str | Path], overrides: list[str] | None = None, fragment: bool = False, saved: bool = False
) -> Recipe:
    """Read, merge, override and validate a recipe file, or several merged in order (later ones win;
    ``-r recipes/synth-gamma/aux_ce.yaml -r recipes/_base/digits-colored.yaml`` runs a method's
    recipe on another dataset with that dataset's own settings). ``fragment``: a file other recipes
    build on (``base:``), checked key by key without requiring a ``stage``. ``saved``: a run's own
    config.yaml (:func:`build_recipe`)."""
    paths = [Path(p) for p in (path if isinstance(path, list) else [path])]
    files = [read_layer(p) for p in paths]
    raw: dict[str, Any] = {}
    for layer in files:
        raw = deep_merge(raw, layer.merged)
    raw = apply_overrides(raw, overrides, str(paths[0]))
    written = apply_overrides({}, overrides, "command line")  # the keys the overrides write
    command_line = Layer("on the command line", written, written)
    top = Layer(f"in {paths[0]}", {}, raw, (*files, command_line))
    return build_recipe(raw, str(paths[0]), origin=top.origin, overrides=overrides, fragment=fragment, saved=saved)


def build_recipe(
    raw: dict[str, Any],
    source: str,
    origin: Callable[[str], str | None] | None = None,
    overrides: list[str] | None = None,
    fragment: bool = False,
    saved: bool = False,
) -> Recipe:
    """Validate a merged raw recipe; every problem found is reported in one :class:`UserError`.

    ``origin`` maps a dotted key to where its value was written (``"in FILE"``, ``"on the command line"``);
    a wrong-type problem whose value was not written in ``source`` itself says where it was, and an unknown
    key written by one of the ``key=value`` ``overrides`` is blamed on that override. ``fragment``: a
    missing ``stage`` is no problem (a file that other recipes build on). ``saved``: the recipe a run saved
    (its config.yaml), where the data keys every dataset had before datasets owned their settings are
    accepted at their old values and a real dataset's ``n``/``test_fraction`` at their defaults
    (:func:`~mmtool.data_config.build_data`); in a recipe a user writes, both are unknown keys."""
    problems: list[str] = []
    raw = dict(raw)
    raw.pop("source", None)
    method_raw = raw.pop("method", {}) or {}
    data_raw = raw.pop("data", {})
    if "stage" not in raw:
        if not fragment:
            problems.append(f"missing key 'stage' (one of {', '.join(STAGES)})")
    elif isinstance(raw["stage"], str) and raw["stage"] not in STAGES:
        problems.append(f"key 'stage' must be one of {', '.join(STAGES)}, got {raw['stage']!r}")
    # source and method are not built here; a stand-in stage where it is missing or bad (reported above)
    recipe = build(Recipe, raw, "", problems, skip=("source", "method"), stand_in={"stage": STAGES[0]})
    problems += optim_problems(recipe.optim)
    data = build_data(data_raw, "data.", problems, any_dataset=fragment, saved=saved)
    if isinstance(method_raw, dict):
        method = build_method_config(method_raw, problems)
    else:
        problems.append(WrongType("method", f"expected a mapping like {{name: umt}}, got {given(method_raw)}"))
        method = MethodConfig()
    if origin is not None:
        problems = [located(p, source, origin, overrides or []) for p in problems]
    raise_problems(source, problems)
    return dataclasses.replace(recipe, data=data, method=method, source=source)


def build_method_config(raw: dict[str, Any], problems: list[str]) -> MethodConfig:
    """The ``method:`` section, checked against the named method's parameter dataclass; problems are
    appended to ``problems``."""
    from mmtool.methods.params import METHOD_PARAMS  # each method's parameter dataclass, without torch

    schemas: dict[str, type] = dict(METHOD_PARAMS)  # name -> params dataclass
    raw = dict(raw)
    name = raw.pop("name", MethodConfig.name)
    if not isinstance(name, str):
        problems.append(WrongType("method.name", f"expected {describe(str)}, got {given(name)}"))
        return MethodConfig()
    if name not in schemas:
        hint = did_you_mean(name, sorted(schemas))
        problems.append(f"key 'method.name': unknown method {name!r} (known: {', '.join(sorted(schemas))}){hint}")
        return MethodConfig()
    params = build(schemas[name], raw, "method.", problems)
    return MethodConfig(name=name, params=dataclasses.asdict(params))


def save_recipe(recipe: Recipe, path: Path) -> None:
    """Write the resolved recipe as YAML (loadable again with :func:`load_recipe`)."""
    from mmtool.files import atomic_write_text

    atomic_write_text(path, yaml.dump(recipe.to_dict(), Dumper=RecipeDumper, sort_keys=False))


def relative_to_recipe(recipe: Recipe, path: str) -> Path:
    """Resolve a path written inside a recipe relative to the recipe's folder."""
    p = Path(path)
    if p.is_absolute() or not recipe.source:
        return p
    return Path(recipe.source).parent / p


class _Unset:
    """A key one recipe does not have (another method's parameter), shown as ``unset`` in a diff."""

    def __repr__(self) -> str:
        return "unset"


def recipe_changes(old: Recipe, new: Recipe) -> list[str]:
    """``key: old -> new`` for every dotted recipe key whose value differs (what a resume refuses)."""
    return [f"{k}: {a!r} -> {b!r}" for k, (a, b) in _flat_diff(old.to_dict(), new.to_dict()).items()]


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
