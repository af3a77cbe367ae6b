"""Recipe files: where they are, how they read, how they combine.

A recipe may name a ``base:`` recipe, or a list of them (paths relative to itself: a dataset fragment and
a method fragment combine); they are deep-merged in order, later ones and then the child winning.
``key=value`` overrides from the command line are applied after merging, with values parsed as YAML
(``optim.lr=0.1``, ``model.hidden=[64,64]``). Files and override values are read by one YAML loader, with
YAML 1.2 floats (``1e-3`` is a float; PyYAML's YAML 1.1 would make it a string) and no duplicate keys.
Each source of keys is kept as a :class:`Layer`, so that a problem can say where its value was written.
Validating the merged keys is :mod:`mmtool.config`'s.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmtool.coercion import did_you_mean
from mmtool.errors import UserError


def recipes_dir() -> Path:
    """Where the shipped recipes live: $MMTOOL_RECIPES, ./recipes, or the source checkout's recipes/."""
    env = os.environ.get("MMTOOL_RECIPES")
    if env:
        return Path(env)
    here = Path.cwd() / "recipes"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[1] / "recipes"


def resolve_recipe(recipe: str | Path | list[Path] | None, dataset: str | None, stage_file: str) -> Path | list[Path]:
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


class RecipeDumper(yaml.SafeDumper):
    """SafeDumper that resolves plain scalars as :class:`_StrictLoader` does, so that a string such as
    ``"1e-3"`` is written quoted and a saved recipe loads back with the same types."""


# appended after YAML 1.1's own resolvers: ints and 1.1 floats still resolve first, as before
for _cls in (_StrictLoader, RecipeDumper):
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
class Layer:
    """One source of raw recipe keys (a file, or the command line) and the layers it was merged over.

    Kept so that a problem can say where its value was written: with ``base:`` chains and several
    ``--recipe`` files, the file a user passed is often not the one holding the bad value."""

    where: str  # "in FILE" or "on the command line"
    raw: dict[str, Any]  # the keys this source writes itself
    merged: dict[str, Any]  # those keys merged over the bases
    bases: tuple[Layer, ...] = ()

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


def read_layer(shown: Path, seen: tuple[Path, ...] = ()) -> Layer:
    """The recipe file ``shown`` (as the user or a ``base:`` key names it) merged over its bases."""
    path = shown.resolve()
    if path in seen:
        raise UserError(f"{path}: circular 'base' chain")
    raw = read_yaml(path)
    base = raw.pop("base", None)
    if base is None:
        return Layer(f"in {shown}", raw, raw)
    bases = [base] if isinstance(base, str) else base
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) for b in bases):
        raise UserError(f"{path}: key 'base' expects a path string or a list of them")
    layers = tuple(read_layer(Path(os.path.normpath(shown.parent / b)), (*seen, path)) for b in bases)
    merged: dict[str, Any] = {}
    for layer in layers:  # later fragments win over earlier ones, the recipe over all of them
        merged = deep_merge(merged, layer.merged)
    return Layer(f"in {shown}", raw, deep_merge(merged, raw), layers)


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
        return "stage" not in read_layer(Path(path)).merged
    except UserError:
        return False


def deep_merge(a: dict[str, Any], b: dict[str, Any], path: tuple[str, ...] = ()) -> dict[str, Any]:
    """``b`` over ``a``, dictionaries merged key by key; except in an encoder's spec (``model.encoders.<m>``), where
    a later layer naming another encoder replaces the spec, and one naming another input transform replaces its
    ``transform_args`` (the arguments of the encoder or transform it replaces mean nothing to the new one)."""
    out = dict(a)
    if len(path) == 3 and path[:2] == ("model", "encoders"):
        if b.get("name") is not None and a.get("name") not in (None, b["name"]):
            out = {}
        elif b.get("transform") is not None and a.get("transform") not in (None, b["transform"]):
            out.pop("transform_args", None)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value, (*path, key))
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
