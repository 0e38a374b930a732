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


class UnknownKey(ConfigError):
    """A key its section does not have; often a right key at the wrong indentation, which
    :meth:`placed` says when the key belongs somewhere else."""

    def __init__(self, key: str, where: str, known: list[str], places: list[str]) -> None:
        self.key, self.where, self.known = key, where, known
        self.places = places
        place = f"in {where}" if where else "at the top level"
        message = f"unknown key {key!r} {place}"
        if places:
            under = " or ".join(places[:3])
            if places == ["the top level"]:
                message += ": is it meant at the top level, not indented?"
            else:
                message += f": is it indented under {under}?"
        else:
            message += f" (known keys: {', '.join(known) or 'none'})"
        super().__init__(message)

    def placed(self, shape: Spec, *, concrete: dict[str, str] | None = None) -> UnknownKey:
        """This error with the places ``shape`` (the whole configuration's) has for its key.

        ``concrete`` renames a generic place (``a service``) to the one the key was found
        in (``services.eos``), so the hint names the section the user is editing.
        """
        places = []
        for place in places_of(self.key, shape):
            for generic, name in (concrete or {}).items():
                if (
                    place == generic
                    or place.startswith(generic + "'s ")
                    or place.startswith(generic + ".")
                ):
                    place = name + place[len(generic) :].replace("'s ", ".", 1)
            if place != (self.where or "the top level") and place not in places:
                places.append(place)
        return UnknownKey(self.key, self.where, self.known, places or self.places)


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

    def __init__(self, item: Spec, each: str | None = None) -> None:
        self.item = item
        self.each = each  # how a hint names one entry ("a service"); default: its path

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
                places = places_of(key, self, base=where)
                raise UnknownKey(str(key), where, sorted(self.fields), places)
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


def _join(label: str, key: str) -> str:
    if not label:
        return key
    return f"{label}'s {key}" if label.startswith(("a ", "an ")) else f"{label}.{key}"


def places_of(key: Any, shape: Spec, *, base: str | None = None) -> list[str]:
    """Where in ``shape`` a section has ``key``, as a hint names them (``a service``,
    ``a service's backend``, ``auth.firebase``, ``the top level``).  With ``base`` (the
    place of ``shape`` itself): only the sections below it, named from there."""
    found: list[str] = []

    def walk(spec: Spec, label: str, top: bool) -> None:
        if isinstance(spec, Fields):
            if key in spec.fields and not top:
                found.append(label)
            for name, child in spec.fields.items():
                walk(child, _join(label, name), False)
        elif isinstance(spec, MapOf):
            walk(spec.item, spec.each or f"an entry of {label}", False)
        elif isinstance(spec, ListOf):
            walk(spec.item, f"an entry of {label}", False)

    if not isinstance(key, str):
        return found
    if base is None and isinstance(shape, Fields) and key in shape.fields:
        found.append("the top level")
    walk(shape, base or "", True)
    return found
