"""Where payloads are sent: the embedded local detector, or a model server spoken to by
one of the outbound protocols below (one line each; ``docs/extending.md``).

A protocol's module is imported when a service names it, so a gateway pays only for the
protocols it is configured with.  A backend without a URL (and without a protocol's
default one) is the embedded detector.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the package is imported for its HTTP client too, which needs none of these
    from gateway.backends.base import Backend, OutboundProtocol
    from gateway.config import ServiceConfig

PROTOCOLS: dict[str, str] = {
    "tfserving": "gateway.backends.tfserving",
    "v2": "gateway.backends.v2",
    "vertex": "gateway.backends.vertex",
}

_loaded: dict[str, OutboundProtocol] = {}


def register_protocol(protocol: OutboundProtocol, module: str) -> None:
    """Make ``protocol`` known by its name (a plug-in, or a test)."""
    PROTOCOLS[protocol.name] = module
    _loaded[protocol.name] = protocol


def unregister_protocol(name: str) -> None:
    PROTOCOLS.pop(name, None)
    _loaded.pop(name, None)


def protocol(name: str) -> OutboundProtocol | None:
    found = _loaded.get(name)
    if found is None and name in PROTOCOLS:
        found = _loaded[name] = importlib.import_module(PROTOCOLS[name]).PROTOCOL
    return found


def protocol_names() -> tuple[str, ...]:
    return tuple(PROTOCOLS)


def build_backend(service: ServiceConfig) -> Backend:
    """A service's backend: its protocol's client when it has a URL, else the embedded
    detector."""
    if service.backend.is_local:
        from gateway.backends.local import LocalBackend

        return LocalBackend(service)
    found = protocol(service.backend.protocol)
    assert found is not None, "the configuration checked the protocol's name"
    return found.client(service)
