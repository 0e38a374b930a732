"""The kinds and protocols a configuration may name, and the configuration read with them.

The configuration (:mod:`gateway.config`) sits at the bottom of the imports, so it is
handed what it checks services against: the kinds (:mod:`gateway.kinds`) and the
outbound protocols (:mod:`gateway.backends`), each looked up by name when a service
names it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from gateway import auth as auth_section
from gateway import backends, kinds
from gateway.auth import cors as cors_section
from gateway.config import Catalog, Config, read_config_file
from gateway.config import config_shape as _shape
from gateway.config import parse_config as _parse
from gateway.config import placed as _placed
from gateway.schema import Fields, Spec, UnknownKey
from gateway.usage import quotas as quotas_section
from gateway.usage import settings as usage_section

# The sections other modules own, each checked against the shape its module declares
# (gateway.runtime.check_sections).
OWNED_SECTIONS: dict[str, Spec] = {
    "auth": auth_section.CONFIG_SCHEMA,
    "cors": cors_section.CONFIG_SCHEMA,
    "usage": usage_section.CONFIG_SCHEMA,
    "quotas": quotas_section.CONFIG_SCHEMA,
}


def catalog() -> Catalog:
    return Catalog(
        kind=kinds.get,
        protocol=backends.protocol,
        kind_names=kinds.names(),
        protocol_names=backends.protocol_names(),
        sections=OWNED_SECTIONS,
    )


def config_shape() -> Fields:
    """The whole configuration's shape: every kind's, protocol's and section's keys."""
    return _shape(catalog())


def placed(exc: UnknownKey) -> UnknownKey:
    """An unknown key with where in the configuration it would belong, if anywhere."""
    return _placed(exc, catalog())


def parse_config(raw: Mapping[str, Any], source: str | None = None) -> Config:
    """A configuration mapping checked whole against the known kinds and protocols."""
    return _parse(raw, source, catalog())


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """``GATEWAY_CONFIG`` (YAML or JSON) read and checked; no file: the embedded defaults."""
    raw, source = read_config_file(path)
    return parse_config(raw, source)
