"""Vertex AI's online prediction API as the gateway serves it: the inbound half.

A script written for an AutoML image model deployed on a Vertex AI endpoint sends
``{"instances": [{"content": "<base64>", "mimeType": "image/jpeg"}], "parameters":
{"confidenceThreshold": 0.5, "maxPredictions": 10}}`` and reads ``predictions`` in the
shapes of Vertex's prediction schemata (``ImageObjectDetectionPredictionResult``,
``ClassificationPredictionResult``).  The predictions are made from the same
per-instance rows the TF Serving API answers with
(:func:`gateway.codecs.tfserving_api.prediction` and ``classification``), so any kind
whose rows take one of those two forms is served here too.

Google's REST mapping of protobuf writes int64 as a decimal string, so ``ids`` are
strings; Google's clients read them back as integers.  Errors take the shape of every
Google API's (``google.rpc.Status`` in JSON), which Google's client libraries parse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import BadRequest, PayloadTooLarge
from gateway.jsonio import b64decode_strict, loads_decoding

# Vertex's defaults for AutoML image models (the predict params schemata).
DEFAULT_CONFIDENCE_THRESHOLD = 0.0
DEFAULT_MAX_PREDICTIONS = 10
# The MIME types Vertex's image instance schemata list.
MIME_TYPES = (
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/webp",
    "image/bmp",
    "image/tiff",
    "image/vnd.microsoft.icon",
)
INSTANCE_FIELDS = ("content", "mimeType")
PARAMETER_FIELDS = ("confidenceThreshold", "maxPredictions")
ERROR_DOMAIN = "eos-gateway"

# The canonical gRPC status Google's APIs name beside each HTTP status.  A body over the
# limit, an image format the gateway cannot read or a corrupt image is a bad argument
# whatever the server's state, and must not be retried as RESOURCE_EXHAUSTED would be.
GRPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    414: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    431: "INVALID_ARGUMENT",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass(frozen=True)
class VertexRequest:
    images: list[bytes]
    confidence_threshold: float
    max_predictions: int


def _image_of(instance: Any, where: str) -> bytes:
    if not isinstance(instance, Mapping):
        raise BadRequest(f'{where} must be an object {{"content": "<base64 image>"}}')
    unknown = set(instance) - set(INSTANCE_FIELDS)
    if unknown:
        raise BadRequest(
            f"{where} has unknown fields: {', '.join(sorted(unknown))}; "
            f"an instance has {' and '.join(INSTANCE_FIELDS)}"
        )
    mime = instance.get("mimeType")
    if mime is not None and (not isinstance(mime, str) or mime.lower() not in MIME_TYPES):
        raise BadRequest(f"{where}.mimeType must be one of: {', '.join(MIME_TYPES)}")
    if "content" not in instance:
        raise BadRequest(f'{where} has no "content": the image in base64')
    content = instance["content"]
    if isinstance(content, str) and content.startswith("gs://"):
        raise BadRequest(
            f"{where}.content is a Cloud Storage URI; send the image's bytes in base64"
        )
    image = b64decode_strict(content, f"{where}.content")
    if not image:
        raise BadRequest(f"{where}.content is empty")
    return image


def _confidence_threshold(value: Any) -> float:
    if value is None:
        return DEFAULT_CONFIDENCE_THRESHOLD
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise BadRequest("parameters.confidenceThreshold must be a number between 0 and 1")
    if not 0.0 <= value <= 1.0:
        raise BadRequest(f"parameters.confidenceThreshold must be between 0 and 1, got {value}")
    return float(value)


def _max_predictions(value: Any) -> int:
    """A whole number; protobuf's Struct carries every number as a double, so ``25.0`` is
    how a client's 25 may arrive."""
    if value is None:
        return DEFAULT_MAX_PREDICTIONS
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not value.is_integer())
    ):
        raise BadRequest("parameters.maxPredictions must be a whole number of at least 1")
    if value < 1:
        raise BadRequest(f"parameters.maxPredictions must be at least 1, got {value}")
    return int(value)


def parse_predict_request(body: bytes, *, max_instances: int) -> VertexRequest:
    # Images decoded from the body, no str copy; a key given twice is refused (400).
    doc = loads_decoding(body, "content", unique_keys=True)
    if not isinstance(doc, Mapping):
        raise BadRequest("the request body must be a JSON object")
    unknown = set(doc) - {"instances", "parameters"}
    if unknown:
        raise BadRequest(
            f"the body has unknown fields: {', '.join(sorted(unknown))}; "
            'it has "instances" and optionally "parameters"'
        )
    instances = doc.get("instances")
    if not isinstance(instances, list) or not instances:
        raise BadRequest('"instances" must be a non-empty list of {"content": "<base64 image>"}')
    if len(instances) > max_instances:
        raise PayloadTooLarge(
            f"{len(instances)} instances in one request; the limit is {max_instances}"
        )
    images = [_image_of(inst, f"instances[{i}]") for i, inst in enumerate(instances)]
    params = doc.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise BadRequest('"parameters" must be an object')
    unknown = set(params) - set(PARAMETER_FIELDS)
    if unknown:
        raise BadRequest(
            f"parameters has unknown fields: {', '.join(sorted(unknown))}; "
            f"it takes {' and '.join(PARAMETER_FIELDS)}"
        )
    return VertexRequest(
        images,
        _confidence_threshold(params.get("confidenceThreshold")),
        _max_predictions(params.get("maxPredictions")),
    )


def _best(confidences: Sequence[float], threshold: float, limit: int) -> list[int]:
    """Indices of the confidences at or above ``threshold``, highest first (ties keep
    their order), at most ``limit`` of them."""
    order = sorted(range(len(confidences)), key=lambda i: -confidences[i])
    return [i for i in order if confidences[i] >= threshold][:limit]


def prediction(row: Mapping[str, Any], threshold: float, limit: int) -> dict[str, Any]:
    """One instance's prediction from its row in TF Serving's form.

    A detection row (boxes ``[ymin, xmin, ymax, xmax]`` normalized, as AutoML's export
    writes them) becomes ``ImageObjectDetectionPredictionResult`` (``bboxes``
    ``[xMin, xMax, yMin, yMax]``), its ids the model's class values; a classification row
    becomes ``ClassificationPredictionResult``, its ids the labels' places in the model's
    order.
    """
    if "detection_boxes" in row:
        scores = [float(s) for s in row["detection_scores"]]
        keep = _best(scores, threshold, limit)
        boxes = row["detection_boxes"]
        return {
            "ids": [str(int(row["detection_classes"][i])) for i in keep],
            "displayNames": [str(row["detection_classes_as_text"][i]) for i in keep],
            "confidences": [scores[i] for i in keep],
            "bboxes": [
                [float(boxes[i][1]), float(boxes[i][3]), float(boxes[i][0]), float(boxes[i][2])]
                for i in keep
            ],
        }
    if "scores" in row and "labels" in row:
        scores = [float(s) for s in row["scores"]]
        keep = _best(scores, threshold, limit)
        return {
            "ids": [str(i) for i in keep],
            "displayNames": [str(row["labels"][i]) for i in keep],
            "confidences": [scores[i] for i in keep],
        }
    raise ValueError(f"no Vertex AI prediction schema fits a row of {sorted(row)}")


def model_resource(project: str, location: str, service: str) -> str:
    """The model's resource name as Vertex writes it, the service standing for its id."""
    return f"projects/{project}/locations/{location}/models/{service}"


def endpoint_resource(
    project: str, location: str, service: str, description: str, model_display_name: str, since: str
) -> dict[str, Any]:
    """The endpoint as Vertex's ``GetEndpoint`` answers it: one deployed model, the
    service, taking all the traffic.  ``aiplatform.Endpoint`` reads it once before its
    first ``predict``; ``since`` (RFC 3339) stands for its create and update times."""
    return {
        "name": f"projects/{project}/locations/{location}/endpoints/{service}",
        "displayName": service,
        "description": description,
        "deployedModels": [
            {
                "id": service,
                "model": model_resource(project, location, service),
                "displayName": model_display_name,
            }
        ],
        "trafficSplit": {service: 100},
        "createTime": since,
        "updateTime": since,
    }


def predict_response(
    predictions: list[dict[str, Any]],
    *,
    deployed_model_id: str,
    model: str,
    model_display_name: str,
    model_version_id: str,
) -> dict[str, Any]:
    return {
        "predictions": predictions,
        "deployedModelId": deployed_model_id,
        "model": model,
        "modelDisplayName": model_display_name,
        "modelVersionId": model_version_id,
    }


def grpc_status(http_status: int) -> str:
    if http_status in GRPC_STATUS:
        return GRPC_STATUS[http_status]
    return "FAILED_PRECONDITION" if 400 <= http_status < 500 else "UNKNOWN"


def error_body(status: int, message: str, code: str, request_id: str) -> dict[str, Any]:
    """Google's error shape; the gateway's own code and the request id ride in an
    ``ErrorInfo`` detail (``reason``, ``metadata``), which Google's clients expose."""
    return {
        "error": {
            "code": status,
            "message": f"{message} (request_id {request_id})",
            "status": grpc_status(status),
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": code.upper(),
                    "domain": ERROR_DOMAIN,
                    "metadata": {"code": code, "request_id": request_id},
                }
            ],
        }
    }
