"""Range checks on recipe values, declared next to the fields they constrain.

``epochs: int = checked(100, at_least(1))``: a check is data (:class:`Check`), not code, so the table of
constraints can be read off the dataclasses (the recipe sections, each dataset's settings, each method's
parameters), and the recipe validator (:func:`mmtool.coercion.build`) applies them to every value it reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


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
    by a later stage must agree on it (see :meth:`~mmtool.data_config.DataConfig.sample_keys`)."""
    return field(default=default, metadata={"check": check, "picks_samples": picks_samples})


SEED = at_least(0)  # numpy's SeedSequence refuses negative seeds


def range_problems(check: Check, value: Any, key: str) -> list[str]:
    """``KEY must be ..., got VALUE`` for ``value`` (each item of a tuple, as ``KEY[i]``) where it breaks ``check``."""
    if isinstance(value, tuple):  # a check on a tuple applies to each item
        items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
    else:
        items = [(key, value)]
    return [f"{k} {why}, got {v!r}" for k, v in items if (why := check.problem(v))]
