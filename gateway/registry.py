"""The registry of services: a config entry becomes a service with its kind and backend.

Backends are built on first use, so a gateway with several services pays only for the
ones that are called (and a cold start builds none).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from gateway.backends import build_backend
from gateway.backends.base import Backend
from gateway.config import DEFAULT_VARIANT, Config, ServiceConfig, VariantConfig
from gateway.errors import UnknownService, echo
from gateway.kinds import Kind
from gateway.kinds import get as kind_of
from gateway.variants import Readiness, Variant, route, shadow_due, variant_config


@dataclass(frozen=True)
class Service:
    config: ServiceConfig
    backend: Backend
    kind: Kind


@dataclass
class Variants:
    """A service's variants, each built at its first request, and which are ready."""

    config: ServiceConfig
    default: Service  # the service as ``registry.get`` gives it
    readiness: Readiness = field(default_factory=Readiness)
    _built: dict[str, Variant] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def names(self) -> list[str]:
        return [v.name for v in self.config.variant_configs()]

    def get(self, name: str) -> Variant:
        found = self._built.get(name)
        if found is not None:
            return found
        cfg = next(v for v in self.config.variant_configs() if v.name == name)
        with self._lock:
            found = self._built.get(name)
            if found is None:
                found = self._built[name] = Variant(name, self._build(cfg))
        return found

    def _build(self, v: VariantConfig) -> Service:
        if v.backend == self.config.backend and v.version is None and v.label is None:
            return self.default  # one backend, one pool, for the same section
        cfg = variant_config(self.config, v)
        backend = build_backend(cfg)
        if v.version is not None or v.label is not None:
            backend = backend.pinned(v.version, v.label)
        return Service(cfg, backend, self.default.kind)

    def choose(self, principal: str | None, request_id: str) -> tuple[Variant, Variant | None]:
        """(the variant that serves, the shadow that sees it too or None)."""
        if not self.config.variants:  # the one variant, without hashing anything
            return self.get(DEFAULT_VARIANT), None
        variants = self.config.variant_configs()
        name = route(self.config.name, variants, principal, request_id, self.readiness.ready)
        shadow = self.config.shadow
        due = shadow is not None and shadow_due(shadow, name, request_id)
        return self.get(name), (self.get(shadow.variant) if due and shadow else None)


class ServiceRegistry:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._services: dict[str, Service] = {}
        self._variants: dict[str, Variants] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return list(self.config.services)

    def get(self, name: str) -> Service:
        svc = self._services.get(name)
        if svc is not None:
            return svc
        cfg = self.config.service(name)
        if cfg is None:
            known = ", ".join(sorted(self.config.services)) or "none"
            raise UnknownService(f"unknown service {echo(name)}; configured services: {known}")
        with self._lock:
            svc = self._services.get(name)
            if svc is None:
                svc = self._services[name] = Service(cfg, build_backend(cfg), kind_of(cfg.kind))
        return svc

    def variants(self, name: str) -> Variants:
        """The variants of a service (one, ``default``, for a service without ``variants``)."""
        found = self._variants.get(name)
        if found is not None:
            return found
        svc = self.get(name)
        with self._lock:
            found = self._variants.get(name)
            if found is None:
                found = self._variants[name] = Variants(svc.config, svc)
        return found
