"""Vertex AI's prediction codec against Google's own client library, used offline.

Requests are the bytes ``PredictionServiceClient``'s REST transport sends (its own
transcoding of a ``PredictRequest`` built from the SDK's typed instance and parameter
schemata); answers are parsed as that transport parses them and read back through the
typed prediction results; errors are turned into exceptions by ``google.api_core`` as the
transport does.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import requests
from google.api_core import exceptions as core_exceptions
from google.cloud.aiplatform.v1.schema.predict import instance as schema_instance
from google.cloud.aiplatform.v1.schema.predict import params as schema_params
from google.cloud.aiplatform.v1.schema.predict import prediction as schema_prediction
from google.cloud.aiplatform_v1._compat import transcode_request
from google.cloud.aiplatform_v1.services.prediction_service.transports.rest_base import (
    _BasePredictionServiceRestTransport as RestBase,
)
from google.cloud.aiplatform_v1.types import prediction_service
from google.protobuf import json_format

from gateway.codecs import tfserving_api
from gateway.codecs import vertex_api as vertex
from gateway.errors import BadRequest, InvalidBase64, PayloadTooLarge
from gateway.pipeline.merge import Merged

ENDPOINT = "projects/my-project/locations/europe-west1/endpoints/eos"


def sdk_body(instances: list, parameters=None) -> bytes:
    """The body ``PredictionServiceClient(transport="rest").predict`` sends."""
    request = prediction_service.PredictRequest(endpoint=ENDPOINT)
    request.instances.extend(instances)
    if parameters is not None:
        request.parameters = parameters
    transcoded, body, _ = transcode_request(
        RestBase._BasePredict._get_http_options(),
        request,
        required_fields_default_values={},
        rest_numeric_enums=True,
    )
    assert transcoded["uri"] == f"/v1/{ENDPOINT}:predict"
    return body.encode()


def sdk_answer(doc: dict) -> prediction_service.PredictResponse:
    """An answer as the REST transport parses it."""
    response = prediction_service.PredictResponse()
    pb = prediction_service.PredictResponse.pb(response)
    json_format.Parse(json.dumps(doc), pb, ignore_unknown_fields=True)
    return response


def detection_instance(data: bytes, mime: str = "image/jpeg"):
    content = base64.b64encode(data).decode()
    return schema_instance.ImageObjectDetectionPredictionInstance(
        content=content, mime_type=mime
    ).to_value()


def parse(body: bytes | dict, max_instances: int = 16) -> vertex.VertexRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return vertex.parse_predict_request(raw, max_instances=max_instances)


# --- requests ---------------------------------------------------------------------------------


def test_the_sdks_detection_request_is_read():
    images = [b"\xff\xd8first image", b"\x89PNG second"]
    params = schema_params.ImageObjectDetectionPredictionParams(
        confidence_threshold=0.5, max_predictions=25
    ).to_value()
    body = sdk_body([detection_instance(images[0]), detection_instance(images[1])], params)
    assert b'"maxPredictions": 25.0' in body  # a Struct carries every number as a double
    req = parse(body)
    assert req.images == images
    assert (req.confidence_threshold, req.max_predictions) == (0.5, 25)


def test_the_sdks_classification_request_is_read():
    content = base64.b64encode(b"an image").decode()
    inst = schema_instance.ImageClassificationPredictionInstance(content=content).to_value()
    params = schema_params.ImageClassificationPredictionParams(max_predictions=2).to_value()
    req = parse(sdk_body([inst], params))
    assert req.images == [b"an image"]
    assert (req.confidence_threshold, req.max_predictions) == (0.0, 2)


def test_defaults_are_vertexs():
    req = parse({"instances": [{"content": base64.b64encode(b"x").decode()}]})
    assert req.confidence_threshold == vertex.DEFAULT_CONFIDENCE_THRESHOLD == 0.0
    assert req.max_predictions == vertex.DEFAULT_MAX_PREDICTIONS == 10
    assert parse({"instances": [{"content": "eA=="}], "parameters": None}).max_predictions == 10


def test_a_large_image_is_decoded_from_the_body():
    data = np.random.default_rng(1).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    body = sdk_body([detection_instance(data, "image/png")])
    assert parse(body).images == [data]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[]", "JSON object"),
        ({"instances": [{"content": "eA=="}], "endpoint": ENDPOINT}, "unknown fields: endpoint"),
        ({"parameters": {}}, '"instances"'),
        ({"instances": []}, '"instances"'),
        ({"instances": {"content": "eA=="}}, '"instances"'),
        ({"instances": ["eA=="]}, "instances[0] must be an object"),
        ({"instances": [{"content": "eA==", "key": "k"}]}, "instances[0] has unknown fields: key"),
        ({"instances": [{"mimeType": "image/png"}]}, 'instances[0] has no "content"'),
        ({"instances": [{"content": ""}]}, "instances[0].content is empty"),
        ({"instances": [{"content": 12}]}, "instances[0].content"),
        ({"instances": [{"content": "gs://bucket/slide.jpg"}]}, "Cloud Storage URI"),
        ({"instances": [{"content": "eA==", "mimeType": "text/plain"}]}, "mimeType"),
        ({"instances": [{"content": "eA==", "mimeType": 5}]}, "mimeType"),
        ({"instances": [{"content": "eA=="}], "parameters": [0.5]}, '"parameters" must be'),
        ({"instances": [{"content": "eA=="}], "parameters": {"threshold": 0.5}}, "threshold"),
        (
            {"instances": [{"content": "eA=="}], "parameters": {"confidenceThreshold": 1.5}},
            "0 and 1",
        ),
        (
            {"instances": [{"content": "eA=="}], "parameters": {"confidenceThreshold": -0.1}},
            "0 and 1",
        ),
        (
            {"instances": [{"content": "eA=="}], "parameters": {"confidenceThreshold": "0.5"}},
            "number",
        ),
        (
            {"instances": [{"content": "eA=="}], "parameters": {"confidenceThreshold": True}},
            "number",
        ),
        ({"instances": [{"content": "eA=="}], "parameters": {"maxPredictions": 0}}, "at least 1"),
        ({"instances": [{"content": "eA=="}], "parameters": {"maxPredictions": 2.5}}, "whole"),
        ({"instances": [{"content": "eA=="}], "parameters": {"maxPredictions": "5"}}, "whole"),
        ({"instances": [{"content": "eA=="}], "parameters": {"maxPredictions": True}}, "whole"),
    ],
)
def test_bad_requests_are_refused_saying_what_is_wrong(body, words):
    with pytest.raises(BadRequest) as caught:
        parse(body)
    assert caught.value.status == 400
    assert words in caught.value.message, caught.value.message


def test_content_is_base64_as_the_other_apis_read_it():
    with pytest.raises(InvalidBase64, match=r"instances\[1\]\.content is not valid base64"):
        parse({"instances": [{"content": "eA=="}, {"content": "not base64!"}]})
    with pytest.raises(InvalidBase64, match="URL-safe"):
        parse({"instances": [{"content": "-_-_"}]})
    assert parse({"instances": [{"content": "eA"}]}).images == [b"x"]  # padding optional


def test_too_many_instances_are_413():
    with pytest.raises(PayloadTooLarge, match="3 instances in one request; the limit is 2"):
        parse({"instances": [{"content": "eA=="}] * 3}, max_instances=2)


# --- predictions --------------------------------------------------------------------------------


def detection_row(threshold_scores=(0.2, 0.9, 0.5, 0.7)) -> tuple[dict, np.ndarray]:
    """A TF Serving row for a 400x300 image: four boxes in pixels, scores not in order."""
    boxes = np.array(
        [[10, 20, 50, 60], [100, 30, 160, 90], [200, 150, 260, 210], [300, 200, 380, 290]],
        np.float32,
    )
    merged = Merged(boxes, np.array(threshold_scores, np.float32), np.array([0, 1, 0, 1]))
    row = tfserving_api.prediction(merged, 400, 300, ("eos", "neutrophil"), (1.0, 2.0), None)
    return row, boxes


def test_detections_become_the_object_detection_schema():
    row, boxes = detection_row()
    pred = vertex.prediction(row, 0.0, 10)
    assert set(pred) == {"ids", "displayNames", "confidences", "bboxes"}
    assert pred["confidences"] == pytest.approx([0.9, 0.7, 0.5, 0.2])
    assert pred["ids"] == ["2", "2", "1", "1"]  # int64 in Google's JSON mapping: a string
    assert pred["displayNames"] == ["neutrophil", "neutrophil", "eos", "eos"]

    answer = sdk_answer({"predictions": [pred]})
    typed = schema_prediction.ImageObjectDetectionPredictionResult.from_map(answer.predictions[0])
    assert list(typed.ids) == [2, 2, 1, 1]
    assert list(typed.display_names) == pred["displayNames"]
    assert list(typed.confidences) == pytest.approx([0.9, 0.7, 0.5, 0.2], abs=1e-6)
    # [xMin, xMax, yMin, yMax] of the image, back to pixels: the boxes sent, best first
    order = [1, 3, 2, 0]
    for bbox, i in zip(typed.bboxes, order, strict=True):
        x_min, x_max, y_min, y_max = list(bbox)
        back = [x_min * 400, y_min * 300, x_max * 400, y_max * 300]
        assert back == pytest.approx(boxes[i].tolist(), abs=1e-3)


def test_the_threshold_and_max_predictions_cut_the_weakest():
    row, _ = detection_row()
    assert vertex.prediction(row, 0.5, 10)["confidences"] == pytest.approx([0.9, 0.7, 0.5])
    assert vertex.prediction(row, 0.0, 2)["confidences"] == pytest.approx([0.9, 0.7])
    empty = vertex.prediction(row, 0.95, 10)
    assert empty == {"ids": [], "displayNames": [], "confidences": [], "bboxes": []}


def test_classification_becomes_the_classification_schema():
    row = tfserving_api.classification(("none", "few", "many"), (0.1, 0.25, 0.65), None)
    pred = vertex.prediction(row, 0.0, 10)
    assert pred == {
        "ids": ["2", "1", "0"],  # each label's place in the model's order
        "displayNames": ["many", "few", "none"],
        "confidences": [0.65, 0.25, 0.1],
    }
    assert vertex.prediction(row, 0.2, 1)["displayNames"] == ["many"]
    answer = sdk_answer({"predictions": [pred]})
    typed = schema_prediction.ClassificationPredictionResult.from_map(answer.predictions[0])
    assert list(typed.ids) == [2, 1, 0]
    assert list(typed.display_names) == ["many", "few", "none"]


def test_a_row_of_no_known_form_is_a_bug_not_an_answer():
    with pytest.raises(ValueError, match="no Vertex AI prediction schema"):
        vertex.prediction({"outputs": [1.0]}, 0.0, 10)


def test_the_answer_carries_the_model_fields():
    answer = vertex.predict_response(
        [],
        deployed_model_id="eos",
        model=vertex.model_resource("my-project", "europe-west1", "eos"),
        model_display_name="eos",
        model_version_id="1",
    )
    parsed = sdk_answer(answer)
    assert parsed.deployed_model_id == "eos"
    assert parsed.model == "projects/my-project/locations/europe-west1/models/eos"
    assert (parsed.model_display_name, parsed.model_version_id) == ("eos", "1")


# --- errors ---------------------------------------------------------------------------------


def sdk_error(status: int, code: str) -> core_exceptions.GoogleAPICallError:
    """The exception Google's REST transports raise for this error answer."""
    body = vertex.error_body(status, "what went wrong", code, "rid-123")
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.request = requests.Request("POST", f"http://gw/v1/{ENDPOINT}:predict").prepare()
    return core_exceptions.from_http_response(response)


@pytest.mark.parametrize(
    ("status", "code", "grpc", "exception"),
    [
        (400, "invalid_base64", "INVALID_ARGUMENT", core_exceptions.BadRequest),
        (401, "unauthenticated", "UNAUTHENTICATED", core_exceptions.Unauthorized),
        (403, "forbidden", "PERMISSION_DENIED", core_exceptions.Forbidden),
        (404, "unknown_service", "NOT_FOUND", core_exceptions.NotFound),
        (413, "too_many_pixels", "INVALID_ARGUMENT", core_exceptions.GoogleAPICallError),
        (429, "quota_exceeded", "RESOURCE_EXHAUSTED", core_exceptions.TooManyRequests),
        (500, "internal", "INTERNAL", core_exceptions.InternalServerError),
        (502, "backend_bad_response", "UNAVAILABLE", core_exceptions.BadGateway),
        (503, "backend_unavailable", "UNAVAILABLE", core_exceptions.ServiceUnavailable),
        (504, "backend_timeout", "DEADLINE_EXCEEDED", core_exceptions.GatewayTimeout),
    ],
)
def test_errors_are_googles_and_its_clients_read_them(status, code, grpc, exception):
    body = vertex.error_body(status, "what went wrong", code, "rid-123")
    assert set(body) == {"error"}
    assert body["error"]["code"] == status
    assert body["error"]["status"] == grpc
    assert "rid-123" in body["error"]["message"]
    exc = sdk_error(status, code)
    assert isinstance(exc, exception)
    assert exc.code == status
    assert "what went wrong" in exc.message and "rid-123" in exc.message
    assert exc.reason == code.upper() and exc.domain == vertex.ERROR_DOMAIN
    assert exc.metadata == {"code": code, "request_id": "rid-123"}


def test_every_status_has_a_grpc_name():
    assert all(vertex.grpc_status(s) for s in range(400, 600))
    assert vertex.grpc_status(418) == "FAILED_PRECONDITION"
    assert vertex.grpc_status(599) == "UNKNOWN"
