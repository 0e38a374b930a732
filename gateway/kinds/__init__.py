"""The kinds of service: what a model does, and so how the gateway serves it.

One line per kind below; each module holds one :class:`~gateway.kinds.base.Kind` named
``KIND`` (``docs/extending.md``).  :func:`register` adds a kind from outside the package
(a plug-in, or a test).
"""

from __future__ import annotations

import importlib

from gateway.kinds.base import Kind

REGISTRY: dict[str, str] = {
    "detection": "gateway.kinds.detection",
    "classification": "gateway.kinds.classification",
    "passthrough": "gateway.kinds.passthrough",
}

_loaded: dict[str, Kind] = {}


def register(kind: Kind, module: str | None = None) -> None:
    """Make ``kind`` known by its name (a kind's module is imported when first named)."""
    REGISTRY[kind.name] = module or type(kind).__module__
    _loaded[kind.name] = kind


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)
    _loaded.pop(name, None)


def get(name: str) -> Kind | None:
    kind = _loaded.get(name)
    if kind is None and name in REGISTRY:
        kind = _loaded[name] = importlib.import_module(REGISTRY[name]).KIND
    return kind


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)
