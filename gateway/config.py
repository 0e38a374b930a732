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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

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
    Spec,
    UnknownKey,
    Value,
)

DEFAULT_SERVICE = "eos"
DEFAULT_KIND = "detection"
DEFAULT_PROTOCOL = "tfserving"
DEFAULT_VARIANT = "default"  # the variant of a service without ``variants``
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
# Keys a variant adds to its backend section (a variant of a service's model).
VARIANT_FIELDS = Fields(
    {
        "weight": Setting(NUMBER, None, lo=0),  # None everywhere: the first variant serves
        "allow": ListOf(STRING),  # principals always served by this variant
        "version": Value(int, str, name="a version number"),  # pinned, as /versions/{n}
        "label": STRING,  # pinned, as /labels/{label}
    }
)
# A share of requests also sent to one variant, compared, never answered.
SHADOW_FIELDS = Fields(
    {
        "variant": STRING,
        "share": Setting(NUMBER, 1.0, lo=0, hi=1),
        "max_wait_ms": Setting(INTEGER, 5000, lo=0, hi=600_000),
    }
)
# Keys of every service; its kind adds its own (gateway.kinds).
SERVICE_FIELDS = Fields(
    {
        "kind": Setting(STRING, DEFAULT_KIND),
        "backend": Owned(),  # BACKEND_FIELDS and its protocol's
        "allow": ListOf(STRING),  # principals allowed; None: any authenticated caller
        "description": Setting(STRING, ""),
        "variants": MapOf(Owned()),  # name -> a backend section with VARIANT_FIELDS
        "shadow": SHADOW_FIELDS,
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
        # What a decoder spends beyond the pixels (gateway.pipeline.structure): scans of a
        # progressive JPEG, each a pass over the whole image; JPEG marker segments, PNG
        # chunks and GIF extension blocks, each a step of the header parser.
        "max_jpeg_scans": Setting(INTEGER, 32, lo=1, hi=1000),
        "max_image_segments": Setting(INTEGER, 10_000, lo=16),
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
    # True: the protocol signs its requests itself (Vertex AI's access tokens), so
    # ``backend.auth`` does not apply and ``credentials_file`` is its own.
    own_credentials: bool

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
    # The shapes of the sections other modules own (auth, cors, ...), so a key indented
    # under the wrong section can be told where it belongs.
    sections: Mapping[str, Spec] = field(default_factory=dict)


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

    @property
    def address(self) -> str:
        """The protocol and the model server's scheme, host and port, for the start log:
        never a URL's user, password, path or query."""
        if self.is_local:
            return "the embedded detector"
        parts = urlsplit(self.url or "")
        host = parts.hostname or "?"
        host = f"[{host}]" if ":" in host else host
        try:
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            port = ""
        return f"{self.protocol} {parts.scheme}://{host}{port}"


@dataclass(frozen=True)
class VariantConfig:
    """One model a service may be served by: its backend, its share and who it is pinned to."""

    name: str
    backend: BackendConfig
    weight: float = 0.0  # its share of callers, against the other variants' weights
    allow: tuple[str, ...] = ()  # principals always served by it (patterns with '*')
    version: str | None = None  # the model version or label its requests are pinned to
    label: str | None = None


@dataclass(frozen=True)
class ShadowConfig:
    variant: str
    share: float = SHADOW_FIELDS.default("share")
    max_wait_ms: int = SHADOW_FIELDS.default("max_wait_ms")


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    kind: str = DEFAULT_KIND
    backend: BackendConfig = field(default_factory=BackendConfig)
    allow: tuple[str, ...] | None = None  # principals allowed; None: any authenticated caller
    description: str = ""
    options: Any = None  # the kind's own (tile, threshold, labels...), typed by its module
    # The models it may be served by; empty: ``backend`` alone, the variant ``default``.
    variants: tuple[VariantConfig, ...] = ()
    shadow: ShadowConfig | None = None

    def variant_configs(self) -> tuple[VariantConfig, ...]:
        """Its variants; a service without ``variants`` has one, ``default``, its backend."""
        return self.variants or (VariantConfig(DEFAULT_VARIANT, self.backend, 1.0),)

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
            **(self._public_variants() if self.variants else {}),
        }

    def _public_variants(self) -> dict[str, Any]:
        total = sum(v.weight for v in self.variants) or 1.0
        out: dict[str, Any] = {
            "variants": [
                {
                    "name": v.name,
                    "share": round(v.weight / total, 6),
                    "protocol": "local" if v.backend.is_local else v.backend.protocol,
                    "model": v.backend.model,
                    "version": v.version,
                    "label": v.label,
                }
                for v in self.variants
            ]
        }
        if self.shadow is not None:
            shadow = self.shadow
            out["shadow"] = {
                "variant": shadow.variant,
                "share": shadow.share,
                "max_wait_ms": shadow.max_wait_ms,
            }
        return out


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = LIMITS_FIELDS.default("max_body_bytes")
    max_pixels: int = LIMITS_FIELDS.default("max_pixels")
    max_instances: int = LIMITS_FIELDS.default("max_instances")
    max_decoded_mb: float = LIMITS_FIELDS.default("max_decoded_mb")
    decode_budget_mb: float = LIMITS_FIELDS.default("decode_budget_mb")
    decode_wait_s: float = LIMITS_FIELDS.default("decode_wait_s")
    max_jpeg_scans: int = LIMITS_FIELDS.default("max_jpeg_scans")
    max_image_segments: int = LIMITS_FIELDS.default("max_image_segments")


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


def _plugin_fields(find: Callable[[str], Plugin | None], names: tuple[str, ...]) -> Fields:
    """Every key the kinds (or protocols) add, for messages about keys in the wrong place."""
    out = Fields({})
    for name in names:
        plugin = find(name)
        if plugin is not None:
            out = out | plugin.fields
    return out


def _service_shape(catalog: Catalog) -> Fields:
    """Every key a service may have, whatever its kind and its backend's protocol."""
    backend = BACKEND_FIELDS | _plugin_fields(catalog.protocol, catalog.protocol_names)
    kinds = _plugin_fields(catalog.kind, catalog.kind_names)
    return SERVICE_FIELDS | kinds | Fields({"backend": backend})


def config_shape(catalog: Catalog) -> Fields:
    """The whole configuration's shape, every kind's, protocol's and section's keys
    included: where a key indented under the wrong section belongs."""
    services = MapOf(_service_shape(catalog), each="a service")
    return SCHEMA | Fields({"services": services, **catalog.sections})


def _credentials(values: dict[str, Any], protocol: ProtocolPlugin | None, where: str) -> None:
    """Outbound credentials that would be ignored are refused, not left to surprise."""
    if protocol is None:
        for key in ("auth", "credentials_file"):
            if values[key] is not None:
                raise ConfigError(
                    f"{where}.{key} does not apply to the embedded detector (no url): "
                    "it sends no requests"
                )
    elif getattr(protocol, "own_credentials", False):
        if values["auth"] is not None:
            raise ConfigError(
                f"{where}.auth {values['auth']!r} does not apply to protocol "
                f"{protocol.name!r}: its requests carry an OAuth 2.0 access token, from "
                "credentials_file or Application Default Credentials; remove auth"
            )
    elif values["credentials_file"] is not None and values["auth"] is None:
        raise ConfigError(
            f"{where}.credentials_file is used only with auth: google-id-token "
            "(an ID token for a private model server)"
        )


def _refuse_other_protocols(
    key: Any, protocol: ProtocolPlugin | None, catalog: Catalog, where: str
) -> None:
    """A key of another protocol's is refused as such, not sent looking elsewhere."""
    for name in catalog.protocol_names:
        other = catalog.protocol(name)
        if other is not None and key in other.fields.fields:
            this = f"protocol {protocol.name!r}" if protocol else "the embedded detector (no url)"
            raise ConfigError(
                f"unknown key {key!r} in {where}: it is a key of protocol {name!r}, "
                f"and this backend is {this}"
            )


def _backend(
    raw: Mapping[str, Any], service: str, catalog: Catalog, where: str | None = None
) -> BackendConfig:
    where = where or f"services.{service}.backend"
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
    for key in raw:
        if key not in fields.fields:  # another protocol's, named as such; else unknown
            _refuse_other_protocols(key, protocol, catalog, where)
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
    _credentials(values, protocol, where)
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
        others = _plugin_fields(catalog.kind, catalog.kind_names)
        _refuse_foreign(raw, kind.fields, others, where, f"a service of kind {kind.name!r}")
    values = own_fields.read(raw, where)
    backend = _backend(_mapping(raw.get("backend"), f"{where}.backend"), name, catalog)
    variants = _variants(raw, name, catalog)
    if variants and raw.get("backend") is None:  # the default variant's is the service's
        backend = next((v for v in variants if v.weight > 0), variants[0]).backend
    for checked, place in [(backend, f"{where}.backend")] + [
        (v.backend, f"{where}.variants.{v.name}") for v in variants
    ]:
        _check_role(checked, kind, catalog, place)
    own = {k: values[k] for k in kind.fields.fields}
    allow = values["allow"]
    return ServiceConfig(
        name=name,
        kind=kind.name,
        backend=backend,
        allow=None if allow is None else tuple(allow),
        description=str(values["description"] or ""),
        options=kind.options(own, where),
        variants=variants,
        shadow=_shadow(values["shadow"], raw.get("shadow"), variants, where),
    )


def _check_role(backend: BackendConfig, kind: Plugin, catalog: Catalog, where: str) -> None:
    if backend.is_local and not getattr(kind, "embedded", False):
        raise ConfigError(f"{where}.url is required: a {kind.name} service runs on a model server")
    roles = None if backend.is_local else getattr(catalog.protocol(backend.protocol), "roles", None)
    role = getattr(kind, "role", None)
    if not backend.is_local and roles is not None and role not in roles:
        raise ConfigError(
            f"{where}.protocol {backend.protocol!r} cannot serve a {kind.name} service "
            f"(its model servers are {', '.join(roles)}s)"
        )


def _variants(raw: Mapping[str, Any], service: str, catalog: Catalog) -> tuple[VariantConfig, ...]:
    """Each variant is a backend section of its own plus its weight, allow list and pin; one
    that names neither ``url`` nor ``protocol`` takes the service's ``backend`` section and
    changes what it names (``{version: 2}``: another version on the same server)."""
    where = f"services.{service}.variants"
    sections = _mapping(raw.get("variants"), where)
    base = _mapping(raw.get("backend"), f"services.{service}.backend")
    out = []
    for vname, body in sections.items():
        place = f"{where}.{vname}"
        if not isinstance(vname, str) or not vname.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"variant name {vname!r} must be letters, digits, '-' or '_'")
        body = _mapping(body, place)
        own = {k: body[k] for k in VARIANT_FIELDS.fields if k in body}
        section = {k: v for k, v in body.items() if k not in VARIANT_FIELDS.fields}
        if "url" not in section and "protocol" not in section:
            section = {**base, **section}
        values = VARIANT_FIELDS.read(own, place)
        version = values["version"]
        if version is not None and values["label"] is not None:
            raise ConfigError(f"{place} may pin a version or a label, not both")
        out.append(
            VariantConfig(
                name=vname,
                backend=_backend(section, service, catalog, place),
                weight=values["weight"],  # None until the defaults below
                allow=tuple(values["allow"] or ()),
                version=None if version is None else str(version),
                label=values["label"],
            )
        )
    if not out:
        return ()
    if all(v.weight is None for v in out):  # no weights: the first listed serves everyone
        return tuple(replace(v, weight=1.0 if i == 0 else 0.0) for i, v in enumerate(out))
    out = [replace(v, weight=v.weight or 0.0) for v in out]
    if not any(v.weight > 0 for v in out):
        raise ConfigError(f"{where}: at least one variant needs a weight above 0")
    return tuple(out)


def _shadow(
    values: dict[str, Any], raw: Any, variants: tuple[VariantConfig, ...], where: str
) -> ShadowConfig | None:
    if raw is None:
        return None
    names = [v.name for v in variants]
    if values["variant"] not in names:
        known = ", ".join(names) or "none: the service lists no variants"
        raise ConfigError(
            f"{where}.shadow.variant must name one of the service's variants ({known}), "
            f"got {values['variant']!r}"
        )
    return ShadowConfig(values["variant"], values["share"], values["max_wait_ms"])


def _limits(raw: Mapping[str, Any]) -> Limits:
    values = LIMITS_FIELDS.read(raw, "limits")
    if raw.get("decode_budget_mb") is None:  # room for at least one image at its largest
        values["decode_budget_mb"] = max(values["decode_budget_mb"], values["max_decoded_mb"])
    if values["decode_budget_mb"] < values["max_decoded_mb"]:
        raise ConfigError("limits.decode_budget_mb must be at least limits.max_decoded_mb")
    return Limits(**values)


def parse_config(raw: Mapping[str, Any], source: str | None, catalog: Catalog) -> Config:
    """The configuration checked whole: every key known, every value of its type and range.

    A key unknown where it stands but known elsewhere is reported as the indentation
    mistake it most likely is (``threshold`` at the top level: indented under a service?).
    """
    try:
        return _parse(raw, source, catalog)
    except UnknownKey as exc:
        raise placed(exc, catalog) from None


def placed(exc: UnknownKey, catalog: Catalog) -> UnknownKey:
    """``exc`` with the places the whole configuration has for its key."""
    parts = exc.where.split(".")
    concrete = None
    if parts[0] == "services" and len(parts) > 1:
        concrete = {"a service": f"services.{parts[1]}"}
    return exc.placed(config_shape(catalog), concrete=concrete)


def _service_entry(name: Any, body: Any, catalog: Catalog) -> ServiceConfig:
    """One entry of ``services``.  An entry named like a service's key (``threshold``,
    ``backend``, ``cell_size_px``) is that key dedented one level, not a service: even an
    empty one, which would otherwise be a second service on the embedded detector."""
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"service name {name!r} must be letters, digits, '-' or '_'")
    # A service's own keys (its kinds'), not its backend's: no protocol module is loaded.
    if name in (SERVICE_FIELDS | _plugin_fields(catalog.kind, catalog.kind_names)).fields:
        raise ConfigError(
            f"services.{name} cannot be a service: {name!r} is a service's key; is it meant "
            "to be indented under a service?"
        )
    return _service(name, body, catalog)


def _parse(raw: Mapping[str, Any], source: str | None, catalog: Catalog) -> Config:
    raw = _mapping(raw, "the configuration")
    top = SCHEMA.read(raw, "")
    services_raw = _mapping(raw.get("services"), "services")
    if not services_raw:
        services_raw = {DEFAULT_SERVICE: {}}
    services: dict[str, ServiceConfig] = {}
    for name, body in services_raw.items():
        services[name] = _service_entry(name, body, catalog)
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


def _yaml_error(path: Path, exc: Exception) -> str:
    """The file and the line once, and what is wrong there, without PyYAML's echo of the
    text (``in "<unicode string>", line 5, column 6`` twice, with carets)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return f"{path}: invalid YAML: {exc}"
    line = mark.line + 1
    text = f"{path}, line {line}, column {mark.column + 1}: invalid YAML: {problem}"
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark.line + 1 != line:
        started = context_mark.line + 1
        if "expected <block end>" in problem:
            text += f" (not indented like the block that starts on line {started})"
        else:
            text += f" ({context} that starts on line {started})"
    return text


def read_config_file(
    path: str | os.PathLike[str] | None = None,
) -> tuple[Mapping[str, Any], str | None]:
    """``GATEWAY_CONFIG`` (YAML or JSON) as a mapping; no file means the embedded defaults.

    Errors start with the file's name (and the line, for a syntax error), once.
    """
    path = path if path is not None else os.environ.get("GATEWAY_CONFIG") or None
    if path is None:
        return {}, None
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: the GATEWAY_CONFIG file cannot be read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: the GATEWAY_CONFIG file is not UTF-8 text: {exc}") from exc
    if p.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            where = f"{p}, line {exc.lineno}, column {exc.colno}"
            raise ConfigError(f"{where}: invalid JSON: {exc.msg}") from None
    else:
        import yaml  # only needed when a YAML file is given

        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(_yaml_error(p, exc)) from None
    return raw, str(p)
