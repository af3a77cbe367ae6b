"""Recipes: YAML files validated into typed, frozen dataclasses.

A recipe may name a ``base:`` recipe, or a list of them (paths relative to itself: a dataset fragment and
a method fragment combine); they are deep-merged in order, later ones and then the child winning.
``key=value`` overrides from the command line are applied after merging, with values parsed as YAML
(``optim.lr=0.1``, ``model.hidden=[64,64]``). Validation is strict: an unknown key, a value of the
wrong type or a missing file raises :class:`~mmtool.errors.UserError` naming the file and the dotted
key, which the CLI prints on one line with exit code 2.

The ``method:`` section is validated against the parameter dataclass that the named method registers
(see :mod:`mmtool.methods`), so each method's options are typed without a catch-all dictionary.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from mmtool.errors import UserError

STAGES = ("prep", "pretrain", "train", "probe", "decide", "ensemble", "utilization")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where its prepared cache lives, and how it is split."""

    name: str = "synth-gamma"
    root: str = "data"
    seed: int = 0  # generation + split seed (synthetic sets)
    n: int | None = None  # total samples; None = the paper's size
    test_fraction: float = 0.2  # App. A.10: 80/20 train/test (array sets; real sets have official test splits)
    val_fraction: float = 0.1  # carved from train, used for model selection only
    raw: str | None = None  # prep input of real datasets: the folder holding the published layout
    split: int = 1  # ucf101: official train/test split 1, 2 or 3
    image_size: int = 224  # real sets: side of the square frames the encoders see (App. A.1: 224)
    store_size: int = 256  # vggsound prep: frames stored store_size x store_size (App. A.1: 256)
    clip_frames: int = 32  # vggsound prep: frames sampled uniformly per clip (App. A.1: 32)
    flow_stack: int = 10  # ucf101: x and y flow frames per sample (App. A.1: 10 each, 20 channels)
    rgb_source: str = "auto"  # ucf101 prep: frames (jpegs_256/), video (UCF-101/*.avi) or auto (frames if present)
    audio_seconds: float = 10.0  # vggsound prep: audio cropped or tiled to this length (App. A.1: 10 s)
    sample_rate: int = 16000  # vggsound prep: audio resampled to this rate (App. A.1: 16 kHz)
    augment: bool = True  # real sets: random crops and flips in training (UCF101: App. A.1; VGG-Sound: none)


@dataclass(frozen=True)
class EncoderConfig:
    """One modality's encoder: registry name, its arguments, an input transform, optional weights."""

    name: str = "mlp"
    hidden: tuple[int, ...] = ()  # mlp/cnn widths; empty = model.hidden
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
    hidden: tuple[int, ...] = (100,)  # mlp encoder: hidden widths; the last one is the feature size
    encoders: dict[str, EncoderConfig] = field(default_factory=dict)
    head: str = "linear"
    head_hidden: int = 200  # mlp head only
    fusion: str = "late"  # late: encoders meet in the head; mmtm: MMTM modules between encoder blocks


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"  # sgd | adam
    lr: float = 0.2
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "none"  # none | step | plateau
    step_size: int = 10  # step
    gamma: float = 0.1  # step
    patience: int = 1  # plateau (on validation loss)
    factor: float = 0.1  # plateau


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 0  # 0 = full batch
    eval_every: int = 1  # epochs between validation passes (and best-model selection)
    checkpoint_every: int = 10  # epochs between resumable checkpoints; 0 = only at the end
    snapshot_every: int = 0  # keep the weights every k epochs (checkpoints/epoch_*.pt) for probes over training
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N  (auto: CUDA when present)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"  # auto: bf16 where the hardware runs it fast
    channels_last: bool = False  # channels_last memory format for 4-D (and channels_last_3d for 5-D) tensors
    workers: int = 0  # DataLoader worker processes of on-disk datasets (0: read in the training process)
    eval_batch_size: int = 0  # evaluation batch size; 0 = the dataset's default
    log_every: int = 50  # steps between reading the running losses back from the device (progress only)


@dataclass(frozen=True)
class MethodConfig:
    """``name`` picks a registered method; the other keys are that method's typed parameters."""

    name: str = "naive"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeConfig:
    """Linear classifier trained on frozen features (probe, and decide's multi-modal classifier)."""

    epochs: int = 300
    optim: str = "adam"
    lr: float = 0.01
    weight_decay: float = 0.0
    batch_size: int = 0
    over_training: bool = False  # probe every snapshot of the run (train.snapshot_every) instead of best.pt


@dataclass(frozen=True)
class DecideConfig:
    bootstrap: int = 2000  # paired bootstrap resamples of the test set
    confidence: float = 0.95
    umt_recipe: str = "umt.yaml"  # relative to this recipe's folder
    ume_recipe: str = "ume.yaml"


@dataclass(frozen=True)
class EnsembleConfig:
    combine: str = "mean"  # mean: (weighted) average of probabilities (UME); entropy: MLA's Eq. 6-8
    weights: tuple[float, ...] = ()  # mean only: one per modality; empty = plain average


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. ``source`` marks the file it came from (for messages and relative paths)."""

    stage: str
    description: str = ""
    data: DataConfig = DataConfig()
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
        out["method"] = {"name": self.method.name, **self.method.params}
        out.pop("source")
        return out


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------- loading
def recipes_dir() -> Path:
    """Where the shipped recipes live: $MMTOOL_RECIPES, ./recipes, or the source checkout's recipes/."""
    env = os.environ.get("MMTOOL_RECIPES")
    if env:
        return Path(env)
    here = Path.cwd() / "recipes"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[1] / "recipes"


def resolve_recipe(
    recipe: str | Path | list[Path] | None, dataset: str | None, stage_file: str
) -> Path | list[Path]:
    """Recipe path(s) from ``--recipe`` (repeatable), the ``--dataset`` shortcut
    ``recipes/<dataset>/<stage_file>``, or both: the dataset's recipe, then the ``--recipe`` files merged
    over it (``-d ucf101 -r recipes/_base/smoke/ucf101.yaml``)."""
    files = [Path(r) for r in (recipe if isinstance(recipe, list) else [recipe] if recipe is not None else [])]
    if dataset is not None:
        path = recipes_dir() / dataset / stage_file
        if not path.is_file():
            raise UserError(f"no recipe {path} for dataset {dataset!r} (see `mmtool recipes`)")
        files.insert(0, path)
    if not files:
        raise UserError("give --recipe PATH or --dataset NAME (see `mmtool recipes`)")
    return files[0] if len(files) == 1 else files


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML would silently keep the last one)."""

    def construct_mapping(self, node, deep=False):  # noqa: D102
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"recipe not found: {path}")
    try:
        raw = yaml.load(path.read_text(), Loader=_StrictLoader) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        raise UserError(f"{path}:{where} invalid YAML ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a recipe must be a mapping of keys to values")
    return raw


def _merged_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise UserError(f"{path}: circular 'base' chain")
    raw = read_yaml(path)
    base = raw.pop("base", None)
    if base is None:
        return raw
    bases = [base] if isinstance(base, str) else base
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) for b in bases):
        raise UserError(f"{path}: key 'base' expects a path string or a list of them")
    merged: dict[str, Any] = {}
    for b in bases:  # later fragments win over earlier ones, the recipe over all of them
        merged = deep_merge(merged, _merged_raw(path.parent / b, (*seen, path)))
    return deep_merge(merged, raw)


def deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None, origin: str) -> dict[str, Any]:
    """Apply ``a.b=value`` strings (values parsed as YAML) to a raw recipe dict."""
    out = dict(raw)
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r}: expected key=value (e.g. optim.lr=0.1)")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        node = out
        *parents, last = key.split(".")
        for part in parents:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[last] = value
    return out


def load_recipe(path: str | Path | list[str | Path], overrides: list[str] | None = None) -> Recipe:
    """Read, merge, override and validate a recipe file, or several merged in order (later ones win;
    ``-r recipes/synth-gamma/aux_ce.yaml -r recipes/_base/data/digits-colored.yaml`` runs a method's
    recipe on another dataset with that dataset's own settings)."""
    paths = [Path(p) for p in (path if isinstance(path, list) else [path])]
    raw: dict[str, Any] = {}
    for p in paths:
        raw = deep_merge(raw, _merged_raw(p))
    raw = apply_overrides(raw, overrides, str(paths[0]))
    return build_recipe(raw, str(paths[0]))


def build_recipe(raw: dict[str, Any], source: str) -> Recipe:
    raw = dict(raw)
    raw.pop("source", None)
    method_raw = raw.pop("method", {}) or {}
    if not isinstance(method_raw, dict):
        raise UserError(f"{source}: key 'method' expects a mapping like {{name: umt}}")
    if "stage" not in raw:
        raise UserError(f"{source}: missing key 'stage' (one of {', '.join(STAGES)})")
    recipe = _build(Recipe, raw, source, "")
    if recipe.stage not in STAGES:
        raise UserError(f"{source}: key 'stage' must be one of {', '.join(STAGES)}, got {recipe.stage!r}")
    method = build_method_config(method_raw, source)
    return dataclasses.replace(recipe, method=method, source=source)


def build_method_config(raw: dict[str, Any], source: str) -> MethodConfig:
    from mmtool.methods import METHODS  # the registry knows each method's parameter dataclass

    raw = dict(raw)
    name = raw.pop("name", MethodConfig.name)
    if not isinstance(name, str):
        raise UserError(f"{source}: key 'method.name' expects str")
    if name not in METHODS:
        raise UserError(f"{source}: key 'method.name': unknown method {name!r} (known: {', '.join(METHODS.names())})")
    params_cls = METHODS.get(name).Params
    params = _build(params_cls, raw, source, "method.")
    return MethodConfig(name=name, params=dataclasses.asdict(params))


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise UserError(f"{source}: key '{prefix.rstrip('.')}' expects a mapping")
    hints = typing.get_type_hints(cls)
    skip = {"source", "method"} if cls is Recipe else set()
    names = {f.name for f in dataclasses.fields(cls)} - skip
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise UserError(f"{source}: unknown key '{prefix}{key}' (known: {', '.join(sorted(names))})")
        kwargs[key] = _coerce(hints[key], value, source, f"{prefix}{key}")
    return cls(**kwargs)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, source, key)
            except UserError:
                continue
        raise _type_error(source, key, tp, value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, source, key + ".")
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise _type_error(source, key, tp, value)
        return tuple(_coerce(item_tp, v, source, key) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(source, key, tp, value)
        _, value_tp = typing.get_args(tp)
        if dataclasses.is_dataclass(value_tp):
            return {k: _build(value_tp, v, source, f"{key}.{k}.") for k, v in value.items()}
        return dict(value)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        raise UserError(f"{source}: key '{key}' must be one of {', '.join(map(str, allowed))}, got {value!r}")
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _type_error(source, key, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(source, key, tp, value)
    if tp in (str, bool):
        if isinstance(value, tp):
            return value
        raise _type_error(source, key, tp, value)
    raise TypeError(f"unsupported recipe field type {tp} for {key}")


def _type_error(source: str, key: str, tp: Any, value: Any) -> UserError:
    hint = ""
    if isinstance(value, str) and tp in (float, int):
        hint = " (write floats with a dot, e.g. 1.0e-2: YAML reads 1e-2 as a string)"
    return UserError(f"{source}: key '{key}' expects {_type_name(tp)}, got {type(value).__name__} {value!r}{hint}")


def save_recipe(recipe: Recipe, path: Path) -> None:
    """Write the resolved recipe as YAML (loadable again with :func:`load_recipe`)."""
    from mmtool.runs import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(recipe.to_dict(), sort_keys=False))


def relative_to_recipe(recipe: Recipe, path: str) -> Path:
    """Resolve a path written inside a recipe relative to the recipe's folder."""
    p = Path(path)
    if p.is_absolute() or not recipe.source:
        return p
    return Path(recipe.source).parent / p
