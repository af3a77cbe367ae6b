"""The ``data:`` section of a recipe: :class:`DataConfig` and its validation.

A dataset's recipe keys are of two kinds. The keys every dataset has (its name, where its cache and
published copy live, the seed, size and fractions that decide which samples fall in which split) are the
fields of :class:`DataConfig`; the others are the fields of the settings class that the dataset's spec
registers (see :mod:`mmtool.data.registry`), kept in ``DataConfig.settings``. A recipe writes both flat
(``data: {name: ucf101, split: 2}``); validation sends the common keys to :class:`DataConfig` and the
rest to the named dataset's settings class, so an unknown key names the dataset. Keys every dataset had
before datasets owned their settings (:data:`LEGACY_DATA_KEYS`) are dropped at their legacy value in the
recipes runs saved (config.yaml), so run folders made before keep loading and resuming; in a recipe a user
writes they are unknown keys of the dataset. Datasets with official test splits (real ones) refuse ``n``
and ``test_fraction``, which would otherwise be read by nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mmtool.checks import SEED, at_least, between, checked, one_of
from mmtool.coercion import Unknown, WrongType, build, did_you_mean, given, raise_problems


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where its prepared cache lives, which samples a run sees, and the dataset's own settings.

    The fields here are the keys every dataset has: its name, where its cache (``root``) and published copy
    (``raw``) live, and what decides which samples fall in which split (``seed``, ``n``, the fractions), the
    keys that :meth:`~mmtool.runs.Run.check_same_data` compares between runs and that the shared cache
    helpers read. Real sets with official test splits refuse ``n`` and ``test_fraction``. Everything else is
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
    # missing modalities (paper 003, Sec. 4.2 / Fig. 2; mmtool.data.missing): each sample's modality is missing
    # with this probability, in every split (``all``, Table 2) or in the training split only (``train``, Fig. 2),
    # for the modalities listed (empty: every modality)
    missing_rate: float = checked(0.0, between(0, 1, "[)"))
    missing_in: str = checked("all", one_of("all", "train"))
    missing_modalities: tuple[str, ...] = ()
    # every modality fed this modality's input (paper 002, Sec. 6.2's duplicated sets; mmtool.data.duplicate)
    duplicate: str | None = None
    settings: Any = None  # the dataset's settings object; None: its settings class's defaults

    def __post_init__(self) -> None:
        if self.settings is None:
            cls = _settings_class(self.name)
            if cls is not None:  # an unknown name is reported by validation or the registry lookup
                object.__setattr__(self, "settings", cls())

    def flat(self) -> dict[str, Any]:
        """The common keys and the dataset's settings in one mapping, as a recipe writes them (without the
        common keys a dataset with official test splits does not use)."""
        unused = UNUSED_WITH_OFFICIAL_SPLITS if getattr(self.settings, "official_splits", False) else ()
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("settings", *unused)}
        if not self.missing_rate:  # complete data: the keys stay out (identities of earlier runs are unchanged)
            out = {k: v for k, v in out.items() if k not in MISSING_KEYS}
        if self.duplicate is None:  # left out as the missing keys, so identities of earlier runs are unchanged
            out.pop("duplicate")
        if dataclasses.is_dataclass(self.settings):
            out.update(dataclasses.asdict(self.settings))
        return out

    def sample_keys(self) -> dict[str, Any]:
        """What decides which samples a run sees: seed, size, fractions and the settings that pick samples."""
        out = {k: getattr(self, k) for k in ("name", "seed", "n", "test_fraction", "val_fraction")}
        if self.missing_rate:  # a model trained on complete data has seen what this run's data lacks
            out.update({k: getattr(self, k) for k in MISSING_KEYS})
        if self.duplicate is not None:  # a model trained on two identical inputs is read with them
            out["duplicate"] = self.duplicate
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
        data = build_data(dict(keys), "data.", problems)
        raise_problems("data", problems)
        return data


MISSING_KEYS = ("missing_rate", "missing_in", "missing_modalities")  # left out of flat() when missing_rate is 0


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


def build_data(
    raw: Any, prefix: str, problems: list[str], any_dataset: bool = False, saved: bool = False
) -> DataConfig:
    """The ``data:`` section: the common keys into :class:`DataConfig`, the others into the named dataset's
    settings class (an unknown key names the dataset). ``any_dataset``: a fragment that names no dataset
    may hold any dataset's keys, each checked against a dataset that has it. ``saved``: a run's saved
    recipe (legacy keys at their old values and unused common keys at their defaults pass)."""
    if not isinstance(raw, dict):
        problems.append(WrongType(prefix.rstrip("."), f"expected a mapping, got {given(raw)}"))
        return DataConfig()
    common = [f.name for f in dataclasses.fields(DataConfig) if f.name != "settings"]
    data = build(DataConfig, {k: v for k, v in raw.items() if k in common}, prefix, problems)
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
    own = {k: v for k, v in own.items() if k in mine or not (saved and _legacy_default(k, v))}
    if getattr(cls, "official_splits", False):
        _check_unused_common(raw, data, prefix, problems, saved)
    settings = build(cls, own, prefix, problems, tuple(common), data.name)
    return dataclasses.replace(data, settings=settings)


UNUSED_WITH_OFFICIAL_SPLITS = ("n", "test_fraction")  # common keys that datasets with official test splits ignore


def _check_unused_common(raw: dict, data: DataConfig, prefix: str, problems: list[str], saved: bool) -> None:
    """A dataset with official test splits: ``n`` and ``test_fraction`` are refused where a recipe sets them
    (a saved recipe holds them at their defaults, which pass)."""
    defaults = DataConfig()
    for key in UNUSED_WITH_OFFICIAL_SPLITS:
        if key in raw and not (saved and getattr(data, key) == getattr(defaults, key)):
            problems.append(f"key '{prefix}{key}': {data.name} has official test splits and does not use it; "
                            "remove it (data.val_fraction sets the validation share)")  # fmt: skip


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
            build(owners[key], {key: value}, prefix, problems)
        else:
            problems.append(Unknown(prefix, str(key), sorted({*owners, *common})))
