"""Raw recipe values into typed dataclass fields, and the problems found on the way, worded for people.

:func:`build` makes a dataclass (a recipe section, a dataset's settings, a method's parameters) from a
mapping read from YAML, coercing each value to its field's type and applying the field's range check
(:mod:`mmtool.checks`). Numbers and lists read as people write them, in files and overrides alike:
``1e-3`` is a float (YAML 1.2; see :mod:`mmtool.recipe_files`), an int is taken where a float is expected
(``lr: 1`` is 1.0), but a bool is never a number nor a number a bool, and one value stands for a list of
one (``hidden: 32`` is ``(32,)``). A value of the wrong type is reported with the type expected, in words,
and where the value was written when that is a base file or the command line (:func:`located`).

Problems are collected, not raised, so that validation goes on past them; :func:`raise_problems` reports
them all in ONE :class:`~mmtool.errors.UserError`: one problem reads ``FILE: problem`` on one line; several
read ``FILE: N problems:`` followed by one indented line per problem.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union

from mmtool.checks import range_problems
from mmtool.errors import UserError


def did_you_mean(word: str, choices: list[str], prefix: str = "") -> str:
    """``"; did you mean 'x'?"`` for the name closest to ``word`` (``'x' or 'y'`` for names equally close),
    else ``""``."""
    close = difflib.get_close_matches(word, choices, n=3)
    if not close:
        return ""
    ratio = [difflib.SequenceMatcher(None, word, c).ratio() for c in close]
    close = [c for c, r in zip(close, ratio, strict=True) if r == ratio[0]]
    return "; did you mean " + " or ".join(f"'{prefix}{c}'" for c in close) + "?"


class _Invalid(Exception):
    """A value that cannot be used for its field; ``problem`` is the problem to report."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class WrongType(str):
    """A wrong-type problem, ``key 'a.b': expected ..., got ...``, that keeps its key apart so that
    :func:`~mmtool.config.build_recipe` can add where the value was written once the key's origin is known."""

    key: str
    detail: str

    def __new__(cls, key: str, detail: str) -> WrongType:
        self = super().__new__(cls, f"key '{key}': {detail}")
        self.key = key
        self.detail = detail
        return self


class Unknown(str):
    """An unknown-key problem, ``unknown key 'a.b' (known: ...); did you mean 'a.c'?``, that keeps its key,
    the known keys and the closest one apart, so that :func:`located` can blame a ``key=value`` override."""

    key: str
    known: tuple[str, ...]
    hint: str

    owner: str

    def __new__(cls, prefix: str, key: str, known: list[str], dataset: str | None = None) -> Unknown:
        hint = did_you_mean(key, known, prefix)
        owner = f" for dataset '{dataset}'" if dataset else ""
        text = f"unknown key '{prefix}{key}'{owner} (known: {', '.join(known) or 'none'}){hint}"
        self = super().__new__(cls, text)
        self.key, self.known, self.hint, self.owner = f"{prefix}{key}", tuple(known), hint, owner
        return self


class _Override(str):
    """A problem of a ``key=value`` override, said without the recipe file (which is not at fault)."""


def located(problem: str, source: str, origin: Callable[[str], str | None], overrides: list[str]) -> str:
    """``problem`` naming where its value was written, when that is not ``source`` (the reported file)."""
    if isinstance(problem, Unknown):
        return _unknown_override(problem, overrides) if origin(problem.key) == "on the command line" else problem
    if not isinstance(problem, WrongType):
        return problem
    where = origin(problem.key)
    if where is None or where == f"in {source}":
        return problem
    return f"key '{problem.key}' (set {where}): {problem.detail}"


def _unknown_override(problem: Unknown, overrides: list[str]) -> str:
    """An unknown key written on the command line, blamed on the override that wrote it (the last one
    whose key is the unknown key or lies below it, as ``optimm.lr=0.1`` for ``optimm``)."""
    written = [o for o in overrides if o.partition("=")[0] == problem.key or o.startswith(problem.key + ".")]
    item = written[-1] if written else problem.key
    tail = problem.hint or f" (known: {', '.join(problem.known) or 'none'})"
    return _Override(f"override '{item}': unknown key '{problem.key}'{problem.owner}{tail}")


def raise_problems(source: str, problems: list[str]) -> None:
    """Raise one :class:`UserError` listing every problem: ``FILE: problem`` for one, else
    ``FILE: N problems:`` and one indented line each."""
    if len(problems) == 1:  # a mistyped override is the command line's, not the recipe file's
        raise UserError(problems[0] if isinstance(problems[0], _Override) else f"{source}: {problems[0]}")
    if problems:
        raise UserError(f"{source}: {len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems))


def build(
    cls: type,
    raw: Any,
    prefix: str,
    problems: list[str],
    also_known: tuple[str, ...] = (),
    dataset: str | None = None,
    skip: tuple[str, ...] = (),
    stand_in: dict[str, Any] | None = None,
) -> Any:
    """``cls`` from the mapping ``raw``: keys that are unknown, of the wrong type or out of range are
    appended to ``problems`` and left at their defaults, so that validation goes on past them. An unknown
    key lists ``also_known`` among the known keys and names ``dataset`` (a dataset's settings). ``skip``:
    fields that are no keys of ``raw`` (the caller builds them); ``stand_in``: values for required fields
    that are missing or refused (the caller reports those)."""
    stand_in = stand_in or {}
    if not isinstance(raw, dict):
        problems.append(WrongType(prefix.rstrip("."), f"expected a mapping, got {given(raw)}"))
        return cls(**stand_in)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            problems.append(Unknown(prefix, str(key), sorted({*fields, *also_known}), dataset))
            continue
        try:
            value = _coerce(hints[key], value, f"{prefix}{key}", problems)
        except _Invalid as err:
            problems.append(err.problem)
            continue
        check = fields[key].metadata.get("check")
        bad = range_problems(check, value, f"{prefix}{key}") if check else []
        problems.extend(bad)
        if not bad:
            kwargs[key] = value
    return cls(**{**stand_in, **kwargs})


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str, problems: list[str]) -> Any:
    """``value`` as type ``tp``; raises :class:`_Invalid` for a wrong type. Nested dataclasses report
    their own keys' problems into ``problems``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _coerce_union(tp, value, key, problems)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key + ".", problems)
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
            return {k: build(value_tp, v, f"{key}.{k}.", problems) for k, v in value.items()}
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


def describe(tp: Any) -> str:
    """A field type in words, for people who write YAML rather than Python type hints."""
    if tp in _WORDS:
        return _WORDS[tp]
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        words = " or ".join(describe(a) for a in args if a is not type(None))
        return words + (" or null" if type(None) in args else "")
    if origin in (tuple, list):
        return f"{describe(args[0])} or a list of them"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    return _type_name(tp)


def given(value: Any) -> str:
    """The value a user wrote, with its YAML-level type: ``'abc' (str)``, ``null``."""
    return "null" if value is None else f"{value!r} ({type(value).__name__})"


def _type_error(key: str, tp: Any, value: Any) -> _Invalid:
    hint = ""
    if isinstance(value, str) and _wants_number(tp) and _is_number(value):
        hint = "; a number in quotes is a string: drop the quotes"
    elif value == "" and typing.get_origin(tp) in (tuple, list):
        hint = "; write [] for an empty list"
    return _Invalid(WrongType(key, f"expected {describe(tp)}, got {given(value)}{hint}"))


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
