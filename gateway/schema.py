"""Declared shapes of the configuration: every key known, every value of its type.

Each module that owns a section of the configuration declares that section's shape next
to the code that reads it, and the whole file is checked when the process starts.  A
misspelt key (``treshold:``) or a value of the wrong type then stops the start with a
message naming the key and its place, instead of being ignored while the gateway runs on
a default nobody chose.  ``null`` is accepted for every key (YAML writes an empty value
that way) and left to the owning module, which treats it as absent or refuses it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """The configuration file is unusable; raised at start-up, never per request."""


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


class Spec:
    """One node of a shape; :meth:`check` raises :class:`ConfigError` naming ``where``."""

    def check(self, value: Any, where: str) -> None:
        raise NotImplementedError


class Value(Spec):
    def __init__(self, *types: type, name: str) -> None:
        self.types, self.name = types, name

    def check(self, value: Any, where: str) -> None:
        if value is None:
            return
        if isinstance(value, bool) and bool not in self.types:
            ok = False
        else:
            ok = isinstance(value, self.types)
        if not ok:
            raise ConfigError(f"{where} must be {self.name}, got {_type_name(value)}")


BOOL = Value(bool, name="true or false")
NUMBER = Value(int, float, name="a number")
INTEGER = Value(int, name="a whole number")
STRING = Value(str, name="a string")


class Setting(Spec):
    """One key of a section: its type, its default and its bounds, each written here once.

    The dataclass a section becomes takes its defaults from here (:meth:`Fields.default`),
    so a default is never written twice.  Numbers must be finite (``NaN`` and ``.inf``
    pass every comparison) and within ``lo``/``hi``; ``choices`` lists the allowed values.
    """

    def __init__(
        self,
        spec: Spec,
        default: Any = None,
        *,
        lo: float | None = None,
        hi: float | None = None,
        choices: tuple[Any, ...] | None = None,
    ) -> None:
        self.spec, self.default = spec, default
        self.lo, self.hi, self.choices = lo, hi, choices

    def check(self, value: Any, where: str) -> None:
        self.spec.check(value, where)
        if value is None:
            return
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(repr(c) for c in self.choices)
            raise ConfigError(f"{where} must be one of {allowed}, got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{where} must be a finite number, got {value!r}")
            lo, hi = self.lo, self.hi
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                if lo is not None and hi is not None:
                    bound = f"between {lo:g} and {hi:g}"
                else:
                    bound = f">= {lo:g}" if lo is not None else f"<= {hi:g}"
                raise ConfigError(f"{where} must be {bound}, got {value!r}")

    @property
    def numeric_default(self) -> bool:
        """A number with a default: ``null`` is a mistake, not a way to ask for it."""
        return self.default is not None and self.spec in (NUMBER, INTEGER)

    def read(self, value: Any, where: str) -> Any:
        self.check(value, where)
        if value is None:
            return self.default
        if self.spec is INTEGER:
            return int(value)
        if self.spec is NUMBER:
            return float(value)
        return value


class ListOf(Spec):
    def __init__(self, item: Spec) -> None:
        self.item = item

    def check(self, value: Any, where: str) -> None:
        if value is None:
            return
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {_type_name(value)}")
        for i, v in enumerate(value):
            self.item.check(v, f"{where}[{i}]")


class MapOf(Spec):
    """A mapping whose keys are names chosen by the user (principals, services)."""

    def __init__(self, item: Spec) -> None:
        self.item = item

    def check(self, value: Any, where: str) -> None:
        if value is None:
            return
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {_type_name(value)}")
        for k, v in value.items():
            self.item.check(v, f"{where}.{k}")


class Fields(Spec):
    """A mapping with a fixed set of keys, each optional."""

    def __init__(self, fields: Mapping[str, Spec]) -> None:
        self.fields = dict(fields)

    def check(self, value: Any, where: str) -> None:
        if value is None:
            return
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {_type_name(value)}")
        for key, v in value.items():
            spec = self.fields.get(key) if isinstance(key, str) else None
            if spec is None:
                known = ", ".join(sorted(self.fields)) or "none"
                place = f"in {where}" if where else "at the top level"
                raise ConfigError(f"unknown key {key!r} {place} (known keys: {known})")
            spec.check(v, f"{where}.{key}" if where else key)

    def read(self, value: Any, where: str) -> dict[str, Any]:
        """The section checked, every :class:`Setting` with its default filled in."""
        self.check(value, where)
        raw = value if isinstance(value, Mapping) else {}
        out = {}
        for key, spec in self.fields.items():
            place = f"{where}.{key}" if where else key
            v = raw.get(key)
            if v is None and key in raw and isinstance(spec, Setting) and spec.numeric_default:
                raise ConfigError(f"{place} must be {spec.spec.name}, got null")  # type: ignore[attr-defined]
            out[key] = spec.read(v, place) if isinstance(spec, (Setting, Fields)) else v
        return out

    def default(self, key: str) -> Any:
        """A key's default, for the dataclass field that holds it."""
        spec = self.fields[key]
        return spec.default if isinstance(spec, Setting) else None

    def __or__(self, other: Fields) -> Fields:
        return Fields({**self.fields, **other.fields})


class Owned(Spec):
    """A section whose shape its owning module declares and checks (see ``runtime``)."""

    def check(self, value: Any, where: str) -> None:
        return None
