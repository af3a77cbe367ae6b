"""One small name -> object registry, used for datasets, encoders, heads and methods; :class:`LazyRegistry`
imports the modules that register into it on its first lookup (methods, datasets)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from mmtool.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps short names to classes or factories; unknown names raise a :class:`UserError`.

    Example:
        >>> ENCODERS = Registry("encoder")
        >>> @ENCODERS.register("mlp")
        ... class MLPEncoder: ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "none"
            raise UserError(f"unknown {self.kind} {name!r} (known: {known})")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def name_of(self, obj: object) -> str | None:
        """The name ``obj`` (a registered object, or an instance of a registered class) is registered
        under, None if none: what a recipe calls it, for code that must know which kind it holds."""
        for name, item in self._items.items():
            if item is obj or (isinstance(item, type) and type(obj) is item):
                return name
        return None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def items(self) -> list[tuple[str, Any]]:
        return sorted(self._items.items())


class LazyRegistry(Registry[T]):
    """A registry filled by modules imported on its first lookup (:meth:`load_all`), not at import time: the
    modules that register import the registry, so it cannot import them at its own import."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self._loaded = False

    def load_all(self) -> None:
        """Import the modules that register here (called once, before the first lookup)."""
        raise NotImplementedError

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # first: lookups made while those modules import must not recurse
            self.load_all()

    def get(self, name: str) -> T:
        self._load()
        return super().get(name)

    def names(self) -> list[str]:
        self._load()
        return super().names()

    def items(self) -> list[tuple[str, Any]]:
        self._load()
        return super().items()

    def __contains__(self, name: object) -> bool:
        self._load()
        return super().__contains__(name)
