"""``POST /v1/projects/{project}/locations/{location}/endpoints/{service}:predict``:
Vertex AI's online prediction, so a script written for an AutoML image model on a Vertex
AI endpoint (``PredictionServiceClient``, ``aiplatform.Endpoint.predict``) runs against
the gateway with its endpoint, project and credentials changed; and
``GET /v1/projects/{project}/locations/{location}/endpoints/{service}``, the endpoint
resource ``aiplatform.Endpoint`` reads before its first prediction.

The endpoint id names the service; project and location are taken as sent and only
echoed in the model's resource name.  The kind's use case runs as for TF Serving's
``:predict`` with Vertex's ``confidenceThreshold`` (its default 0.0: nothing cut) and
its per-instance rows are answered in Vertex's prediction schemata, best first, at most
``maxPredictions`` each (:mod:`gateway.codecs.vertex_api`).  Errors, admission's
included, take Google's error shape: the route declares it
(:attr:`gateway.rest.routes.Route.errors`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Response

from gateway.codecs import vertex_api as wire
from gateway.context import RequestContext
from gateway.handlers.bookkeeping import Admitted, Served, require_route
from gateway.handlers.common import read_body
from gateway.handlers.responses import json_response
from gateway.runtime import Gateway

# When this process began serving endpoints: their create and update times.
SERVING_SINCE = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def endpoint(
    gw: Gateway, request: Any, ctx: RequestContext, service: str, project: str, location: str
) -> Response:
    """What ``GET /v1/services/{service}`` shows too, so it needs no credentials."""
    ctx.service = service
    svc = gw.services.get(service)  # UnknownService: 404
    require_route(svc, "vertex")
    cfg = svc.config
    doc = wire.endpoint_resource(
        project, location, cfg.name, cfg.description, cfg.backend.model, SERVING_SINCE
    )
    return json_response(200, doc)


def predict(
    gw: Gateway,
    request: Any,
    ctx: RequestContext,
    admitted: Admitted,
    project: str,
    location: str,
) -> Served:
    svc = admitted.service
    require_route(svc, "vertex")
    body = read_body(request, ctx, gw.config.limits.max_body_bytes)
    req = wire.parse_predict_request(body, max_instances=gw.config.limits.max_instances)
    del body
    result = admitted.run(
        lambda s, quota: s.kind.infer(
            s, req.images, req.confidence_threshold, limits=gw.config.limits, quota=quota
        )
    )
    rows = svc.kind.rows(result, [None] * len(req.images))
    predictions = [
        wire.prediction(row, req.confidence_threshold, req.max_predictions) for row in rows
    ]
    facts = result.facts
    if any("bboxes" in p for p in predictions):  # the detections answered, not those cut
        facts.detections = sum(len(p["bboxes"]) for p in predictions)
    answer = wire.predict_response(
        predictions,
        deployed_model_id=svc.config.name,
        model=wire.model_resource(project, location, svc.config.name),
        model_display_name=facts.backend_model or svc.config.backend.model,
        model_version_id=facts.backend_version or "",
    )
    return Served(json_response(200, answer), facts)
