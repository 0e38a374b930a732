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

from gateway import backends, kinds
from gateway.config import Catalog, Config, read_config_file
from gateway.config import parse_config as _parse


def catalog() -> Catalog:
    return Catalog(
        kind=kinds.get,
        protocol=backends.protocol,
        kind_names=kinds.names(),
        protocol_names=backends.protocol_names(),
    )


def parse_config(raw: Mapping[str, Any], source: str | None = None) -> Config:
    """A configuration mapping checked whole against the known kinds and protocols."""
    return _parse(raw, source, catalog())


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """``GATEWAY_CONFIG`` (YAML or JSON) read and checked; no file: the embedded defaults."""
    raw, source = read_config_file(path)
    return parse_config(raw, source)
