"""Where payloads are sent: the embedded local detector or a TF Serving REST endpoint.

Only a detection service may run on the embedded detector; the configuration requires a
URL for the other kinds, whose payloads only a TF Serving model can take.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the package is imported for its HTTP client too, which needs neither
    from gateway.backends.base import Backend
    from gateway.config import ServiceConfig


def build_backend(service: ServiceConfig) -> Backend:
    """A backend for a service entry: TF Serving when it has a URL, else the local detector."""
    if service.backend.is_local:
        from gateway.backends.local import LocalBackend

        return LocalBackend(service)
    from gateway.backends.tfserving import TFServingBackend

    return TFServingBackend(service)
