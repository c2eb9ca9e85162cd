"""A name → builder table, filled by decorators in the modules of one package.

Norms, models, datasets and tasks each keep one `Registry`. Adding a component means adding a file
that calls `@REGISTRY.register("name")`; the package imports all its modules on first lookup, so no
list of components is ever edited by hand.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

from normlab.errors import UserError

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str, config_group: str) -> None:
        self.kind = kind  # "norm", "model", ... used in error messages
        self.package = package  # the package whose modules register entries
        self.config_group = config_group  # where a new entry's YAML goes
        self._entries: dict[str, T] = {}
        self._imported = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(builder: T) -> T:
            if name in self._entries and self._entries[name] is not builder:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = builder
            return builder

        return decorate

    def _import_all(self) -> None:
        if self._imported:
            return
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")
        self._imported = True

    def names(self) -> list[str]:
        self._import_all()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self._import_all()
        if name not in self._entries:
            raise UserError(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())} "
                f"(a new {self.kind} is a module in {self.package.replace('.', '/')}/ "
                f"plus a YAML in configs/{self.config_group}/)"
            )
        return self._entries[name]
