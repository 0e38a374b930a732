"""The process-wide gateway: configuration, services, auth, usage, built once.

Built on the first request rather than at import, so ``functions-framework`` starts
serving immediately and a bad configuration is reported as a clear error line.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from gateway import logs
from gateway.auth import build_authenticator
from gateway.auth.cors import Cors
from gateway.config import Config, load_config
from gateway.registry import ServiceRegistry
from gateway.usage import build_usage


@dataclass
class Gateway:
    config: Config
    services: ServiceRegistry
    auth: Any
    cors: Cors
    usage: Any


def build_gateway(config: Config | None = None) -> Gateway:
    config = config if config is not None else load_config()
    gw = Gateway(
        config=config,
        services=ServiceRegistry(config),
        auth=build_authenticator(config),
        cors=Cors(config),
        usage=build_usage(config),
    )
    logs.emit(
        "INFO",
        "gateway ready",
        config=config.source or "embedded defaults",
        services=sorted(config.services),
    )
    return gw


_lock = threading.Lock()
_gateway: Gateway | None = None


def get_gateway() -> Gateway:
    global _gateway
    gw = _gateway
    if gw is None:
        with _lock:
            if _gateway is None:
                _gateway = build_gateway()
            gw = _gateway
    return gw


def current_gateway() -> Gateway | None:
    """The gateway if this process has built one (shutdown hooks must not build it)."""
    return _gateway


def set_gateway(gw: Gateway | None) -> None:
    """Replace the process-wide gateway (tests and the in-process CLI)."""
    global _gateway
    with _lock:
        _gateway = gw
