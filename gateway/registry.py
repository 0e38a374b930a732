"""The registry of services: a config entry becomes a service with its kind and backend.

Backends are built on first use, so a gateway with several services pays only for the
ones that are called (and a cold start builds none).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from gateway.backends import build_backend
from gateway.backends.base import Backend
from gateway.config import Config, ServiceConfig
from gateway.errors import UnknownService, echo
from gateway.kinds import Kind
from gateway.kinds import get as kind_of


@dataclass(frozen=True)
class Service:
    config: ServiceConfig
    backend: Backend
    kind: Kind


class ServiceRegistry:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._services: dict[str, Service] = {}
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
