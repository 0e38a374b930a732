"""The gateway's configuration: a registry of services plus global limits.

``GATEWAY_CONFIG`` names a YAML or JSON file.  Without it the gateway runs one service,
``eos``, on the embedded local detector, so a fresh checkout serves requests with no cloud
account.  Sections owned by other modules (``auth``, ``cors``, ``usage``, ``quotas``) are
kept here as plain mappings and parsed by those modules, so adding a feature does not
mean growing this file; each of them declares its shape (:mod:`gateway.schema`) and the
runtime checks them all at start-up.

A service's ``kind`` (:mod:`gateway.kinds`) says what its model does, and its backend's
``protocol`` (:mod:`gateway.backends`) how the model server is spoken to; each declares
the keys it adds to the service's section, and this module checks them through the
:class:`Catalog` it is given.  Every default is written once, in a :class:`Setting`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gateway.schema import (
    BOOL,
    INTEGER,
    NUMBER,
    STRING,
    ConfigError,
    Fields,
    ListOf,
    MapOf,
    Owned,
    Setting,
)

DEFAULT_SERVICE = "eos"
DEFAULT_KIND = "detection"
DEFAULT_PROTOCOL = "tfserving"
MAX_TRUSTED_PROXIES = 10

# Keys of every backend section; a protocol adds its own (gateway.backends).
BACKEND_FIELDS = Fields(
    {
        "protocol": Setting(STRING, DEFAULT_PROTOCOL),
        "url": STRING,  # None: the embedded local detector, in-process
        "model": STRING,  # default: the service's name
        "timeout_s": Setting(NUMBER, 30.0, lo=0.05),
        "max_batch": Setting(INTEGER, 1, lo=1, hi=64),  # tiles per request; 1: in parallel
        "max_parallel": Setting(INTEGER, 8, lo=1, hi=64),
        "retries": Setting(INTEGER, 2, lo=0, hi=10),  # only failures that are safe to retry
        "auth": Setting(STRING, None, choices=("google-id-token", "none")),
        "credentials_file": STRING,  # a service-account key file for outbound tokens
        # A model's answer is read no further than this (502 beyond): the 1 GiB function
        # holds every answer of a slide's parallel requests at once, parsed.
        "max_answer_mb": Setting(NUMBER, 16.0, lo=0.001, hi=1024),
        "max_detections_per_tile": Setting(INTEGER, 1000, lo=1, hi=1_000_000),
    }
)
# Keys of every service; its kind adds its own (gateway.kinds).
SERVICE_FIELDS = Fields(
    {
        "kind": Setting(STRING, DEFAULT_KIND),
        "backend": Owned(),  # BACKEND_FIELDS and its protocol's
        "allow": ListOf(STRING),  # principals allowed; None: any authenticated caller
        "description": Setting(STRING, ""),
    }
)
LIMITS_FIELDS = Fields(
    {
        "max_body_bytes": Setting(INTEGER, 32 * 1024 * 1024, lo=1024),  # Cloud Functions' cap
        "max_pixels": Setting(INTEGER, 40_000_000, lo=1),
        "max_instances": Setting(INTEGER, 16, lo=1),
        # Memory for decoding (gateway.pipeline.decode_budget): one image's decoded size at
        # most, all decodes of this process at once (two 33 MP slides), how long a decode
        # waits for room.
        "max_decoded_mb": Setting(NUMBER, 256.0, lo=1),
        "decode_budget_mb": Setting(NUMBER, 384.0, lo=1),
        "decode_wait_s": Setting(NUMBER, 5.0, lo=0, hi=60),
    }
)
# The top level; the owned sections are checked by their modules (gateway.runtime).
SCHEMA = Fields(
    {
        "services": MapOf(Owned()),  # each entry by its kind's and protocol's fields
        "limits": LIMITS_FIELDS,
        "demo": BOOL,
        "default_service": STRING,
        "trusted_proxies": Setting(INTEGER, None, lo=0, hi=MAX_TRUSTED_PROXIES),
        "auth": Owned(),
        "cors": Owned(),
        "usage": Owned(),
        "quotas": Owned(),
    }
)


class Plugin(Protocol):
    """A kind of service or an outbound protocol, as the configuration sees it: the keys it
    adds to a service or backend section, and the typed options it makes of them."""

    name: str
    fields: Fields

    def options(self, values: dict[str, Any], where: str) -> Any:
        """The typed options; raises ConfigError for what the fields alone cannot say."""
        ...


class ProtocolPlugin(Plugin, Protocol):
    def default_url(self, options: Any) -> str | None:
        """The model server's URL when the section gives none (a cloud API's own)."""
        ...


@dataclass(frozen=True)
class Catalog:
    """The kinds and protocols a configuration may name, looked up by name.

    Passed in by the layer that owns them (:mod:`gateway.catalog`), so this module stays
    at the bottom of the imports and a protocol's module is loaded only when named.
    """

    kind: Callable[[str], Plugin | None]
    protocol: Callable[[str], ProtocolPlugin | None]
    kind_names: tuple[str, ...]
    protocol_names: tuple[str, ...]


@dataclass(frozen=True)
class BackendConfig:
    protocol: str = BACKEND_FIELDS.default("protocol")
    url: str | None = None  # None: the embedded local detector, in-process
    model: str = DEFAULT_SERVICE
    timeout_s: float = BACKEND_FIELDS.default("timeout_s")
    max_batch: int = BACKEND_FIELDS.default("max_batch")
    max_parallel: int = BACKEND_FIELDS.default("max_parallel")
    retries: int = BACKEND_FIELDS.default("retries")
    auth: str | None = None  # "google-id-token": send an ID token for audience=url
    credentials_file: str | None = None
    max_answer_mb: float = BACKEND_FIELDS.default("max_answer_mb")
    max_detections_per_tile: int = BACKEND_FIELDS.default("max_detections_per_tile")
    options: Any = None  # the protocol's own, typed by its module

    @property
    def is_local(self) -> bool:
        return not self.url


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    kind: str = DEFAULT_KIND
    backend: BackendConfig = field(default_factory=BackendConfig)
    allow: tuple[str, ...] | None = None  # principals allowed; None: any authenticated caller
    description: str = ""
    options: Any = None  # the kind's own (tile, threshold, labels...), typed by its module

    @property
    def labels(self) -> tuple[str, ...]:
        """The class or label names a kind declares (empty when it has none)."""
        return tuple(getattr(self.options, "labels", ()) or ())

    def public(self) -> dict[str, Any]:
        """What ``GET /v1/services`` shows of every service (its kind adds its own)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "backend": "local" if self.backend.is_local else self.backend.protocol,
            "protocol": "local" if self.backend.is_local else self.backend.protocol,
            "model": self.backend.model,
            "timeout_s": self.backend.timeout_s,
        }


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = LIMITS_FIELDS.default("max_body_bytes")
    max_pixels: int = LIMITS_FIELDS.default("max_pixels")
    max_instances: int = LIMITS_FIELDS.default("max_instances")
    max_decoded_mb: float = LIMITS_FIELDS.default("max_decoded_mb")
    decode_budget_mb: float = LIMITS_FIELDS.default("decode_budget_mb")
    decode_wait_s: float = LIMITS_FIELDS.default("decode_wait_s")


@dataclass(frozen=True)
class Config:
    services: dict[str, ServiceConfig]
    limits: Limits = field(default_factory=Limits)
    auth: Mapping[str, Any] | None = None
    cors: Mapping[str, Any] = field(default_factory=dict)
    usage: Mapping[str, Any] = field(default_factory=dict)
    quotas: Mapping[str, Any] = field(default_factory=dict)
    demo: bool | None = None  # None: on locally, off on Google Cloud
    default_service: str | None = None  # what POST / serves; None: the only service
    # Proxies in front that append to X-Forwarded-For; None: 1 on Google Cloud, 0 elsewhere.
    trusted_proxies: int | None = None
    source: str | None = None  # the file it came from, for logs
    raw: Mapping[str, Any] = field(default_factory=dict)

    def service(self, name: str) -> ServiceConfig | None:
        return self.services.get(name)

    def default_service_name(self) -> str | None:
        """The service ``POST /`` serves: ``default_service``, or the only one there is."""
        if self.default_service is not None:
            return self.default_service
        return next(iter(self.services)) if len(self.services) == 1 else None


def on_google_cloud() -> bool:
    return bool(os.environ.get("K_SERVICE"))


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _plugin(find: Callable[[str], Plugin | None], names: tuple[str, ...], name: Any, where: str):
    plugin = find(name) if isinstance(name, str) else None
    if plugin is None:
        raise ConfigError(f"{where} must be one of {', '.join(names)}, got {name!r}")
    return plugin


def _refuse_foreign(raw: Mapping[str, Any], own: Fields, others: Fields, where: str, what: str):
    """A key another kind or protocol owns is refused by name, not as a misspelling."""
    for key in raw:
        if key not in own.fields and key in others.fields:
            raise ConfigError(f"{where}.{key} does not apply to {what}")


def _backend(raw: Mapping[str, Any], service: str, catalog: Catalog) -> BackendConfig:
    where = f"services.{service}.backend"
    name = raw.get("protocol")
    if name is None and raw.get("url") is None:
        protocol = None  # the embedded detector: no protocol's module is loaded
        fields = BACKEND_FIELDS
    else:
        protocol = _plugin(
            catalog.protocol,
            catalog.protocol_names,
            DEFAULT_PROTOCOL if name is None else name,
            f"{where}.protocol",
        )
        fields = BACKEND_FIELDS | protocol.fields
    values = fields.read(raw, where)
    own = {k: values.pop(k) for k in (protocol.fields.fields if protocol else ())}
    options = protocol.options(own, where) if protocol else None
    url = values["url"] or (protocol.default_url(options) if protocol else None)
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.url must be an http(s) URL, got {url!r}")
    model = values["model"] if values["model"] is not None else service
    if not model:
        raise ConfigError(f"{where}.model must be a non-empty string")
    values.update(
        url=url.rstrip("/") if url else None,
        model=model,
        auth=None if values["auth"] in (None, "none") else values["auth"],
    )
    return BackendConfig(**values, options=options)


def _service(name: str, raw: Mapping[str, Any], catalog: Catalog) -> ServiceConfig:
    where = f"services.{name}"
    raw = _mapping(raw, where)
    kind_name = raw.get("kind")
    kind = _plugin(
        catalog.kind,
        catalog.kind_names,
        DEFAULT_KIND if kind_name is None else kind_name,
        f"{where}.kind",
    )
    own_fields = SERVICE_FIELDS | kind.fields
    if any(key not in own_fields.fields for key in raw):  # the other kinds, only then
        others = Fields({})
        for other in catalog.kind_names:
            plugin = catalog.kind(other)
            if plugin is not None:
                others = others | plugin.fields
        _refuse_foreign(raw, kind.fields, others, where, f"a service of kind {kind.name!r}")
    values = own_fields.read(raw, where)
    backend = _backend(_mapping(raw.get("backend"), f"{where}.backend"), name, catalog)
    if backend.is_local and not getattr(kind, "embedded", False):
        raise ConfigError(
            f"{where}.backend.url is required: a {kind.name} service runs on a model server"
        )
    roles = None if backend.is_local else getattr(catalog.protocol(backend.protocol), "roles", None)
    role = getattr(kind, "role", None)
    if not backend.is_local and roles is not None and role not in roles:
        raise ConfigError(
            f"{where}.backend.protocol {backend.protocol!r} cannot serve a {kind.name} service "
            f"(its model servers are {', '.join(roles)}s)"
        )
    own = {k: values[k] for k in kind.fields.fields}
    allow = values["allow"]
    return ServiceConfig(
        name=name,
        kind=kind.name,
        backend=backend,
        allow=None if allow is None else tuple(allow),
        description=str(values["description"] or ""),
        options=kind.options(own, where),
    )


def _limits(raw: Mapping[str, Any]) -> Limits:
    values = LIMITS_FIELDS.read(raw, "limits")
    if raw.get("decode_budget_mb") is None:  # room for at least one image at its largest
        values["decode_budget_mb"] = max(values["decode_budget_mb"], values["max_decoded_mb"])
    if values["decode_budget_mb"] < values["max_decoded_mb"]:
        raise ConfigError("limits.decode_budget_mb must be at least limits.max_decoded_mb")
    return Limits(**values)


def parse_config(raw: Mapping[str, Any], source: str | None, catalog: Catalog) -> Config:
    """The configuration checked whole: every key known, every value of its type and range."""
    raw = _mapping(raw, "the configuration")
    top = SCHEMA.read(raw, "")
    services_raw = _mapping(raw.get("services"), "services")
    if not services_raw:
        services_raw = {DEFAULT_SERVICE: {}}
    services: dict[str, ServiceConfig] = {}
    for name, body in services_raw.items():
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"service name {name!r} must be letters, digits, '-' or '_'")
        services[name] = _service(name, body, catalog)
    default = top["default_service"]
    if default is not None and default not in services:
        known = ", ".join(sorted(services))
        raise ConfigError(f"default_service {default!r} is not a configured service ({known})")
    auth = raw.get("auth")
    return Config(
        services=services,
        limits=_limits(_mapping(raw.get("limits"), "limits")),
        auth=None if auth is None else _mapping(auth, "auth"),
        cors=_mapping(raw.get("cors"), "cors"),
        usage=_mapping(raw.get("usage"), "usage"),
        quotas=_mapping(raw.get("quotas"), "quotas"),
        demo=top["demo"],
        default_service=default,
        trusted_proxies=top["trusted_proxies"],
        source=source,
        raw=raw,
    )


def read_config_file(
    path: str | os.PathLike[str] | None = None,
) -> tuple[Mapping[str, Any], str | None]:
    """``GATEWAY_CONFIG`` (YAML or JSON) as a mapping; no file means the embedded defaults."""
    path = path if path is not None else os.environ.get("GATEWAY_CONFIG") or None
    if path is None:
        return {}, None
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read GATEWAY_CONFIG file {str(p)!r}: {exc}") from exc
    if p.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{p}: invalid JSON: {exc}") from exc
    else:
        import yaml  # only needed when a YAML file is given

        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: invalid YAML: {exc}") from exc
    return raw, str(p)
