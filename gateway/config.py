"""The gateway's configuration: a registry of services plus global limits.

``GATEWAY_CONFIG`` names a YAML or JSON file.  Without it the gateway runs one service,
``eos``, on the embedded local detector, so a fresh checkout serves requests with no cloud
account.  Sections owned by other modules (``auth``, ``cors``, ``usage``, ``quotas``) are
kept here as plain mappings and parsed by those modules, so adding a feature does not
mean growing this file; each of them declares its shape (:mod:`gateway.schema`) and the
runtime checks them all at start-up.

A service's ``kind`` says what its model does and so which routes and wire formats it
has: ``detection`` (the default: slides tiled, boxes merged), ``classification`` (each
image sent whole, labels and scores back) or ``passthrough`` (any TF Serving model, the
body forwarded unchanged).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
)

DEFAULT_SERVICE = "eos"
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024  # Cloud Functions' own request cap
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_INSTANCES = 16
DEFAULT_MAX_DECODED_MB = 256.0
DEFAULT_DECODE_BUDGET_MB = 384.0  # two 33 MP slides decoding at once
DEFAULT_DECODE_WAIT_S = 5.0
MAX_TRUSTED_PROXIES = 10

DETECTION, CLASSIFICATION, PASSTHROUGH = "detection", "classification", "passthrough"
KINDS = (DETECTION, CLASSIFICATION, PASSTHROUGH)

BACKEND_SCHEMA = Fields(
    {
        "url": STRING,
        "model": STRING,
        "timeout_s": NUMBER,
        "max_batch": INTEGER,
        "max_parallel": INTEGER,
        "retries": INTEGER,
        "auth": STRING,
        "credentials_file": STRING,
    }
)
_COMMON_SERVICE_KEYS = {
    "kind": STRING,
    "backend": BACKEND_SCHEMA,
    "allow": ListOf(STRING),
    "description": STRING,
}
# Keys that mean something only for some kinds; elsewhere they are refused by name.
_KIND_KEYS = {
    DETECTION: {
        "tile": Fields({"width": INTEGER, "height": INTEGER, "overlap": INTEGER}),
        "threshold": NUMBER,
        "labels": ListOf(STRING),
        "cell_size_px": NUMBER,
    },
    CLASSIFICATION: {"labels": ListOf(STRING), "max_side": INTEGER},
    PASSTHROUGH: {"labels": ListOf(STRING)},  # for clients only: the gateway reads no answer
}
SERVICE_SCHEMAS = {
    kind: Fields({**_COMMON_SERVICE_KEYS, **keys}) for kind, keys in _KIND_KEYS.items()
}
LIMITS_SCHEMA = Fields(
    {
        "max_body_bytes": INTEGER,
        "max_pixels": INTEGER,
        "max_instances": INTEGER,
        "max_decoded_mb": NUMBER,
        "decode_budget_mb": NUMBER,
        "decode_wait_s": NUMBER,
    }
)
# The top level; the owned sections are checked by their modules (gateway.runtime).
SCHEMA = Fields(
    {
        "services": MapOf(Owned()),  # each entry by its kind's schema, in _service
        "limits": LIMITS_SCHEMA,
        "demo": BOOL,
        "default_service": STRING,
        "trusted_proxies": INTEGER,
        "auth": Owned(),
        "cors": Owned(),
        "usage": Owned(),
        "quotas": Owned(),
    }
)


@dataclass(frozen=True)
class BackendConfig:
    url: str | None = None  # None: the embedded local detector, in-process
    model: str = DEFAULT_SERVICE
    timeout_s: float = 30.0
    max_batch: int = 1  # tiles per backend request; 1 = one request per tile, in parallel
    max_parallel: int = 8
    retries: int = 2  # only for failures that are safe to retry
    auth: str | None = None  # "google-id-token": send an ID token for audience=url
    credentials_file: str | None = None  # service-account key file for outbound tokens

    @property
    def is_local(self) -> bool:
        return not self.url


@dataclass(frozen=True)
class TileConfig:
    width: int = 960
    height: int = 720
    overlap: int = 128  # >= the largest cell diameter, so every cell is whole in one tile


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    kind: str = DETECTION
    backend: BackendConfig = field(default_factory=BackendConfig)
    tile: TileConfig = field(default_factory=TileConfig)
    threshold: float = 0.3
    # detection: class names of the model; classification: names for a model that answers
    # scores without labels (empty: the model's own labels); passthrough: shown to clients
    labels: tuple[str, ...] = ("eos",)
    cell_size_px: float | None = None  # expected cell diameter; None: the detector estimates it
    max_side: int | None = None  # classification: larger images are downscaled to this side
    allow: tuple[str, ...] | None = None  # principals allowed; None: any authenticated caller
    description: str = ""

    def public(self) -> dict[str, Any]:
        """What ``GET /v1/services`` may show: never URLs' credentials or key material."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "backend": "local" if self.backend.is_local else "tf-serving",
            "model": self.backend.model,
        }
        if self.kind == DETECTION:
            out["tile"] = {
                "width": self.tile.width,
                "height": self.tile.height,
                "overlap": self.tile.overlap,
            }
            out["threshold"] = self.threshold
            out["labels"] = list(self.labels)
            out["cell_size_px"] = self.cell_size_px
        else:
            out["labels"] = list(self.labels)
        if self.kind == CLASSIFICATION:
            out["max_side"] = self.max_side
        out["timeout_s"] = self.backend.timeout_s
        return out


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_instances: int = DEFAULT_MAX_INSTANCES
    # Memory for decoding (gateway.pipeline.decode_budget): one image's decoded size at
    # most, all decodes of this process at once, and how long a decode waits for room.
    max_decoded_mb: float = DEFAULT_MAX_DECODED_MB
    decode_budget_mb: float = DEFAULT_DECODE_BUDGET_MB
    decode_wait_s: float = DEFAULT_DECODE_WAIT_S


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


def _number(value: Any, where: str, *, lo: float, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"{where} must be {bound}, got {value!r}")
    return float(value)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _backend(raw: Mapping[str, Any], service: str) -> BackendConfig:
    where = f"services.{service}.backend"
    url = raw.get("url") or None
    if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        raise ConfigError(f"{where}.url must be an http(s) URL, got {url!r}")
    model = raw.get("model", service)
    if not isinstance(model, str) or not model:
        raise ConfigError(f"{where}.model must be a non-empty string")
    auth = raw.get("auth")
    if auth not in (None, "none", "google-id-token"):
        raise ConfigError(f"{where}.auth must be 'google-id-token' or absent, got {auth!r}")
    return BackendConfig(
        url=url.rstrip("/") if url else None,
        model=model,
        timeout_s=_number(raw.get("timeout_s", 30), f"{where}.timeout_s", lo=0.05),
        max_batch=int(_number(raw.get("max_batch", 1), f"{where}.max_batch", lo=1, hi=64)),
        max_parallel=int(_number(raw.get("max_parallel", 8), f"{where}.max_parallel", lo=1, hi=64)),
        retries=int(_number(raw.get("retries", 2), f"{where}.retries", lo=0, hi=10)),
        auth=None if auth in (None, "none") else auth,
        credentials_file=raw.get("credentials_file"),
    )


def _service(name: str, raw: Mapping[str, Any]) -> ServiceConfig:
    where = f"services.{name}"
    raw = _mapping(raw, where)
    kind = raw.get("kind")
    kind = DETECTION if kind is None else kind
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    schema = SERVICE_SCHEMAS[kind]
    for key in raw:
        if key not in schema.fields and any(key in s.fields for s in SERVICE_SCHEMAS.values()):
            raise ConfigError(f"{where}.{key} does not apply to a service of kind {kind!r}")
    schema.check(raw, where)
    backend = _backend(_mapping(raw.get("backend"), f"{where}.backend"), name)
    if kind != DETECTION and backend.is_local:
        raise ConfigError(
            f"{where}.backend.url is required: a {kind} service runs on a TF Serving model"
        )
    tile_raw = _mapping(raw.get("tile"), f"{where}.tile")
    tile = TileConfig(
        width=int(_number(tile_raw.get("width", 960), f"{where}.tile.width", lo=32)),
        height=int(_number(tile_raw.get("height", 720), f"{where}.tile.height", lo=32)),
        overlap=int(_number(tile_raw.get("overlap", 128), f"{where}.tile.overlap", lo=0)),
    )
    if tile.overlap * 2 > min(tile.width, tile.height):
        raise ConfigError(f"{where}.tile.overlap must be at most half the tile's smaller side")
    labels = raw.get("labels", ["eos"] if kind == DETECTION else [])
    if (
        not isinstance(labels, list)
        or (kind == DETECTION and not labels)
        or not all(isinstance(x, str) and x for x in labels)
    ):
        raise ConfigError(f"{where}.labels must be a non-empty list of strings")
    max_side = raw.get("max_side")
    allow = raw.get("allow")
    if allow is not None and not (
        isinstance(allow, list) and all(isinstance(x, str) for x in allow)
    ):
        raise ConfigError(f"{where}.allow must be a list of principal patterns")
    cell = raw.get("cell_size_px")
    return ServiceConfig(
        name=name,
        kind=kind,
        backend=backend,
        tile=tile,
        threshold=_number(raw.get("threshold", 0.3), f"{where}.threshold", lo=0, hi=1),
        labels=tuple(labels),
        cell_size_px=None if cell is None else _number(cell, f"{where}.cell_size_px", lo=4),
        max_side=None
        if max_side is None
        else int(_number(max_side, f"{where}.max_side", lo=32, hi=16384)),
        allow=None if allow is None else tuple(allow),
        description=str(raw.get("description") or ""),
    )


def _decode_limits(raw: Mapping[str, Any]) -> dict[str, float]:
    max_mb = _number(
        raw.get("max_decoded_mb", DEFAULT_MAX_DECODED_MB), "limits.max_decoded_mb", lo=1
    )
    budget_mb = _number(
        raw.get("decode_budget_mb", max(DEFAULT_DECODE_BUDGET_MB, max_mb)),
        "limits.decode_budget_mb",
        lo=1,
    )
    if budget_mb < max_mb:
        raise ConfigError("limits.decode_budget_mb must be at least limits.max_decoded_mb")
    wait = _number(
        raw.get("decode_wait_s", DEFAULT_DECODE_WAIT_S), "limits.decode_wait_s", lo=0, hi=60
    )
    return {"max_decoded_mb": max_mb, "decode_budget_mb": budget_mb, "decode_wait_s": wait}


def parse_config(raw: Mapping[str, Any], source: str | None = None) -> Config:
    raw = _mapping(raw, "the configuration")
    SCHEMA.check(raw, "")
    services_raw = _mapping(raw.get("services"), "services")
    if not services_raw:
        services_raw = {DEFAULT_SERVICE: {}}
    services: dict[str, ServiceConfig] = {}
    for name, body in services_raw.items():
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"service name {name!r} must be letters, digits, '-' or '_'")
        services[name] = _service(name, body)
    limits_raw = _mapping(raw.get("limits"), "limits")
    limits = Limits(
        max_body_bytes=int(
            _number(
                limits_raw.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES),
                "limits.max_body_bytes",
                lo=1024,
            )
        ),
        max_pixels=int(
            _number(limits_raw.get("max_pixels", DEFAULT_MAX_PIXELS), "limits.max_pixels", lo=1)
        ),
        max_instances=int(
            _number(
                limits_raw.get("max_instances", DEFAULT_MAX_INSTANCES),
                "limits.max_instances",
                lo=1,
            )
        ),
        **_decode_limits(limits_raw),
    )
    trusted = raw.get("trusted_proxies")
    if trusted is not None:
        trusted = int(_number(trusted, "trusted_proxies", lo=0, hi=MAX_TRUSTED_PROXIES))
    auth = raw.get("auth")
    demo = raw.get("demo")
    if demo is not None and not isinstance(demo, bool):
        raise ConfigError("demo must be true or false")
    default = raw.get("default_service")
    if default is not None and default not in services:
        known = ", ".join(sorted(services))
        raise ConfigError(f"default_service {default!r} is not a configured service ({known})")
    return Config(
        services=services,
        limits=limits,
        auth=None if auth is None else _mapping(auth, "auth"),
        cors=_mapping(raw.get("cors"), "cors"),
        usage=_mapping(raw.get("usage"), "usage"),
        quotas=_mapping(raw.get("quotas"), "quotas"),
        demo=demo,
        default_service=default,
        trusted_proxies=trusted,
        source=source,
        raw=raw,
    )


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read ``GATEWAY_CONFIG`` (YAML or JSON); no file means the embedded defaults."""
    path = path if path is not None else os.environ.get("GATEWAY_CONFIG") or None
    if path is None:
        return parse_config({}, None)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
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
    return parse_config(raw, str(p))
