"""The gateway's inbound Open Inference Protocol (``gateway/handlers/v2.py``) called by the
protocol's own clients, unmodified: ``tritonclient.http`` and KServe's
``InferenceRESTClient``.  A gateway on the embedded defaults answers the sample slide with
the detections ``POST /v1/services/eos:detect`` finds on it, as normalized boxes, whether
the image goes as binary tensor data or as base64 strings in JSON, and the outputs come
back as binary data or in JSON."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import time

import httpx
import numpy as np
import pytest
import requests
import tritonclient.http as triton
from helpers import SAMPLE_SLIDE
from kserve.inference_client import InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.process

MODEL = "eos"
THRESHOLD = 0.3
OUTPUTS = (
    "detection_boxes",
    "detection_scores",
    "detection_classes",
    "detection_classes_as_text",
    "num_detections",
)
SLIDE = SAMPLE_SLIDE.read_bytes()


@pytest.fixture(scope="module")
def detected(embedded) -> dict:
    """What ``:detect`` answers for the sample slide at the same threshold: the reference."""
    resp = requests.post(
        embedded.url + f"/v1/services/{MODEL}:detect",
        json={"image": base64.b64encode(SLIDE).decode(), "threshold": THRESHOLD},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["count"] > 0 and doc["threshold"] == THRESHOLD
    return doc


@pytest.fixture(scope="module")
def client(embedded):
    with triton.InferenceServerClient(embedded.url.removeprefix("http://")) as c:
        yield c


def _as_detected(boxes: np.ndarray, doc: dict) -> np.ndarray:
    """Normalized ``[ymin, xmin, ymax, xmax]`` rows as ``:detect``'s pixel ``[x0, y0, x1, y1]``."""
    w, h = doc["image"]["width"], doc["image"]["height"]
    boxes = boxes.astype(np.float64)
    return np.stack([boxes[:, 1] * w, boxes[:, 0] * h, boxes[:, 3] * w, boxes[:, 2] * h], 1)


def _check_detections(
    boxes: np.ndarray, scores: np.ndarray, count: float, doc: dict, texts: np.ndarray | None = None
) -> None:
    """One instance's outputs against ``:detect``'s answer: the same count, normalized boxes
    at the same places (``:detect`` rounds pixels to 0.01), the same scores and labels."""
    n = doc["count"]
    assert count == n
    assert boxes.shape == (n, 4) and scores.shape == (n,)
    assert ((boxes >= 0) & (boxes <= 1)).all(), boxes
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    want_boxes = np.array([d["box"] for d in doc["detections"]])
    want_scores = np.array([d["score"] for d in doc["detections"]])
    np.testing.assert_allclose(_as_detected(boxes, doc), want_boxes, atol=0.1)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert (scores >= THRESHOLD).all()
    if texts is not None:
        assert [t.decode() if isinstance(t, bytes) else t for t in texts] == [
            d["label"] for d in doc["detections"]
        ]


# --- tritonclient ------------------------------------------------------------------------


def test_health_and_model_metadata_through_tritonclient(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert not client.is_model_ready("no-such-service")
    server = client.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL
    inputs = {t["name"]: t for t in meta["inputs"]}
    assert inputs["image_bytes"]["datatype"] == "BYTES"
    outputs = {t["name"]: t for t in meta["outputs"]}
    assert set(OUTPUTS) <= set(outputs)
    assert outputs["detection_boxes"] == {
        "name": "detection_boxes",
        "datatype": "FP32",
        "shape": [-1, -1, 4],
    }
    with pytest.raises(InferenceServerException) as exc:
        client.get_model_metadata("no-such-service")
    assert exc.value.status() == "404"


def test_binary_image_and_binary_outputs_match_detect(client, detected):
    image = triton.InferInput("image_bytes", [1], "BYTES")
    image.set_data_from_numpy(np.array([SLIDE], dtype=object), binary_data=True)
    wanted = [triton.InferRequestedOutput(name, binary_data=True) for name in OUTPUTS]
    result = client.infer(
        MODEL, [image], outputs=wanted, parameters={"threshold": THRESHOLD}, request_id="r-1"
    )
    response = result.get_response()
    assert response["model_name"] == MODEL and response["id"] == "r-1"
    assert [o["name"] for o in response["outputs"]] == list(OUTPUTS)
    for out in response["outputs"]:
        assert out["parameters"]["binary_data_size"] > 0 and "data" not in out, out
    boxes, scores, classes, texts, counts = (result.as_numpy(n) for n in OUTPUTS)
    n = detected["count"]
    assert boxes.dtype == scores.dtype == counts.dtype == np.float32
    assert boxes.shape == (1, n, 4) and scores.shape == texts.shape == (1, n)
    assert counts.shape == (1,)
    assert classes[0].tolist() == [1.0] * n
    _check_detections(boxes[0], scores[0], counts[0], detected, texts[0])


def test_base64_strings_in_json_and_json_outputs_match_detect(client, detected):
    """tritonclient cannot mark an input ``content_type: base64``; the gateway reads JSON
    strings of an image input as base64 all the same."""
    image = triton.InferInput("image_bytes", [1, 1], "BYTES")
    encoded = base64.b64encode(SLIDE)
    image.set_data_from_numpy(np.array([[encoded]], dtype=object), binary_data=False)
    key = triton.InferInput("key", [1], "BYTES")
    key.set_data_from_numpy(np.array([b"slide-1"], dtype=object), binary_data=False)
    wanted = [triton.InferRequestedOutput(name, binary_data=False) for name in OUTPUTS + ("key",)]
    result = client.infer(MODEL, [image, key], outputs=wanted, parameters={"threshold": THRESHOLD})
    response = result.get_response()
    for out in response["outputs"]:
        assert "data" in out and "parameters" not in out, out
    assert result.as_numpy("key").tolist() == ["slide-1"]  # JSON strings stay str
    boxes, scores, _, texts, counts = (result.as_numpy(n) for n in OUTPUTS)
    _check_detections(boxes[0], scores[0], counts[0], detected, texts[0])


def test_every_output_by_default_and_the_threshold_cuts(client, detected):
    """No outputs named: all of the kind's outputs (no ``key`` without a key input), in
    JSON.  Without a threshold nothing is cut, so at least as many come back."""
    image = triton.InferInput("image_bytes", [1], "BYTES")
    image.set_data_from_numpy(np.array([SLIDE], dtype=object), binary_data=True)
    cut = client.infer(MODEL, [image], parameters={"threshold": THRESHOLD})
    assert {o["name"] for o in cut.get_response()["outputs"]} >= set(OUTPUTS)
    assert "key" not in {o["name"] for o in cut.get_response()["outputs"]}
    assert cut.as_numpy("num_detections").tolist() == [detected["count"]]
    uncut = client.infer(MODEL, [image], outputs=[triton.InferRequestedOutput("num_detections")])
    assert uncut.as_numpy("num_detections")[0] >= detected["count"]


def test_a_version_the_model_has_and_one_it_has_not(client, embedded, detected):
    assert client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready(MODEL, "7")
    assert client.get_model_metadata(MODEL, "1")["versions"] == ["1"]
    image = triton.InferInput("image_bytes", [1], "BYTES")
    image.set_data_from_numpy(np.array([SLIDE], dtype=object), binary_data=True)
    count = triton.InferRequestedOutput("num_detections")
    result = client.infer(
        MODEL, [image], model_version="1", outputs=[count], parameters={"threshold": THRESHOLD}
    )
    assert result.get_response()["model_version"] == "1"
    assert result.as_numpy("num_detections").tolist() == [detected["count"]]
    # Its own client: the refusal closes the connection (see the test below).
    with triton.InferenceServerClient(embedded.url.removeprefix("http://")) as other:
        with pytest.raises(InferenceServerException) as exc:
            other.infer(MODEL, [image], model_version="7", outputs=[count])
    assert exc.value.status() == "404" and exc.value.message()


def test_a_kept_alive_connection_survives_a_refused_infer(embedded):
    """A refusal answered before the body is read (an unknown version) may close the
    connection, but then it must say ``Connection: close``: clients that keep connections
    (tritonclient, KServe's httpx, ``requests.Session``) send their next request on it."""
    conn = http.client.HTTPConnection("127.0.0.1", embedded.port, timeout=30)
    try:
        body = b'{"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", '
        body += b'"data": ["aGVsbG8="]}]}'
        conn.request("POST", f"/v2/models/{MODEL}/versions/7/infer", body=body)
        refused = conn.getresponse()
        refused.read()
        assert refused.status == 404
        said = refused.getheader("Connection")
        time.sleep(0.3)  # the server's close, if any, reaches this side first
        conn.request("GET", "/v2/health/live")
        live = conn.getresponse()
        assert live.status == 200 and json.loads(live.read()) == {"live": True}, said
    finally:
        conn.close()


def test_a_non_image_is_a_4xx_the_client_reads(client, embedded):
    junk = b"this is not an image, only some text" * 10
    image = triton.InferInput("image_bytes", [1], "BYTES")
    image.set_data_from_numpy(np.array([junk], dtype=object), binary_data=True)
    with pytest.raises(InferenceServerException) as exc:
        client.infer(MODEL, [image])
    status = int(exc.value.status())
    assert 400 <= status < 500
    message = exc.value.message()
    assert message and "exception occurred in the client" not in message
    # The same request by hand: the protocol's {"error": ...}, with the gateway's code.
    body, length = triton.InferenceServerClient.generate_request_body([image])
    resp = requests.post(
        embedded.url + f"/v2/models/{MODEL}/infer",
        data=body,
        headers={"Inference-Header-Content-Length": str(length)},
        timeout=60,
    )
    assert resp.status_code == status
    assert resp.headers["Content-Type"].startswith("application/json")
    doc = resp.json()
    assert doc["error"] == message and doc["code"] and doc["request_id"]


def test_json_text_that_is_not_base64_is_refused(client):
    image = triton.InferInput("image_bytes", [1], "BYTES")
    image.set_data_from_numpy(np.array([b"not base64 at all!"], dtype=object), binary_data=False)
    with pytest.raises(InferenceServerException, match="base64") as exc:
        client.infer(MODEL, [image])
    assert exc.value.status() == "400"


# --- KServe's InferenceRESTClient ------------------------------------------------------------


def _kserve(call):
    """``call(client)`` awaited on a fresh V2 ``InferenceRESTClient``, closed after."""

    async def run():
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
        try:
            return await call(client)
        finally:
            await client.close()

    return asyncio.run(run())


def _kserve_infer(url: str, request: InferRequest):
    return _kserve(lambda client: client.infer(url, request, model_name=MODEL))


def test_kserve_rest_client_health(embedded):
    async def health(client):
        return (
            await client.is_server_live(embedded.url),
            await client.is_server_ready(embedded.url),
            await client.is_model_ready(embedded.url, MODEL),
            await client.is_model_ready(embedded.url, "no-such-service"),
        )

    assert _kserve(health) == (True, True, True, False)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "base64-json"])
def test_kserve_rest_client_matches_detect(embedded, detected, binary):
    image = InferInput("image_bytes", [1], "BYTES")
    data = SLIDE if binary else base64.b64encode(SLIDE)
    image.set_data_from_numpy(np.array([data], dtype=object), binary_data=binary)
    names = ("detection_boxes", "detection_scores", "detection_classes_as_text", "num_detections")
    request = InferRequest(
        MODEL,
        [image],
        request_id="k-1",
        parameters={"threshold": THRESHOLD},
        request_outputs=[RequestedOutput(n, {"binary_data": binary}) for n in names],
    )
    response = _kserve_infer(embedded.url, request)
    assert response.id == "k-1" and response.model_name == MODEL
    by_name = {o.name: o for o in response.outputs}
    assert list(by_name) == list(names)
    boxes, scores, texts, counts = (by_name[n].as_numpy() for n in names)
    assert boxes.shape == (1, detected["count"], 4)
    _check_detections(boxes[0], scores[0], counts[0], detected, texts[0])


def test_kserve_rest_client_reads_the_error(embedded):
    image = InferInput("image_bytes", [1], "BYTES")
    image.set_data_from_numpy(np.array([b"GIF89a but not really"], dtype=object))
    with pytest.raises(httpx.HTTPStatusError) as exc:
        _kserve_infer(embedded.url, InferRequest(MODEL, [image]))
    assert 400 <= exc.value.response.status_code < 500
    error = exc.value.response.json()["error"]
    assert error and error in str(exc.value)
