"""The process-wide gateway: configuration, services, auth, usage, built once.

Built when the process starts (``main.py`` calls :func:`start` at import), so a bad
configuration stops the start with a message naming the key, instead of an instance that
answers every request with an error.  What is slow to make (backends' connections,
Firestore clients, token verifiers' imports) is still made at first use.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from typing import Any

from gateway import auth as auth_section
from gateway import logs
from gateway.auth import build_authenticator
from gateway.auth.cors import Cors
from gateway.catalog import OWNED_SECTIONS, load_config, placed
from gateway.config import Config, ConfigError
from gateway.registry import ServiceRegistry
from gateway.schema import UnknownKey
from gateway.usage import build_usage


@dataclass
class Gateway:
    config: Config
    services: ServiceRegistry
    auth: Any
    cors: Cors
    usage: Any


def check_sections(config: Config) -> None:
    """Unknown keys and wrong types in the sections other modules own, and what only the
    sections together can say (an allow list naming a key no one has); ConfigError."""
    for section, schema in OWNED_SECTIONS.items():
        try:
            schema.check(getattr(config, section), section)
        except UnknownKey as exc:
            raise placed(exc) from None
    auth_section.check(config)


def build_gateway(config: Config | None = None) -> Gateway:
    config = config if config is not None else load_config()
    check_sections(config)
    gw = Gateway(
        config=config,
        services=ServiceRegistry(config),
        auth=build_authenticator(config),
        cors=Cors(config),
        usage=build_usage(config),
    )
    backends = {name: svc.backend.address for name, svc in sorted(config.services.items())}
    logs.emit(
        "INFO",
        "gateway ready: " + ", ".join(f"{name} on {where}" for name, where in backends.items()),
        config=config.source or "embedded defaults",
        services=sorted(config.services),
        backends=backends,
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


def start() -> Gateway:
    """The gateway of this process, built now; a bad configuration ends the process.

    Called when ``main.py`` is imported, before the server listens: the message names the
    file and the key, and the exit status is not zero, so a deployment fails instead of
    serving errors.
    """
    try:
        return get_gateway()
    except ConfigError as exc:
        source = os.environ.get("GATEWAY_CONFIG") or "the embedded defaults"
        text = str(exc)  # a file's own errors start with its name (and line)
        where = "" if text.startswith(source) else f" in {source}"
        message = f"invalid configuration{where}: {text}"
        logs.emit("CRITICAL", f"the gateway cannot start: {message}")
        if logs.text_format() or not sys.stderr.isatty():
            raise SystemExit(1) from None  # said once, by the log line
        raise SystemExit(f"gateway: {message}") from None  # JSON lines: and readably


def reload_if_changed() -> bool:
    """Serve the configuration file as it is now; True when the gateway was rebuilt.

    A reload (SIGHUP) rebuilds the master's gateway (gunicorn's ``on_reload``,
    :mod:`gateway.serving`), then starts new workers forked from it; each worker checks
    the file again as it starts (a reload, or a respawn after a worker died), so it never
    serves an older file than the master.  A file that cannot be read, parsed, checked or
    built keeps the gateway built from the last good one, with an ERROR line: nothing
    raised here may reach gunicorn, whose arbiter exits when a worker cannot boot, and a
    respawned worker inherits the master's last good configuration.
    """
    global _gateway
    gw = _gateway
    if gw is None:
        return False  # built at the first request, from the file as it is then
    try:
        config = load_config()
        if config.raw == gw.config.raw and config.source == gw.config.source:
            return False
        fresh = build_gateway(config)
    except Exception as exc:  # unreadable, not UTF-8, not YAML, a wrong key, a failed build
        what = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
        logs.emit("ERROR", f"configuration not reloaded, the last good one is kept: {what}")
        return False
    with _lock:
        _gateway = fresh
    return True


def current_gateway() -> Gateway | None:
    """The gateway if this process has built one (shutdown hooks must not build it)."""
    return _gateway


def set_gateway(gw: Gateway | None) -> None:
    """Replace the process-wide gateway (the request profiler in bench/)."""
    global _gateway
    with _lock:
        _gateway = gw
