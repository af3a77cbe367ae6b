"""Recipes: YAML files validated into typed, frozen dataclasses.

A recipe may name a ``base:`` recipe, or a list of them (paths relative to itself: a dataset fragment and
a method fragment combine); they are deep-merged in order, later ones and then the child winning.
``key=value`` overrides from the command line are applied after merging, with values parsed as YAML
(``optim.lr=0.1``, ``model.hidden=[64,64]``). Validation is strict: an unknown key, a value of the
wrong type or a missing file raises :class:`~mmtool.errors.UserError` naming the file and the dotted
key, which the CLI prints with exit code 2.

Numbers and lists read as people write them, in files and overrides alike: ``1e-3`` is a float (YAML 1.2;
PyYAML's YAML 1.1 would make it a string), an int is taken where a float is expected (``lr: 1`` is 1.0),
but a bool is never a number nor a number a bool, and one value stands for a list of one
(``hidden: 32`` is ``(32,)``). A value of the wrong type is reported with the type expected, in words,
and where the value was written when that is a base file or the command line.

Range checks sit next to the fields they constrain: ``epochs: int = checked(100, at_least(1))``. A check
is data (:class:`Check`), not code, so the table of constraints can be read off the dataclasses. Every
problem of a recipe (unknown keys, wrong types, values out of range, in every section) is collected and
reported in ONE :class:`~mmtool.errors.UserError`: one problem reads ``FILE: problem`` on one line; several
read ``FILE: N problems:`` followed by one indented line per problem, so a recipe is fixed in one round.

The ``method:`` section is validated against the parameter dataclass that the named method registers
(see :mod:`mmtool.methods`), so each method's options are typed without a catch-all dictionary. A
parameter dataclass that declares ``checked(...)`` fields gets the same range checks; one that does not
is type-checked only (the method's own constructor may still refuse a value).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from mmtool.errors import UserError

STAGES = ("prep", "pretrain", "train", "probe", "decide", "ensemble", "utilization")


# ------------------------------------------------------------------------------------------- range checks
@dataclass(frozen=True)
class Check:
    """A constraint on a recipe number (each item, for a tuple): bounds, open or closed, or a set of
    allowed values. ``None`` (an optional value left unset) always passes; NaN and infinities never do."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # True: lo itself is refused
    hi_open: bool = False
    choices: tuple[Any, ...] = ()

    def problem(self, value: Any) -> str | None:
        """``"must be ..."`` when ``value`` breaks the check, else None."""
        if value is None:
            return None
        if self.choices:
            values = value if isinstance(value, (list, tuple)) else (value,)  # a list: each of its items
            return None if all(v in self.choices for v in values) else str(self)
        if isinstance(value, float) and not math.isfinite(value):
            return str(self).replace("must be", "must be a finite number", 1)
        low_ok = self.lo is None or (value > self.lo if self.lo_open else value >= self.lo)
        high_ok = self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)
        return None if low_ok and high_ok else str(self)

    def __str__(self) -> str:
        if self.choices:
            return "must be one of " + ", ".join(map(str, self.choices))
        if self.hi is None:
            return f"must be {'>' if self.lo_open else '>='} {self.lo}"
        if self.lo is None:
            return f"must be {'<' if self.hi_open else '<='} {self.hi}"
        return f"must be in {'(' if self.lo_open else '['}{self.lo}, {self.hi}{')' if self.hi_open else ']'}"


def at_least(lo: float) -> Check:
    return Check(lo=lo)


def above(lo: float) -> Check:
    return Check(lo=lo, lo_open=True)


def between(lo: float, hi: float, bounds: str = "[]") -> Check:
    """``bounds`` as written in maths: "[)" is lo <= x < hi, "(]" is lo < x <= hi."""
    return Check(lo=lo, hi=hi, lo_open=bounds[0] == "(", hi_open=bounds[1] == ")")


def one_of(*choices: Any) -> Check:
    return Check(choices=choices)


def checked(default: Any, check: Check, picks_samples: bool = False) -> Any:
    """A dataclass field with a default and a range check (read by the recipe validator). ``picks_samples``:
    a dataset setting that decides which samples fall in which split (UCF101's ``split``); runs combined
    by a later stage must agree on it (see :meth:`DataConfig.sample_keys`)."""
    return field(default=default, metadata={"check": check, "picks_samples": picks_samples})


SEED = at_least(0)  # numpy's SeedSequence refuses negative seeds


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where its prepared cache lives, which samples a run sees, and the dataset's own settings.

    The fields here are the keys every dataset has: its name, where its cache (``root``) and published copy
    (``raw``) live, and what decides which samples fall in which split (``seed``, ``n``, the fractions), the
    keys that :func:`~mmtool.stages.common.check_same_data` compares between runs and that the shared cache
    helpers read. Real sets with official test splits ignore ``n`` and ``test_fraction``. Everything else is
    the dataset's: ``settings`` is an instance of the settings class its spec registers (see
    :mod:`mmtool.data.settings`), e.g. ``cfg.settings.split`` for UCF101. A recipe writes both flat
    (``data: {name: ucf101, split: 2}``); :meth:`flat` gives them back that way.
    """

    name: str = "synth-gamma"
    root: str = "data"
    seed: int = checked(0, SEED)  # generation + split seed (synthetic sets); validation carving (real sets)
    n: int | None = checked(None, at_least(1))  # total samples; None = the paper's size (families set their minimum)
    # App. A.10: 80/20 train/test (array sets; real sets have official test splits)
    test_fraction: float = checked(0.2, between(0, 1, "()"))
    val_fraction: float = checked(0.1, between(0, 1, "[)"))  # carved from train, used for model selection only
    raw: str | None = None  # prep input of real datasets: the folder holding the published layout
    settings: Any = None  # the dataset's settings object; None: its settings class's defaults

    def __post_init__(self) -> None:
        if self.settings is None:
            cls = _settings_class(self.name)
            if cls is not None:  # an unknown name is reported by validation or the registry lookup
                object.__setattr__(self, "settings", cls())

    def flat(self) -> dict[str, Any]:
        """The common keys and the dataset's settings in one mapping, as a recipe writes them."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "settings"}
        if dataclasses.is_dataclass(self.settings):
            out.update(dataclasses.asdict(self.settings))
        return out

    def sample_keys(self) -> dict[str, Any]:
        """What decides which samples a run sees: seed, size, fractions and the settings that pick samples."""
        out = {k: getattr(self, k) for k in ("name", "seed", "n", "test_fraction", "val_fraction")}
        if dataclasses.is_dataclass(self.settings):
            out.update({f.name: getattr(self.settings, f.name) for f in dataclasses.fields(self.settings)
                        if f.metadata.get("picks_samples")})  # fmt: skip
        return out

    def updated(self, **keys: Any) -> DataConfig:
        """This config with flat keys replaced (common ones or the dataset's), validated as :meth:`of`."""
        return DataConfig.of(**{**self.flat(), **keys})

    @classmethod
    def of(cls, **keys: Any) -> DataConfig:
        """A data config from flat keys, validated as a recipe's ``data:`` section is (one :class:`UserError`
        for every problem): ``DataConfig.of(name="ucf101", split=2)``."""
        problems: list[str] = []
        data = _build_data(dict(keys), "data.", problems)
        _raise_problems("data", problems)
        return data


def _settings_class(name: str) -> type | None:
    from mmtool.data.registry import settings_class  # no torch: the registry's declarations only

    return settings_class(name)


# Keys every dataset had before datasets owned their settings, with the value every saved config.yaml holds
# for a dataset that does not use them. Such a key at that value is dropped (run folders made before keep
# loading and resuming); at any other value it is an unknown key of the dataset.
LEGACY_DATA_KEYS: dict[str, Any] = {
    "split": 1, "image_size": 224, "store_size": 256, "clip_frames": 32, "flow_stack": 10, "rgb_source": "auto",
    "audio_seconds": 10.0, "sample_rate": 16000, "augment": True, "front_view": 0, "rear_view": 6,
}  # fmt: skip


def legacy_flat_data(flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` (a :meth:`DataConfig.flat`) with the legacy keys it lacks at their legacy values: what a
    recipe resolved to before datasets owned their settings (identities computed then stay the same)."""
    return {**LEGACY_DATA_KEYS, **flat}


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
    fusion: str = "late"  # late: encoders meet in the head; mmtm: MMTM modules between encoder blocks


@dataclass(frozen=True)
class OptimConfig:
    name: str = checked("sgd", one_of("sgd", "adam"))  # what mmtool.engine.optim builds
    lr: float = checked(0.2, above(0))
    momentum: float = checked(0.0, between(0, 1, "[)"))  # sgd only; 1 would never forget a gradient
    weight_decay: float = checked(0.0, at_least(0))


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = checked("none", one_of("none", "step", "plateau"))
    step_size: int = checked(10, at_least(1))  # step
    gamma: float = checked(0.1, between(0, 1, "(]"))  # step; 1 = constant lr, 0 would stop learning
    patience: int = checked(1, at_least(0))  # plateau (on validation loss)
    factor: float = checked(0.1, between(0, 1, "()"))  # plateau; torch refuses factor >= 1


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
        check_recipe_dataset(dataset)
        path = recipes_dir() / dataset / stage_file
        if not path.is_file():
            raise UserError(f"no recipe {path} for dataset {dataset!r} (see `mmtool recipes`)")
        files.insert(0, path)
    if not files:
        raise UserError("give --recipe PATH or --dataset NAME (see `mmtool recipes`)")
    return files[0] if len(files) == 1 else files


def recipe_datasets() -> list[str]:
    """The datasets with a recipes folder (what ``--dataset NAME`` accepts)."""
    root = recipes_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))


def check_recipe_dataset(dataset: str) -> None:
    """Refuse a ``--dataset`` without a recipes folder in one line, with the closest names."""
    known = recipe_datasets()
    if dataset in known:
        return
    raise UserError(f"no recipes for dataset {dataset!r} in {recipes_dir()}{did_you_mean(dataset, known)} "
                    f"(datasets: {', '.join(known) or 'none'}; see `mmtool recipes`)")  # fmt: skip


def did_you_mean(word: str, choices: list[str], prefix: str = "") -> str:
    """``"; did you mean 'x'?"`` for the name closest to ``word`` (``'x' or 'y'`` for names equally close),
    else ``""``."""
    close = difflib.get_close_matches(word, choices, n=3)
    if not close:
        return ""
    ratio = [difflib.SequenceMatcher(None, word, c).ratio() for c in close]
    close = [c for c, r in zip(close, ratio, strict=True) if r == ratio[0]]
    return "; did you mean " + " or ".join(f"'{prefix}{c}'" for c in close) + "?"


# YAML 1.2 floats that YAML 1.1 (PyYAML) reads as strings: an exponent without a dot or without a sign
# (1e-3, 5E+2, -2e-4, 1.0e3, .5e3). Numbers with a dot and a signed exponent are floats in both.
_FLOAT_1_2 = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$")
_FLOAT_TAG = "tag:yaml.org,2002:float"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML would silently keep the last one) and reads
    ``1e-3`` as the float people mean (YAML 1.2), not as the string YAML 1.1 makes of it. Recipe files and
    ``key=value`` override values both go through it, so a number reads the same in either place."""

    def construct_mapping(self, node, deep=False):  # noqa: D102
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _RecipeDumper(yaml.SafeDumper):
    """SafeDumper that resolves plain scalars as :class:`_StrictLoader` does, so that a string such as
    ``"1e-3"`` is written quoted and a saved recipe loads back with the same types."""


# appended after YAML 1.1's own resolvers: ints and 1.1 floats still resolve first, as before
for _cls in (_StrictLoader, _RecipeDumper):
    _cls.add_implicit_resolver(_FLOAT_TAG, _FLOAT_1_2, list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """``text`` read as a recipe value: YAML with 1.2 floats and no duplicate keys (see :class:`_StrictLoader`)."""
    return yaml.load(text, Loader=_StrictLoader)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"recipe not found: {path}")
    try:
        raw = parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        raise UserError(f"{path}:{where} invalid YAML ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a recipe must be a mapping of keys to values")
    return raw


@dataclass(frozen=True)
class _Layer:
    """One source of raw recipe keys (a file, or the command line) and the layers it was merged over.

    Kept so that a problem can say where its value was written: with ``base:`` chains and several
    ``--recipe`` files, the file a user passed is often not the one holding the bad value."""

    where: str  # "in FILE" or "on the command line"
    raw: dict[str, Any]  # the keys this source writes itself
    merged: dict[str, Any]  # those keys merged over the bases
    bases: tuple[_Layer, ...] = ()

    def origin(self, key: str) -> str | None:
        """Where the value at dotted ``key`` (``a.b`` or ``a.b[2]``) was written: this layer if it writes
        the key itself, else the last base whose merged keys hold it; None if this layer does not hold it."""
        if not _holds(self.merged, key):
            return None
        if _holds(self.raw, key):
            return self.where
        for base in reversed(self.bases):
            if (found := base.origin(key)) is not None:
                return found
        return None


def _holds(raw: dict[str, Any], key: str) -> bool:
    node: Any = raw
    for part in key.split("[", 1)[0].split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _read_layer(shown: Path, seen: tuple[Path, ...] = ()) -> _Layer:
    """The recipe file ``shown`` (as the user or a ``base:`` key names it) merged over its bases."""
    path = shown.resolve()
    if path in seen:
        raise UserError(f"{path}: circular 'base' chain")
    raw = read_yaml(path)
    base = raw.pop("base", None)
    if base is None:
        return _Layer(f"in {shown}", raw, raw)
    bases = [base] if isinstance(base, str) else base
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) for b in bases):
        raise UserError(f"{path}: key 'base' expects a path string or a list of them")
    layers = tuple(_read_layer(Path(os.path.normpath(shown.parent / b)), (*seen, path)) for b in bases)
    merged: dict[str, Any] = {}
    for layer in layers:  # later fragments win over earlier ones, the recipe over all of them
        merged = deep_merge(merged, layer.merged)
    return _Layer(f"in {shown}", raw, deep_merge(merged, raw), layers)


def recipe_bases(path: Path, seen: frozenset[Path] = frozenset()) -> set[Path]:
    """The files ``path`` builds on through ``base:``, and theirs, resolved; a file that does not read
    (missing, not YAML) names none here: loading it reports why."""
    try:
        base = read_yaml(Path(path)).get("base")
    except UserError:
        return set()
    names = [base] if isinstance(base, str) else base if isinstance(base, list) else []
    found = {(Path(path).parent / b).resolve() for b in names if isinstance(b, str)}
    for parent in found - seen:
        found |= recipe_bases(parent, seen | found)
    return found


def is_fragment(path: Path, included: set[Path]) -> bool:
    """Whether ``path`` is a fragment other recipes build on rather than a recipe: a file under a ``_base``
    folder, or one in ``included`` (the bases of other recipes) with no ``stage`` of its own or its bases."""
    if "_base" in Path(path).resolve().parts:
        return True
    if Path(path).resolve() not in included:
        return False
    try:
        return "stage" not in _read_layer(Path(path)).merged
    except UserError:
        return False


def deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def check_overrides(overrides: list[str] | None) -> None:
    """Refuse, in one line, a ``key=value`` that is not one, or a key given twice: with two values on
    one command line, which was meant is not for the last one to decide silently."""
    seen: dict[str, str] = {}
    for item in overrides or []:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r}: expected key=value (e.g. optim.lr=0.1)")
        if key in seen:
            raise UserError(f"override {key!r} given twice: {seen[key]} and {item}; give it once")
        seen[key] = item


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None, origin: str) -> dict[str, Any]:
    """Apply ``a.b=value`` strings to a raw recipe dict. Values are read by the recipe files' own YAML
    loader (``optim.lr=1e-3`` is a float, as in a file); text that is not valid YAML is kept as a string."""
    out = dict(raw)
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r}: expected key=value (e.g. optim.lr=0.1)")
        try:
            value = parse_yaml(text) if text else ""
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


def load_recipe(
    path: str | Path | list[str | Path], overrides: list[str] | None = None, fragment: bool = False
) -> Recipe:
    """Read, merge, override and validate a recipe file, or several merged in order (later ones win;
    ``-r recipes/synth-gamma/aux_ce.yaml -r recipes/_base/digits-colored.yaml`` runs a method's
    recipe on another dataset with that dataset's own settings). ``fragment``: a file other recipes
    build on (``base:``), checked key by key without requiring a ``stage``."""
    paths = [Path(p) for p in (path if isinstance(path, list) else [path])]
    files = [_read_layer(p) for p in paths]
    raw: dict[str, Any] = {}
    for layer in files:
        raw = deep_merge(raw, layer.merged)
    raw = apply_overrides(raw, overrides, str(paths[0]))
    written = apply_overrides({}, overrides, "command line")  # the keys the overrides write
    command_line = _Layer("on the command line", written, written)
    top = _Layer(f"in {paths[0]}", {}, raw, (*files, command_line))
    return build_recipe(raw, str(paths[0]), origin=top.origin, overrides=overrides, fragment=fragment)


def build_recipe(
    raw: dict[str, Any],
    source: str,
    origin: Callable[[str], str | None] | None = None,
    overrides: list[str] | None = None,
    fragment: bool = False,
) -> Recipe:
    """Validate a merged raw recipe; every problem found is reported in one :class:`UserError`.

    ``origin`` maps a dotted key to where its value was written (``"in FILE"``, ``"on the command line"``);
    a wrong-type problem whose value was not written in ``source`` itself says where it was, and an unknown
    key written by one of the ``key=value`` ``overrides`` is blamed on that override. ``fragment``: a
    missing ``stage`` is no problem (a file that other recipes build on)."""
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
    recipe = _build(Recipe, raw, "", problems)
    data = _build_data(data_raw, "data.", problems, any_dataset=fragment)
    if isinstance(method_raw, dict):
        method = build_method_config(method_raw, problems)
    else:
        problems.append(_WrongType("method", f"expected a mapping like {{name: umt}}, got {_given(method_raw)}"))
        method = MethodConfig()
    if origin is not None:
        problems = [_located(p, source, origin, overrides or []) for p in problems]
    _raise_problems(source, problems)
    return dataclasses.replace(recipe, data=data, method=method, source=source)


def _raise_problems(source: str, problems: list[str]) -> None:
    """Raise one :class:`UserError` listing every problem: ``FILE: problem`` for one, else
    ``FILE: N problems:`` and one indented line each."""
    if len(problems) == 1:  # a mistyped override is the command line's, not the recipe file's
        raise UserError(problems[0] if isinstance(problems[0], _Override) else f"{source}: {problems[0]}")
    if problems:
        raise UserError(f"{source}: {len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems))


def build_method_config(raw: dict[str, Any], problems: list[str]) -> MethodConfig:
    """The ``method:`` section, checked against the named method's parameter dataclass; problems are
    appended to ``problems``."""
    from mmtool.methods.params import METHOD_PARAMS  # each method's parameter dataclass, without torch

    schemas: dict[str, type] = dict(METHOD_PARAMS)  # name -> params dataclass
    raw = dict(raw)
    name = raw.pop("name", MethodConfig.name)
    if not isinstance(name, str):
        problems.append(_WrongType("method.name", f"expected {_describe(str)}, got {_given(name)}"))
        return MethodConfig()
    if name not in schemas:
        hint = did_you_mean(name, sorted(schemas))
        problems.append(f"key 'method.name': unknown method {name!r} (known: {', '.join(sorted(schemas))}){hint}")
        return MethodConfig()
    params = _build(schemas[name], raw, "method.", problems)
    return MethodConfig(name=name, params=dataclasses.asdict(params))


class _Invalid(Exception):
    """A value that cannot be used for its field; ``problem`` is the problem to report."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class _WrongType(str):
    """A wrong-type problem, ``key 'a.b': expected ..., got ...``, that keeps its key apart so that
    :func:`build_recipe` can add where the value was written once the key's origin is known."""

    key: str
    detail: str

    def __new__(cls, key: str, detail: str) -> _WrongType:
        self = super().__new__(cls, f"key '{key}': {detail}")
        self.key = key
        self.detail = detail
        return self


class _Unknown(str):
    """An unknown-key problem, ``unknown key 'a.b' (known: ...); did you mean 'a.c'?``, that keeps its key,
    the known keys and the closest one apart, so that :func:`_located` can blame a ``key=value`` override."""

    key: str
    known: tuple[str, ...]
    hint: str

    owner: str

    def __new__(cls, prefix: str, key: str, known: list[str], dataset: str | None = None) -> _Unknown:
        hint = did_you_mean(key, known, prefix)
        owner = f" for dataset '{dataset}'" if dataset else ""
        text = f"unknown key '{prefix}{key}'{owner} (known: {', '.join(known) or 'none'}){hint}"
        self = super().__new__(cls, text)
        self.key, self.known, self.hint, self.owner = f"{prefix}{key}", tuple(known), hint, owner
        return self


class _Override(str):
    """A problem of a ``key=value`` override, said without the recipe file (which is not at fault)."""


def _located(problem: str, source: str, origin: Callable[[str], str | None], overrides: list[str]) -> str:
    """``problem`` naming where its value was written, when that is not ``source`` (the reported file)."""
    if isinstance(problem, _Unknown):
        return _unknown_override(problem, overrides) if origin(problem.key) == "on the command line" else problem
    if not isinstance(problem, _WrongType):
        return problem
    where = origin(problem.key)
    if where is None or where == f"in {source}":
        return problem
    return f"key '{problem.key}' (set {where}): {problem.detail}"


def _unknown_override(problem: _Unknown, overrides: list[str]) -> str:
    """An unknown key written on the command line, blamed on the override that wrote it (the last one
    whose key is the unknown key or lies below it, as ``optimm.lr=0.1`` for ``optimm``)."""
    written = [o for o in overrides if o.partition("=")[0] == problem.key or o.startswith(problem.key + ".")]
    item = written[-1] if written else problem.key
    tail = problem.hint or f" (known: {', '.join(problem.known) or 'none'})"
    return _Override(f"override '{item}': unknown key '{problem.key}'{problem.owner}{tail}")


def _build(
    cls: type, raw: Any, prefix: str, problems: list[str], also_known: tuple[str, ...] = (), dataset: str | None = None
) -> Any:
    """``cls`` from the mapping ``raw``: keys that are unknown, of the wrong type or out of range are
    appended to ``problems`` and left at their defaults, so that validation goes on past them. An unknown
    key lists ``also_known`` among the known keys and names ``dataset`` (a dataset's settings)."""
    if not isinstance(raw, dict):
        problems.append(_WrongType(prefix.rstrip("."), f"expected a mapping, got {_given(raw)}"))
        return cls() if cls is not Recipe else cls(stage=STAGES[0])
    hints = typing.get_type_hints(cls)
    skip = {"source", "method"} if cls is Recipe else set()
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            problems.append(_Unknown(prefix, str(key), sorted({*fields, *also_known}), dataset))
            continue
        try:
            value = _coerce(hints[key], value, f"{prefix}{key}", problems)
        except _Invalid as err:
            problems.append(err.problem)
            continue
        check = fields[key].metadata.get("check")
        bad = _range_problems(check, value, f"{prefix}{key}") if check else []
        problems.extend(bad)
        if not bad:
            kwargs[key] = value
    if cls is Recipe:
        kwargs.setdefault("stage", STAGES[0])  # a stand-in: a missing or bad stage is reported by build_recipe
    return cls(**kwargs)


def _build_data(raw: Any, prefix: str, problems: list[str], any_dataset: bool = False) -> DataConfig:
    """The ``data:`` section: the common keys into :class:`DataConfig`, the others into the named dataset's
    settings class (an unknown key names the dataset). ``any_dataset``: a fragment that names no dataset
    may hold any dataset's keys, each checked against a dataset that has it."""
    if not isinstance(raw, dict):
        problems.append(_WrongType(prefix.rstrip("."), f"expected a mapping, got {_given(raw)}"))
        return DataConfig()
    common = [f.name for f in dataclasses.fields(DataConfig) if f.name != "settings"]
    data = _build(DataConfig, {k: v for k, v in raw.items() if k in common}, prefix, problems)
    own = {k: v for k, v in raw.items() if k not in common}
    if "name" not in raw and any_dataset:
        _check_any_dataset(own, prefix, problems, common)
        return data
    if raw.get("name", data.name) != data.name:  # a name of the wrong type, reported already
        return data
    cls = _settings_class(data.name)
    if cls is None:
        from mmtool.data.registry import DATASETS  # an unknown name: every registered one, for the message

        known = DATASETS.names()
        hint = did_you_mean(data.name, known)
        problems.append(f"key '{prefix}name': unknown dataset {data.name!r} (known: {', '.join(known)}){hint}")
        return data
    mine = {f.name for f in dataclasses.fields(cls)}
    own = {k: v for k, v in own.items() if k in mine or not _legacy_default(k, v)}
    settings = _build(cls, own, prefix, problems, tuple(common), data.name)
    return dataclasses.replace(data, settings=settings)


def _legacy_default(key: str, value: Any) -> bool:
    """Whether ``key: value`` is a key of :data:`LEGACY_DATA_KEYS` at its legacy value (``True`` is not 1)."""
    legacy = LEGACY_DATA_KEYS.get(key, _MISSING)
    return value == legacy and isinstance(value, bool) == isinstance(legacy, bool)


_MISSING = object()


def _check_any_dataset(own: dict[str, Any], prefix: str, problems: list[str], common: list[str]) -> None:
    """Keys of a fragment that names no dataset: each must be some dataset's, of its type and range."""
    from mmtool.data.registry import known_settings

    owners: dict[str, type] = {}
    for cls in known_settings().values():
        for f in dataclasses.fields(cls):
            owners.setdefault(f.name, cls)
    for key, value in own.items():
        if key in owners:
            _build(owners[key], {key: value}, prefix, problems)
        else:
            problems.append(_Unknown(prefix, str(key), sorted({*owners, *common})))


def _range_problems(check: Check, value: Any, key: str) -> list[str]:
    if isinstance(value, tuple):  # a check on a tuple applies to each item
        items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
    else:
        items = [(key, value)]
    return [f"{k} {why}, got {v!r}" for k, v in items if (why := check.problem(v))]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str, problems: list[str]) -> Any:
    """``value`` as type ``tp``; raises :class:`_Invalid` for a wrong type. Nested dataclasses report
    their own keys' problems into ``problems``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _coerce_union(tp, value, key, problems)
    if tp is DataConfig:
        return _build_data(value, key + ".", problems)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", problems)
    if origin in (tuple, list):
        item_tp = typing.get_args(tp)[0]
        if isinstance(value, (list, tuple)):
            items = [_coerce(item_tp, v, f"{key}[{i}]", problems) for i, v in enumerate(value)]
        elif value is None or value == "" or isinstance(value, dict):
            raise _type_error(key, tp, value)
        else:  # one value where a list is expected: a list of one (hidden: 32 is hidden: [32])
            try:
                items = [_coerce(item_tp, value, key, problems)]
            except _Invalid:
                raise _type_error(key, tp, value) from None
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(key, tp, value)
        _, value_tp = typing.get_args(tp)
        if dataclasses.is_dataclass(value_tp):
            return {k: _build(value_tp, v, f"{key}.{k}.", problems) for k, v in value.items()}
        return dict(value)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        raise _Invalid(f"key '{key}' must be one of {', '.join(map(str, allowed))}, got {value!r}")
    if tp is Any:
        return value
    return _coerce_scalar(tp, value, key)


def _coerce_union(tp: Any, value: Any, key: str, problems: list[str]) -> Any:
    """``value`` as the first member of the union ``tp`` that takes it (None for an optional)."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        found: list[str] = []  # a member's nested problems count only if that member is taken
        try:
            value = _coerce(arg, value, key, found)
        except _Invalid:
            continue
        problems.extend(found)
        return value
    raise _type_error(key, tp, value)


def _coerce_scalar(tp: Any, value: Any, key: str) -> Any:
    """A float (an int is one too), an int, a string or a bool; never a bool for a number."""
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _type_error(key, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(key, tp, value)
    if tp in (str, bool):
        if isinstance(value, tp):
            return value
        raise _type_error(key, tp, value)
    raise TypeError(f"unsupported recipe field type {tp} for {key}")


_WORDS: dict[Any, str] = {
    float: "a number (float)",
    int: "an integer (int)",
    bool: "true or false (bool)",
    str: "a string (str)",
}


def _describe(tp: Any) -> str:
    """A field type in words, for people who write YAML rather than Python type hints."""
    if tp in _WORDS:
        return _WORDS[tp]
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        words = " or ".join(_describe(a) for a in args if a is not type(None))
        return words + (" or null" if type(None) in args else "")
    if origin in (tuple, list):
        return f"{_describe(args[0])} or a list of them"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    return _type_name(tp)


def _given(value: Any) -> str:
    """The value a user wrote, with its YAML-level type: ``'abc' (str)``, ``null``."""
    return "null" if value is None else f"{value!r} ({type(value).__name__})"


def _type_error(key: str, tp: Any, value: Any) -> _Invalid:
    hint = ""
    if isinstance(value, str) and _wants_number(tp) and _is_number(value):
        hint = "; a number in quotes is a string: drop the quotes"
    elif value == "" and typing.get_origin(tp) in (tuple, list):
        hint = "; write [] for an empty list"
    return _Invalid(_WrongType(key, f"expected {_describe(tp)}, got {_given(value)}{hint}"))


def _wants_number(tp: Any) -> bool:
    if tp in (float, int):
        return True
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType, tuple, list):
        return any(_wants_number(a) for a in typing.get_args(tp) if a is not Ellipsis)
    return False


def _is_number(text: str) -> bool:
    """Whether ``text`` is a finite number as YAML would read it unquoted (``nan``/``inf`` are not)."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def save_recipe(recipe: Recipe, path: Path) -> None:
    """Write the resolved recipe as YAML (loadable again with :func:`load_recipe`)."""
    from mmtool.files import atomic_write_text

    atomic_write_text(path, yaml.dump(recipe.to_dict(), Dumper=_RecipeDumper, sort_keys=False))


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
