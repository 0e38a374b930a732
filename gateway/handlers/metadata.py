"""``GET /v1/models/{service}[/versions/{n}|/labels/{l}]/metadata``: TF Serving's model
metadata (the signature), as the model server gives it."""

from __future__ import annotations

from typing import Any

from flask import Response

from gateway.codecs.tfserving_api import parse_version
from gateway.context import RequestContext
from gateway.handlers.responses import json_response
from gateway.runtime import Gateway


def model_metadata(
    gw: Gateway,
    request: Any,
    ctx: RequestContext,
    service: str,
    version: str | None = None,
    label: str | None = None,
) -> Response:
    ctx.service = service
    backend = gw.services.get(service).backend
    doc = backend.model_metadata(parse_version(version), label)
    # Clients know the model by the service's name; the version stays the server's.
    doc["model_spec"] = {**(doc.get("model_spec") or {}), "name": service}
    return json_response(200, doc)
