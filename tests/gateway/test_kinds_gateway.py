"""Services of each kind through a running gateway (functions-framework) and real model
servers: KServe's ModelServer hosting the project's small deterministic classifier behind a
``classification`` service and an echo model behind a ``passthrough`` service, with API
keys, allow lists, quotas, CORS and usage records as for the detector."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from helpers import b64, encode, run_cli, sha
from process_guard import process_fixture
from procs import classifier_service, start_gateway, start_kind_models, unreachable_service
from synthetic import make_slide

LAB_KEY = "lab-key-7c1d2e3f4a5b"
CAM_KEY = "cam-key-9a8b7c6d5e4f"
OTHER_KEY = "other-key-1b2c3d4e5f6a"
ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def slide() -> bytes:
    """Three eosinophils: the classifier says ``eosinophils``."""
    cells = [(80, 70, 40), (200, 150, 42), (300, 80, 40)]
    return encode(make_slide(400, 240, cells, seed=4), "JPEG")


@pytest.fixture(scope="module")
def blank() -> bytes:
    """Bare glass, no cells: the classifier says ``none``."""
    return encode(np.full((240, 400, 3), (228, 221, 222), dtype=np.uint8), "JPEG")


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    path = tmp_path_factory.mktemp("echo") / "control.json"
    path.write_text("{}")
    return path


@process_fixture(scope="module")
def models(control):
    cls, echo = start_kind_models(echo_control=control)
    yield cls, echo
    echo.stop()
    cls.stop()


@process_fixture(scope="module")
def gateway(models, tmp_path_factory):
    cls, echo = models
    allow = ["key:lab-script", "key:cam"]
    config = {
        "services": {
            "eos": {},
            "cls": classifier_service(cls.url, allow=allow, description="slide classifier"),
            "echo": {
                "kind": "passthrough",
                "backend": {"url": echo.url, "model": "echo", "timeout_s": 1},
                "allow": allow,
            },
            "gone": unreachable_service(),
        },
        "auth": {
            "api_keys": [
                {"id": "lab-script", "sha256": sha(LAB_KEY)},
                {"id": "cam", "sha256": sha(CAM_KEY)},
                {"id": "other", "sha256": sha(OTHER_KEY)},
            ],
            "api_keys_firestore": False,
        },
        "cors": {"origins": [ORIGIN]},
        "quotas": {"principals": {"key:cam": {"daily_images": 4}}},
    }
    workdir = tmp_path_factory.mktemp("gateway")
    proc = start_gateway(config, workdir=workdir)
    yield proc
    proc.stop()


def call(
    gw,
    method: str,
    path: str,
    body: bytes | None = None,
    key: str | None = LAB_KEY,
    content_type: str = "application/json",
    headers: dict | None = None,
):
    """(status, headers, body bytes); never raises for HTTP errors."""
    h = {"Content-Type": content_type, **(headers or {})}
    if key is not None:
        h["X-API-Key"] = key
    req = urllib.request.Request(gw.url + path, data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def post_json(gw, path: str, doc, key: str | None = LAB_KEY):
    status, headers, body = call(gw, "POST", path, json.dumps(doc).encode(), key)
    return status, headers, json.loads(body)


def test_services_show_their_kind(gateway):
    status, _, body = call(gateway, "GET", "/v1/services", key=None)
    assert status == 200
    services = {s["name"]: s for s in json.loads(body)["services"]}
    assert {n: s["kind"] for n, s in services.items()} == {
        "eos": "detection",
        "cls": "classification",
        "echo": "passthrough",
        "gone": "passthrough",
    }
    assert services["cls"]["max_side"] == 320 and "tile" not in services["cls"]
    assert services["eos"]["tile"]["width"] == 960
    assert "url" not in json.dumps(services)


def test_classify_every_input_form(gateway, slide, blank):
    status, headers, doc = post_json(
        gateway, "/v1/services/cls:classify", {"image": b64(slide), "key": "s1"}
    )
    assert status == 200, doc
    assert (doc["service"], doc["key"], doc["label"]) == ("cls", "s1", "eosinophils")
    assert [s["label"] for s in doc["scores"]] == ["eosinophils", "none"]
    assert doc["score"] == doc["scores"][0]["score"] > 0.5
    assert abs(sum(s["score"] for s in doc["scores"]) - 1) < 1e-5
    assert doc["image"] == {"width": 400, "height": 240, "format": "JPEG"}
    assert doc["model"]["name"] == "cls" and doc["request_id"] == headers["X-Request-Id"]

    status, _, raw = call(
        gateway, "POST", "/v1/services/cls:classify", blank, content_type="image/jpeg"
    )
    doc = json.loads(raw)
    assert status == 200, doc
    assert doc["label"] == "none" and doc["key"] is None
    assert [s["label"] for s in doc["scores"]] == ["none", "eosinophils"]

    boundary = "kinds-boundary"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="key"\r\n\r\nm1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="s.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + slide
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, _, raw = call(
        gateway,
        "POST",
        "/v1/services/cls:classify",
        form,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    doc = json.loads(raw)
    assert status == 200, doc
    assert (doc["key"], doc["label"]) == ("m1", "eosinophils")


def test_classify_refuses_detection_options_and_bad_images(gateway, slide):
    status, _, doc = post_json(
        gateway, "/v1/services/cls:classify", {"image": b64(slide), "threshold": 0.5}
    )
    assert (status, doc["code"]) == (400, "bad_request")
    status, _, doc = post_json(gateway, "/v1/services/cls:classify", {"image": b64(b"junk")})
    assert (status, doc["code"]) == (415, "unsupported_image")


def test_predict_on_a_classifier_answers_per_instance_in_order(gateway, slide, blank):
    rows = {
        "instances": [
            {"image_bytes": {"b64": b64(blank)}, "key": "b"},
            {"image_bytes": {"b64": b64(slide)}, "key": "a"},
        ]
    }
    status, _, doc = post_json(gateway, "/v1/models/cls:predict", rows)
    assert status == 200, doc
    preds = doc["predictions"]
    assert [p["key"] for p in preds] == ["b", "a"]
    assert all(p["labels"] == ["eosinophils", "none"] for p in preds)
    assert preds[0]["scores"][1] > preds[0]["scores"][0]
    assert preds[1]["scores"][0] > preds[1]["scores"][1]

    cols = {"inputs": {"image_bytes": [{"b64": b64(slide)}], "key": ["c"]}}
    status, _, doc = post_json(gateway, "/v1/models/cls:predict", cols)
    assert status == 200, doc
    assert doc["outputs"]["key"] == ["c"] and doc["outputs"]["scores"] == [preds[1]["scores"]]


def test_routes_that_do_not_fit_the_kind_name_the_one_that_does(gateway, slide):
    cases = [
        ("/v1/services/cls:detect", ":classify"),
        ("/v1/services/eos:classify", ":detect"),
        ("/v1/services/echo:classify", ":predict"),
        ("/v1/services/echo:detect", ":predict"),
    ]
    for path, fits in cases:
        status, _, doc = post_json(gateway, path, {"image": b64(slide)})
        assert (status, doc["code"]) == (400, "wrong_route"), path
        assert fits in doc["error"], (path, doc["error"])


def test_passthrough_body_and_answer_are_unchanged(gateway):
    body = b'{"signature_name": "serving_default", "instances": [[1, 2.5], {"x": "y"}, null]}'
    status, _, answer = call(gateway, "POST", "/v1/models/echo:predict", body)
    assert status == 200, answer
    assert json.loads(answer) == {"predictions": [[1, 2.5], {"x": "y"}, None]}

    cols = {"inputs": {"a": [[1, 2], [3, 4]], "b": [5, 6]}}
    status, _, doc = post_json(gateway, "/v1/models/echo:predict", cols)
    assert (status, doc) == (200, {"outputs": cols["inputs"]})


def test_passthrough_model_errors(gateway, control):
    status, _, doc = post_json(gateway, "/v1/models/echo:predict", {"instances": ["refuse"]})
    assert (status, doc["code"]) == (400, "model_rejected")
    assert "refused: this model does not take 'refuse'" in doc["error"]
    status, _, doc = post_json(gateway, "/v1/models/echo:predict", {"instances": ["crash"]})
    assert (status, doc["code"]) == (502, "backend_bad_response")
    status, _, doc = post_json(gateway, "/v1/models/gone:predict", {"instances": [1]})
    assert (status, doc["code"]) == (503, "backend_unavailable")
    control.write_text(json.dumps({"delay_s": 3}))
    try:
        status, _, doc = post_json(gateway, "/v1/models/echo:predict", {"instances": [1]})
    finally:
        control.write_text("{}")
    assert (status, doc["code"]) == (504, "backend_timeout")
    for bad in (b"not json", b"[1, 2]", b'{"rows": [1]}'):
        status, _, raw = call(gateway, "POST", "/v1/models/echo:predict", bad)
        assert status == 400 and json.loads(raw)["code"] in ("bad_request", "invalid_json"), bad


def test_auth_and_allow_lists_apply_to_every_kind(gateway, slide):
    image = {"image": b64(slide)}
    rows = {"instances": [1]}
    for path, doc in (("/v1/services/cls:classify", image), ("/v1/models/echo:predict", rows)):
        status, headers, body = post_json(gateway, path, doc, key=None)
        assert (status, body["code"]) == (401, "unauthenticated"), path
        assert "WWW-Authenticate" in headers
        status, _, body = post_json(gateway, path, doc, key="not-a-key")
        assert status == 401, path
        status, _, body = post_json(gateway, path, doc, key=OTHER_KEY)
        assert (status, body["code"]) == (403, "forbidden"), path
        assert "key:other" in body["error"]


def test_cors_on_the_new_routes(gateway, slide):
    status, headers, _ = call(
        gateway,
        "OPTIONS",
        "/v1/services/cls:classify",
        key=None,
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert status == 204 and headers["Access-Control-Allow-Origin"] == ORIGIN
    status, headers, _ = call(
        gateway,
        "POST",
        "/v1/models/echo:predict",
        b'{"instances": [1]}',
        headers={"Origin": ORIGIN},
    )
    assert status == 200 and headers["Access-Control-Allow-Origin"] == ORIGIN


def run_report(gateway) -> dict:
    config = str(gateway.workdir / "gateway-config.json")
    out = run_cli("usage", "--json", env={"GATEWAY_CONFIG": config}, cwd=gateway.workdir)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_quota_counts_images_of_both_kinds_and_usage_is_recorded(gateway, slide):
    """key:cam may send 4 images a day, whichever service they go to."""
    image = {"image": b64(slide)}
    outcomes = [
        post_json(gateway, "/v1/services/cls:classify", image, key=CAM_KEY)[0],  # 1
        post_json(gateway, "/v1/models/echo:predict", {"instances": [1, 2]}, key=CAM_KEY)[0],  # 3
        post_json(gateway, "/v1/models/echo:predict", {"inputs": {"x": [1, 2]}}, key=CAM_KEY)[0],
        post_json(gateway, "/v1/services/cls:classify", image, key=CAM_KEY)[0],  # 4
    ]
    status, headers, doc = post_json(
        gateway, "/v1/models/echo:predict", {"instances": [1]}, key=CAM_KEY
    )
    outcomes.append(status)
    outcomes.append(post_json(gateway, "/v1/services/cls:classify", image, key=OTHER_KEY)[0])
    assert outcomes == [200, 200, 429, 200, 429, 403]
    assert doc["code"] == "quota_exceeded" and int(headers["Retry-After"]) > 0

    rows = {(r["principal"], r["service"]): r for r in run_report(gateway)["rows"]}
    cls, echo = rows[("key:cam", "cls")], rows[("key:cam", "echo")]
    assert (cls["requests"], cls["images"], cls["errors"]) == (2, 2, 0)
    assert (echo["requests"], echo["images"], echo["errors"]) == (3, 2, 2)
    # A caller the service does not allow is refused before admission: logged, not stored.
    assert ("key:other", "cls") not in rows
