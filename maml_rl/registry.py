"""Registries of plug-ins: a name → (settings dataclass, class) table per kind.

The kinds whose implementations import torch (envs, algorithms, policies) declare their registry
and every option's settings in a torch-free ``settings`` module; each implementing module
registers its class with a decorator::

    @ALGORITHMS.declare("trpo")          # algorithms/settings.py
    @dataclass
    class TRPOConfig(OuterLoopConfig): ...

    @ALGORITHMS.register("trpo")         # algorithms/trpo.py
    class TRPO: ...

Tracking backends, which import their libraries only when a run starts, do both at once
(``@TRACKERS.register("mlflow", MlflowConfig)``).

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


@dataclass
class Entry:
    """One plug-in: its settings dataclass and the class that implements it (None until the module
    that implements it is imported)."""

    name: str
    config: type
    cls: type | None = None


class Registry:
    """Plug-ins of one kind (``"env"``, ``"policy"``, ``"algorithm"``, ``"tracking"``) by name.

    A kind whose implementations import torch keeps their settings in its torch-free ``settings``
    module (``declare``) and names its ``package``: the package's modules are imported the first
    time an implementation is looked up, so that the schema is read, a command line checked and
    ``--help`` answered without importing torch. A kind whose modules are light declares and
    implements in one place (``register(name, config)``).
    """

    def __init__(self, kind: str, package: str | None = None):
        self.kind = kind
        self.package = package
        self.entries: dict[str, Entry] = {}

    def declare(self, name: str) -> Callable[[type], type]:
        """Decorator of a settings dataclass: the settings of the plug-in ``name``, implemented by a
        class of ``package`` that registers itself with ``register(name)``.

        Raises:
            ValueError: if the decorated class is not a dataclass whose ``name`` defaults to ``name``.
        """

        def decorate(config: type) -> type:
            if not dataclasses.is_dataclass(config) or getattr(config, "name", None) != name:
                raise ValueError(f"{self.kind} {name!r}: its settings must be a dataclass with name = {name!r}")
            self.entries[name] = Entry(name, config)
            return config

        return decorate

    def register(self, name: str, config: type | None = None) -> Callable[[type], type]:
        """Class decorator: the class that implements ``name``, with its settings dataclass ``config``
        (None: the one ``declare`` gave).

        Raises:
            ValueError: if ``config`` is not a dataclass whose ``name`` defaults to ``name``, or
                ``name`` has no settings at all.
        """
        if config is not None:
            self.declare(name)(config)
        elif name not in self.entries:
            raise ValueError(f"{self.kind} {name!r}: no settings declared for it")

        def decorate(cls: type) -> type:
            self.entries[name].cls = cls
            return cls

        return decorate

    def __getitem__(self, name: str) -> Entry:
        """The entry of ``name``, its implementation imported.

        Raises:
            ValueError: ``"algorithm.name='sgd' is not known; available: ['ppo', 'trpo']"``.
            LookupError: settings declared, but no module of ``package`` implements them.
        """
        entry = self.entries.get(name)
        if entry is None:
            raise ValueError(f"{self.kind}.name={name!r} is not known; available: {sorted(self.entries)}")
        if entry.cls is None and self.package:
            import_modules(self.package)
        if entry.cls is None:
            raise LookupError(f"{self.kind} {name!r} has settings but no implementation in {self.package}")
        return entry

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __iter__(self):
        """The entries (settings only: implementations are not imported)."""
        return iter(self.entries.values())

    def schema(self, name: str) -> type | None:
        """The settings dataclass of ``name`` (None for an unknown name), without importing its implementation."""
        entry = self.entries.get(name)
        return entry.config if entry else None

    def settings(self, values: Mapping[str, Any] | Any) -> Any:
        """The settings dataclass of ``values["name"]`` filled from ``values`` (a mapping or a
        settings instance, returned as is); keys the dataclass does not declare are ignored.

        Raises:
            ValueError: for an unknown name.
        """
        if dataclasses.is_dataclass(values) and not isinstance(values, type):
            return values
        config = self.schema(values["name"])
        if config is None:
            raise ValueError(f"{self.kind}.name={values['name']!r} is not known; available: {sorted(self.entries)}")
        names = {f.name for f in dataclasses.fields(config)}
        return config(**{k: _plain(v) for k, v in values.items() if k in names})


def _plain(value: Any) -> Any:
    """Lists and mappings as Python builtins (a DictConfig's children are containers of their own)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


def import_modules(package: str) -> None:
    """Import every module of a plug-in package, so that each registers itself: adding a plug-in
    is adding its module (and its settings and YAML), no list to edit."""
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        importlib.import_module(f"{package}.{module.name}")
