"""TF Serving's REST API tried as a client written for TF Serving would, end to end.

The gateway runs under ``functions-framework``; behind it KServe's ``ModelServer``
(tools/model_server.py) speaks TF Serving's protocol with two versions and two labels.
Each case names its source: TF Serving's ``api_rest.md`` (the REST API document),
``http_rest_api_handler_test.cc`` and ``json_tensor_test.cc``.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import requests
from helpers import ERROR_KEYS, assert_error, b64, jpeg, real_photo
from PIL import Image
from process_guard import process_fixture
from procs import start_gateway, start_model_server

APP = "https://webapp.example"


def slide() -> bytes:
    """The real photograph every case sends (skips, saying why, where it is missing)."""
    return real_photo("real-slide.jpg").read_bytes()


def webapp_body(text: str | None = None, key: str = "eos") -> dict:
    """The seed web app's request, unchanged."""
    text = text if text is not None else b64(slide())
    return {"instances": [{"image_bytes": {"b64": text}, "key": key}]}


@process_fixture(scope="module")
def model_server():
    proc = start_model_server(
        extra=[
            "--versions",
            "1,2",
            "--version-labels",
            "stable=1,canary=2",
            "--pad-detections",
            "--max-detections",
            "100",
        ]
    )
    yield proc
    proc.stop()


@process_fixture(scope="module")
def proxied(model_server):
    config = {
        "services": {
            "eos": {"backend": {"url": model_server.url, "model": "eos", "timeout_s": 20}},
            "local": {},
        },
        "default_service": "eos",
        "cors": {"origins": [APP]},
    }
    proc = start_gateway(config)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def answers(proxied) -> dict:
    """The unpinned answer, asked once for the module."""
    resp = requests.post(f"{proxied.url}/v1/models/eos:predict", json=webapp_body(), timeout=120)
    assert resp.status_code == 200, resp.text[:300]
    return resp.json()["predictions"][0]


# -- versions and labels: api_rest.md "Predict API" ---------------------------------------
# POST http://host:port/v1/models/${MODEL_NAME}[/versions/${VERSION}|/labels/${LABEL}]:predict


@pytest.mark.parametrize("pin", ["/versions/1", "/versions/2", "/labels/stable", "/labels/canary"])
def test_predict_on_a_pinned_version_or_label(proxied, answers, pin):
    # http_rest_api_handler_test.cc, Predict: "Query specific versions"
    resp = requests.post(
        f"{proxied.url}/v1/models/eos{pin}:predict", json=webapp_body(), timeout=120
    )
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["predictions"][0] == answers  # every version serves the same model


@pytest.mark.parametrize(
    "pin,status,code,text",
    [
        # http_rest_api_handler_test.cc, PredictModelNameVersionErrors: an invalid
        # version number is NOT_FOUND
        ("/versions/7", 404, "unknown_version", "Servable not found for request: Specific(eos, 7)"),
        # server_core.cc: an unknown label is INVALID_ARGUMENT
        ("/labels/nope", 400, "unknown_label", "Unrecognized servable version label: nope"),
    ],
)
def test_the_model_server_s_refusal_passes_through(proxied, embedded, pin, status, code, text):
    for gw in (proxied, embedded):
        resp = requests.post(f"{gw.url}/v1/models/eos{pin}:predict", json=webapp_body(), timeout=60)
        assert assert_error(resp, status, code)["error"] == text  # TF Serving's own text


def test_the_embedded_detector_is_version_1(embedded):
    resp = requests.post(
        f"{embedded.url}/v1/models/eos/versions/1:predict", json=webapp_body(), timeout=60
    )
    assert resp.status_code == 200 and resp.json()["predictions"][0]["num_detections"] > 10


# -- status: api_rest.md "Model status API", handler test GetStatus ------------------------


def test_model_status_lists_the_model_server_s_versions(proxied, embedded):
    rows = requests.get(f"{proxied.url}/v1/models/eos", timeout=30).json()
    assert [r["version"] for r in rows["model_version_status"]] == ["2", "1"]
    assert {r["state"] for r in rows["model_version_status"]} == {"AVAILABLE"}
    rows = requests.get(f"{embedded.url}/v1/models/eos", timeout=30).json()
    assert rows == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


@pytest.mark.parametrize("pin,version", [("/versions/1", "1"), ("/labels/canary", "2")])
def test_status_of_one_version_or_label(proxied, pin, version):
    # handler test GetStatus: "Get status of specific version"
    doc = requests.get(f"{proxied.url}/v1/models/eos{pin}", timeout=30).json()
    assert [r["version"] for r in doc["model_version_status"]] == [version]


def test_status_of_an_unknown_version_or_label(proxied, embedded):
    for gw in (proxied, embedded):
        body = assert_error(
            requests.get(f"{gw.url}/v1/models/eos/versions/9", timeout=30), 404, "unknown_version"
        )
        assert "9" in body["error"]
        assert_error(
            requests.get(f"{gw.url}/v1/models/eos/labels/x", timeout=30), 400, "unknown_label"
        )


# -- metadata: api_rest.md "Model Metadata API" ------------------------------------------


@pytest.mark.parametrize(
    "pin,version",
    [("", "2"), ("/versions/1", "1"), ("/labels/stable", "1"), ("/labels/canary", "2")],
)
def test_metadata_is_the_model_server_s(proxied, pin, version):
    doc = requests.get(f"{proxied.url}/v1/models/eos{pin}/metadata", timeout=30).json()
    assert doc["model_spec"] == {"name": "eos", "signature_name": "", "version": version}
    sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert set(sig["inputs"]) == {"image_bytes", "key"}
    assert sig["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert {"detection_boxes", "detection_multiclass_scores", "num_detections"} <= set(
        sig["outputs"]
    )
    assert sig["method_name"] == "tensorflow/serving/predict"


def test_the_embedded_detector_describes_its_signature(embedded):
    for pin in ("", "/versions/1"):
        doc = requests.get(f"{embedded.url}/v1/models/eos{pin}/metadata", timeout=30).json()
        assert doc["model_spec"]["version"] == "1"
        sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert set(sig["inputs"]) == {"image_bytes", "key"}
        assert set(sig["outputs"]) >= {"detection_boxes", "detection_scores", "num_detections"}
    assert_error(
        requests.get(f"{embedded.url}/v1/models/eos/versions/2/metadata", timeout=30),
        404,
        "unknown_version",
    )


# -- the whole answer --------------------------------------------------------------------


def test_predict_cuts_nothing_unless_asked(proxied, answers):
    scores = answers["detection_scores"]
    assert min(scores) < 0.3  # the service's threshold does not apply to :predict
    assert 0.0 not in scores  # the export's zero padding is cut at num_detections
    every = requests.post(
        f"{proxied.url}/v1/services/eos:detect?threshold=0",
        json={"image": b64(slide())},
        timeout=120,
    ).json()
    assert every["count"] == answers["num_detections"]
    default = requests.post(
        f"{proxied.url}/v1/services/eos:detect",
        json={"image": b64(slide())},
        timeout=120,
    ).json()
    assert default["count"] == sum(s >= 0.3 for s in scores)  # :detect keeps its default
    low = requests.post(
        f"{proxied.url}/v1/models/eos:predict?threshold=0.1", json=webapp_body(), timeout=120
    ).json()["predictions"][0]
    assert low["detection_scores"] == [s for s in scores if s >= 0.1]


def test_per_detection_outputs_follow_their_detection(answers):
    # The model server gives each detection [1 - score, score] as its multiclass scores:
    # after the merge they must still sit beside their own detection.
    n = answers["num_detections"]
    multi = answers["detection_multiclass_scores"]
    assert len(multi) == len(answers["detection_anchor_indices"]) == n > 10
    assert [m[1] for m in multi] == pytest.approx(answers["detection_scores"], abs=1e-6)
    assert "image_info" not in answers  # the tile's, not the slide's


def test_columnar_answers_are_rectangular(proxied):
    # api_rest.md "Columnar format": outputs are tensors, the batch their first dimension
    blank = requests.post(
        f"{proxied.url}/v1/models/eos:predict",
        json={"inputs": {"image_bytes": [{"b64": b64(slide())}, {"b64": _blank()}]}},
        timeout=120,
    )
    assert blank.status_code == 200, blank.text[:300]
    out = blank.json()["outputs"]
    n0, n1 = out["num_detections"]
    assert n0 > 10 and n1 == 0
    assert np.array(out["detection_boxes"]).shape == (2, n0, 4)
    assert np.array(out["detection_multiclass_scores"]).shape == (2, n0, 2)
    assert np.array(out["detection_classes_as_text"]).shape == (2, n0)
    assert out["detection_scores"][1] == [0.0] * n0


def _blank() -> str:
    return b64(jpeg(Image.new("RGB", (320, 240), (245, 245, 245)), quality=75))


# -- base64 as TF Serving reads it ------------------------------------------------------


def test_base64_as_encoders_write_it(embedded):
    data = slide()
    url = f"{embedded.url}/v1/models/eos:predict"
    plain = requests.post(url, json=webapp_body(b64(data)), timeout=60).json()["predictions"][0]
    for text in (
        base64.encodebytes(data).decode(),  # `base64` without -w0
        base64.encodebytes(data).decode().replace("\n", "\r\n"),  # MIME
        b64(data) + "\n",
        b64(data).rstrip("="),
    ):
        resp = requests.post(url, json=webapp_body(text), timeout=60)
        assert resp.status_code == 200, resp.text[:300]
        assert resp.json()["predictions"][0] == plain
    detect = requests.post(
        f"{embedded.url}/v1/services/eos:detect",
        json={"image": base64.encodebytes(data).decode()},
        timeout=60,
    )
    assert detect.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"instances": []},  # json_tensor_test.cc: no instances
        {"instances": [{"b64": "QQ=="}], "inputs": {"image_bytes": [{"b64": "QQ=="}]}},
        # json_tensor_test.cc SingleUnnamedTensorErrors: both formats, "Not formatted correctly"
        {"instances": [{"image_bytes": {"b64": 5}}]},  # b64 not a string
        {
            "instances": [
                {"image_bytes": {"b64": b64(b"\xfb\xff\xfe").replace("+", "-").replace("/", "_")}}
            ]
        },
    ],
)
def test_what_tf_serving_refuses_stays_refused(embedded, body):
    resp = requests.post(f"{embedded.url}/v1/models/eos:predict", json=body, timeout=30)
    assert resp.status_code == 400 and set(resp.json()) >= ERROR_KEYS


def test_where_good_http_and_tf_serving_differ(embedded):
    # handler test UnsupportedApiCalls: TF Serving answers a GET on :predict with 400
    # "Malformed request"; the gateway with 405 and an Allow header (docs/api.md).
    resp = requests.get(f"{embedded.url}/v1/models/eos:predict", timeout=30)
    assert_error(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["Allow"]
    # json_tensor_test.cc TensorFromNonNullTerminatedBuffer reads a document and ignores
    # what follows its buffer; the gateway refuses trailing bytes in a body.
    raw = json.dumps(webapp_body()).encode() + b"X"
    resp = requests.post(
        f"{embedded.url}/v1/models/eos:predict",
        data=raw,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert_error(resp, 400, "invalid_json")
    # handler test UnsupportedApiCalls: a version that is not a number is a 400 there too
    for path in ("/versions/HELLO:predict", "/versions/HELLO", "/versions/-1/metadata"):
        resp = requests.request(
            "POST" if path.endswith(":predict") else "GET",
            f"{embedded.url}/v1/models/eos{path}",
            json=webapp_body(),
            timeout=30,
        )
        assert_error(resp, 400, "bad_request")


# -- the function's own URL --------------------------------------------------------------


def test_post_to_the_function_s_url_is_predict_on_the_default_service(gateway):
    direct = requests.post(f"{gateway.url}/v1/models/eos:predict", json=webapp_body(), timeout=120)
    root = requests.post(f"{gateway.url}/", json=webapp_body(), timeout=120)
    assert root.status_code == 200, root.text[:300]
    assert root.json() == direct.json()


def test_the_web_app_s_preflight_and_post_on_the_function_s_url(proxied):
    pre = requests.options(
        f"{proxied.url}/",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
        timeout=30,
    )
    assert pre.status_code in (200, 204)
    assert pre.headers["Access-Control-Allow-Origin"] == APP
    resp = requests.post(
        f"{proxied.url}/", json=webapp_body(), headers={"Origin": APP}, timeout=120
    )
    assert resp.status_code == 200 and resp.headers["Access-Control-Allow-Origin"] == APP


def test_get_on_the_function_s_url_stays_the_demo_page(embedded):
    resp = requests.get(f"{embedded.url}/", timeout=30)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/html")
