"""The dataset registry: a :class:`DatasetSpec` per short name, with the dataset's own settings class.

This module imports no torch and no dataset family: recipe validation (:mod:`mmtool.config`) asks it which
settings class a dataset has, and `mmtool validate` stays instant. Families import it and register
themselves; nothing here imports them at module level, so there is no import cycle between the registry
and the families.

Which modules register datasets, and why a table rather than imports at the bottom of a package: the
built-in family modules are listed in :data:`BUILTIN_FAMILIES` and imported the first time the registry is
asked for a dataset (as :data:`mmtool.methods.METHODS` does for methods), and a package outside mmtool can
add families through the ``mmtool.datasets`` entry-point group (each entry names a module that registers
on import). A dataset registered by code that has already run (a test, a notebook) is found without either.

Settings: each dataset's recipe keys beyond the common ones (:class:`~mmtool.data_config.DataConfig`) are the
fields of its frozen settings dataclass. The built-in families' classes live in :mod:`mmtool.data.settings`
(importable without torch, as methods' ``Params`` in :mod:`mmtool.methods.params`) and registration checks
that a built-in spec names the class listed there; a family from elsewhere declares its class beside its
spec, in its own module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from mmtool.data.settings import BUILTIN_SETTINGS
from mmtool.registry import LazyRegistry

if TYPE_CHECKING:
    from pathlib import Path

    from mmtool.data.cache import Dataset
    from mmtool.data_config import DataConfig

__all__ = ["BUILTIN_FAMILIES", "DATASETS", "DatasetSpec", "PrepOptions", "dataset_settings", "settings_class"]

# the modules that register the built-in datasets, imported on the first lookup of DATASETS
BUILTIN_FAMILIES = (
    "mmtool.data.registry_synthetic",
    "mmtool.data.registry_laziness",
    "mmtool.data.cremad",
    "mmtool.data.food101",
    "mmtool.data.iemocap",
    "mmtool.data.kinetics",
    "mmtool.data.modelnet40",
    "mmtool.data.colored_mnist",
    "mmtool.data.mvsa",
    "mmtool.data.nvgesture",
    "mmtool.data.ucf101",
    "mmtool.data.vggsound",
)
ENTRY_POINTS = "mmtool.datasets"  # entry-point group of families shipped by other packages


@dataclass(frozen=True)
class PrepOptions:
    """How ``prep`` runs (not what it produces): worker processes and the failure budget."""

    workers: int = 0
    max_skip_frac: float = 0.05  # skipped (broken) inputs allowed, as a fraction of the listed ones
    # listed inputs absent on disk allowed, as a fraction of the listed ones: deleted YouTube videos make every
    # real VGG-Sound or Kinetics copy incomplete (10-25%); half of the list gone is more likely a wrong --raw
    max_missing_frac: float = 0.5


@dataclass(frozen=True)
class DatasetSpec:
    """How a dataset family is prepared (raw -> cache) and loaded (cache -> :class:`Dataset`), and its
    settings: ``settings`` is a frozen dataclass whose fields are the dataset's own ``data.*`` recipe keys
    (with ``checked(...)`` ranges); its defaults are what ``mmtool prep NAME`` builds when nothing is given."""

    prepare: Callable[[DataConfig, Path, PrepOptions], dict]
    load: Callable[[DataConfig, Path], Dataset]
    cache_key: Callable[[DataConfig], str]
    description: str
    settings: type
    data_format: int | None = None  # a cache whose manifest names another format is rebuilt by `prep`
    raw_doc: str | None = None  # real datasets: where the published layout `prep --raw DIR` reads is described


class DatasetRegistry(LazyRegistry[DatasetSpec]):
    """The dataset registry: loads the built-in families and the entry-point ones on the first lookup, and
    refuses a spec whose settings is not a dataclass (or, for a built-in name, not its listed class)."""

    def __init__(self) -> None:
        super().__init__("dataset")

    def register(self, name: str) -> Callable[[DatasetSpec], DatasetSpec]:
        add = super().register(name)

        def checked(spec: DatasetSpec) -> DatasetSpec:
            _check_settings(name, spec.settings)
            return add(spec)

        return checked

    def registered(self, name: str) -> DatasetSpec | None:
        """The spec of ``name`` if it is registered already (no family is imported)."""
        return self._items.get(name)

    def load_all(self) -> None:
        for module in BUILTIN_FAMILIES:
            importlib.import_module(module)
        from importlib.metadata import entry_points

        for entry in entry_points(group=ENTRY_POINTS):
            importlib.import_module(entry.value.split(":")[0])


def _check_settings(name: str, settings: type) -> None:
    import dataclasses

    if not (isinstance(settings, type) and dataclasses.is_dataclass(settings)):
        raise TypeError(f"dataset {name!r}: settings must be a frozen dataclass, got {settings!r}")
    if not settings.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"dataset {name!r}: {settings.__name__} must be frozen")
    if name in BUILTIN_SETTINGS and settings is not BUILTIN_SETTINGS[name]:
        raise TypeError(f"dataset {name!r}: settings must be mmtool.data.settings.BUILTIN_SETTINGS[{name!r}]")


DATASETS: DatasetRegistry = DatasetRegistry()


def settings_class(name: str) -> type | None:
    """The settings class of dataset ``name``, None for an unknown name. Built-in names and datasets
    registered already are answered without importing a family (no torch); another name loads the registry."""
    spec = DATASETS.registered(name)
    if spec is not None:
        return spec.settings
    if name in BUILTIN_SETTINGS:
        return BUILTIN_SETTINGS[name]
    return DATASETS.get(name).settings if name in DATASETS else None


def known_settings() -> dict[str, type]:
    """Every dataset's settings class (the built-in ones without torch; others registered so far)."""
    return {**BUILTIN_SETTINGS, **{n: s.settings for n, s in DATASETS._items.items()}}


S = TypeVar("S")


def dataset_settings(cfg: DataConfig, cls: type[S]) -> S:
    """``cfg.settings`` typed as ``cls`` (a family reads its own settings through this). A config of another
    dataset is a bug of the caller, not of the recipe."""
    if not isinstance(cfg.settings, cls):
        raise TypeError(f"data config of {cfg.name!r} holds {type(cfg.settings).__name__}, not {cls.__name__}")
    return cfg.settings
