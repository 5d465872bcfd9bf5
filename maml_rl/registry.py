"""Registries of plug-ins: a name → (class, settings dataclass) table per kind.

Each kind declares its registry next to its protocol (``envs/base.py``, ``policies/base.py``,
``algorithms/base.py``, ``tracking/base.py``). A plug-in registers itself with a decorator::

    @ALGORITHMS.register("trpo", TRPOConfig)
    class TRPO: ...

The settings dataclass is the one source of the plug-in's defaults: the app stores it in
Hydra's ConfigStore as ``schema/<kind>/<name>`` (``maml_rl.config.register``), so the option's
YAML in ``conf/<kind>/`` only selects it, and its ``rules`` class variable lists the range checks
run before any work (``{"max_kl": (lambda v: v > 0, "> 0")}``).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass
class Settings:
    """Base of every plug-in's settings dataclass: its registry ``name`` and its range checks,
    ``rules`` = ``{key: (predicate, allowed-text)}``, run on the composed config before any work."""

    name: str = ""
    rules: ClassVar[dict[str, tuple[Callable[[Any], bool], str]]] = {}

    def check(self) -> None:
        """Checks beyond one key's range (files a plug-in reads, keys that depend on each other),
        run by ``validate`` after the rules and before any work; none by default.

        Raises:
            ValueError: one line that names the bad value and what is allowed.
        """


@dataclass(frozen=True)
class Entry:
    """One registered plug-in: the class that implements it and its settings dataclass."""

    name: str
    cls: type
    config: type


class Registry:
    """Plug-ins of one kind (``"env"``, ``"policy"``, ``"algorithm"``, ``"tracking"``) by name."""

    def __init__(self, kind: str):
        self.kind = kind
        self.entries: dict[str, Entry] = {}

    def register(self, name: str, config: type) -> Callable[[type], type]:
        """Class decorator: register the class under ``name`` with its settings dataclass ``config``.

        Raises:
            ValueError: if ``config`` is not a dataclass whose ``name`` defaults to ``name``.
        """
        if not dataclasses.is_dataclass(config) or getattr(config, "name", None) != name:
            raise ValueError(f"{self.kind} {name!r}: its settings must be a dataclass with name = {name!r}")

        def decorate(cls: type) -> type:
            self.entries[name] = Entry(name, cls, config)
            return cls

        return decorate

    def __getitem__(self, name: str) -> Entry:
        """The entry of ``name``.

        Raises:
            ValueError: ``"algorithm.name='sgd' is not known; available: ['ppo', 'trpo']"``.
        """
        if name not in self.entries:
            raise ValueError(f"{self.kind}.name={name!r} is not known; available: {sorted(self.entries)}")
        return self.entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __iter__(self):
        return iter(self.entries.values())

    def settings(self, values: Mapping[str, Any] | Any) -> Any:
        """The settings dataclass of ``values["name"]`` filled from ``values`` (a mapping or a
        settings instance, returned as is); keys the dataclass does not declare are ignored."""
        if dataclasses.is_dataclass(values) and not isinstance(values, type):
            return values
        entry = self[values["name"]]
        names = {f.name for f in dataclasses.fields(entry.config)}
        return entry.config(**{k: _plain(v) for k, v in values.items() if k in names})


def _plain(value: Any) -> Any:
    """Lists and mappings as Python builtins (a DictConfig's children are containers of their own)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


def import_modules(package: str, path: list[str]) -> None:
    """Import every module of a plug-in package, so that each registers itself: adding a plug-in
    is adding its module (and its YAML), no list to edit."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")
