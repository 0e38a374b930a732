"""Vertex AI scripts against a running gateway (functions-framework): Google's own
``PredictionServiceClient`` over its REST transport and ``aiplatform.Endpoint``, pointed
at the gateway, without credentials and with an API key, on the embedded detector and on
a classifier served by KServe's ModelServer.  Errors, admission's included, come back in
Google's shape and become the client library's exceptions; a key sent in the query never
reaches a log line or a usage record."""

from __future__ import annotations

import base64
import json

import pytest
import requests
from certserver import GATEWAY_AUDIENCE, SA_EMAIL, google_claims
from google.api_core import exceptions as core_exceptions
from google.api_core.client_options import ClientOptions
from google.auth import api_key as google_api_key
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import aiplatform, aiplatform_v1
from google.cloud.aiplatform import initializer
from google.cloud.aiplatform.v1.schema.predict import params as schema_params
from google.cloud.aiplatform.v1.schema.predict import prediction as schema_prediction
from google.protobuf import json_format
from helpers import SAMPLE_SLIDE, encode, sha, wait_until
from procs import free_port, start_gateway, start_model_server
from synthetic import make_slide

from gateway.usage.sqlite_store import SQLiteStore

pytestmark = pytest.mark.process

PROJECT, LOCATION = "my-lab-project", "europe-west1"
LAB_KEY = "vertex-lab-key-5e6f7a8b9c0d"
TIGHT_KEY = "vertex-tight-key-1a2b3c4d5e6f"
SLIDE = SAMPLE_SLIDE.read_bytes()
CONTENT = base64.b64encode(SLIDE).decode()
DETECTION = schema_prediction.ImageObjectDetectionPredictionResult
CLASSIFICATION = schema_prediction.ClassificationPredictionResult


def endpoint(service: str) -> str:
    return f"projects/{PROJECT}/locations/{LOCATION}/endpoints/{service}"


def client(gw, api_key: str | None = None) -> aiplatform_v1.PredictionServiceClient:
    """The client as a Vertex AI script makes it, its endpoint changed to the gateway
    (with its scheme: the REST transport takes ``http://`` as given)."""
    if api_key is None:
        return aiplatform_v1.PredictionServiceClient(
            transport="rest",
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=gw.url),
        )
    return aiplatform_v1.PredictionServiceClient(
        transport="rest", client_options=ClientOptions(api_endpoint=gw.url, api_key=api_key)
    )


def detect(gw, threshold: float, key: str | None = None) -> dict:
    headers = {"X-API-Key": key} if key else {}
    body = {"image": CONTENT, "threshold": threshold}
    r = requests.post(f"{gw.url}/v1/services/eos:detect", json=body, headers=headers, timeout=120)
    assert r.status_code == 200, r.text[:300]
    return r.json()


def assert_matches_detect(typed, detected: dict) -> None:
    """The same detections as ``:detect``'s, best first, boxes back in pixels."""
    width, height = detected["image"]["width"], detected["image"]["height"]
    assert len(typed.ids) == detected["count"] > 0
    expected = sorted(detected["detections"], key=lambda d: -d["score"])
    assert list(typed.confidences) == pytest.approx([d["score"] for d in expected], abs=1e-6)
    assert list(typed.display_names) == [d["label"] for d in expected]
    assert set(typed.ids) == {1}  # the model's class value, an int64 read as an int
    for bbox, d in zip(typed.bboxes, expected, strict=True):
        x_min, x_max, y_min, y_max = list(bbox)
        back = [x_min * width, y_min * height, x_max * width, y_max * height]
        assert back == pytest.approx(d["box"], abs=0.01)


def error_of(response: requests.Response, status: int, reason: str) -> dict:
    """Google's error shape, with the gateway's request id in the message and header."""
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == status
    rid = response.headers["X-Request-Id"]
    assert rid in error["message"]
    (info,) = error["details"]
    assert (info["reason"], info["metadata"]["request_id"]) == (reason, rid)
    return error


# --- without credentials: the embedded defaults ------------------------------------------------


def test_detection_counts_as_detect_does(embedded):
    answer = client(embedded).predict(
        endpoint=endpoint("eos"),
        instances=[{"content": CONTENT, "mimeType": "image/jpeg"}],
        parameters={"confidenceThreshold": 0.3, "maxPredictions": 1000},
    )
    assert len(answer.predictions) == 1
    typed = DETECTION.from_map(answer.predictions[0])
    assert_matches_detect(typed, detect(embedded, 0.3))
    assert answer.deployed_model_id == "eos"
    assert answer.model == f"projects/{PROJECT}/locations/{LOCATION}/models/eos"
    assert (answer.model_display_name, answer.model_version_id) == ("eos", "1")


def test_vertexs_defaults_answer_the_ten_best_at_any_score(embedded):
    answer = client(embedded).predict(endpoint=endpoint("eos"), instances=[{"content": CONTENT}])
    typed = DETECTION.from_map(answer.predictions[0])
    every = sorted((d["score"] for d in detect(embedded, 0.0)["detections"]), reverse=True)
    assert len(every) > 10
    assert list(typed.confidences) == pytest.approx(every[:10], abs=1e-6)


def test_typed_parameters_and_several_instances(embedded):
    params = schema_params.ImageObjectDetectionPredictionParams(
        confidence_threshold=0.5, max_predictions=5
    ).to_value()
    answer = client(embedded).predict(
        endpoint=endpoint("eos"), instances=[{"content": CONTENT}] * 2, parameters=params
    )
    assert len(answer.predictions) == 2
    for pred in answer.predictions:
        typed = DETECTION.from_map(pred)
        assert len(typed.ids) == 5 and min(typed.confidences) >= 0.5


def test_aiplatform_endpoint_predicts_through_the_gateway(embedded):
    """``aiplatform.Endpoint`` reads the endpoint resource, then predicts, both here."""
    try:
        aiplatform.init(
            project=PROJECT,
            location=LOCATION,
            api_endpoint=embedded.url,
            api_transport="rest",
            credentials=AnonymousCredentials(),
        )
        found = aiplatform.Endpoint("eos").predict(
            instances=[{"content": CONTENT}],
            parameters={"confidenceThreshold": 0.3, "maxPredictions": 100},
        )
        with pytest.raises(core_exceptions.NotFound, match="unknown service 'nope'"):
            aiplatform.Endpoint("nope").predict(instances=[{"content": CONTENT}])
    finally:
        initializer.global_config.__init__()  # the SDK's settings are process-wide
    typed = json_format.ParseDict(found.predictions[0], DETECTION.pb(DETECTION()))
    assert_matches_detect(typed, detect(embedded, 0.3))
    assert found.deployed_model_id == "eos"
    assert found.model_resource_name == f"projects/{PROJECT}/locations/{LOCATION}/models/eos"
    assert found.model_version_id == "1"


def test_the_endpoint_resource(embedded):
    r = requests.get(f"{embedded.url}/v1/{endpoint('eos')}", timeout=30)
    assert r.status_code == 200
    doc = r.json()
    assert doc["name"] == endpoint("eos")
    assert doc["deployedModels"] == [
        {
            "id": "eos",
            "model": f"projects/{PROJECT}/locations/{LOCATION}/models/eos",
            "displayName": "eos",
        }
    ]
    assert doc["trafficSplit"] == {"eos": 100} and doc["createTime"]
    error_of(
        requests.get(f"{embedded.url}/v1/{endpoint('nope')}", timeout=30), 404, "UNKNOWN_SERVICE"
    )


def test_bad_requests_become_the_clients_exceptions(embedded):
    with pytest.raises(core_exceptions.BadRequest) as caught:
        client(embedded).predict(endpoint=endpoint("eos"), instances=[{"content": "not base64!"}])
    exc = caught.value
    assert "instances[0].content is not valid base64" in exc.message
    assert exc.reason == "INVALID_BASE64" and exc.metadata["request_id"] in exc.message
    with pytest.raises(core_exceptions.BadRequest, match="maxPredictions"):
        client(embedded).predict(
            endpoint=endpoint("eos"),
            instances=[{"content": CONTENT}],
            parameters={"maxPredictions": 0},
        )
    with pytest.raises(core_exceptions.NotFound, match="unknown service 'nope'"):
        client(embedded).predict(endpoint=endpoint("nope"), instances=[{"content": CONTENT}])


def test_every_error_on_googles_paths_is_googles(embedded):
    url = f"{embedded.url}/v1/{endpoint('eos')}"
    error = error_of(requests.post(f"{url}:predict", data=b"{", timeout=30), 400, "INVALID_JSON")
    assert error["status"] == "INVALID_ARGUMENT"
    many = {"instances": [{"content": CONTENT[:400]}] * 17}
    error = error_of(
        requests.post(f"{url}:predict", json=many, timeout=30), 413, "PAYLOAD_TOO_LARGE"
    )
    assert error["status"] == "INVALID_ARGUMENT"
    junk = {"instances": [{"content": base64.b64encode(b"GIF89a" + b"\0" * 64).decode()}]}
    error_of(requests.post(f"{url}:predict", json=junk, timeout=30), 422, "UNDECODABLE_IMAGE")
    error = error_of(requests.get(f"{url}:predict", timeout=30), 405, "METHOD_NOT_ALLOWED")
    assert error["status"] == "UNIMPLEMENTED"
    error = error_of(requests.post(f"{url}:rawPredict", json={}, timeout=30), 404, "NOT_FOUND")
    assert error["status"] == "NOT_FOUND"
    # a path the web framework refuses before the gateway routes it
    r = requests.get(f"{embedded.url}/v1/projects/a%0Ab", timeout=30)
    assert r.json()["error"]["status"] == "NOT_FOUND" and r.status_code == 404
    # the gateway's own routes keep the gateway's shape
    r = requests.post(f"{embedded.url}/v1/models/eos:predict", data=b"{", timeout=30)
    assert r.json()["code"] == "invalid_json"


# --- with API keys: a detector, a classifier, admission ----------------------------------------


@pytest.fixture(scope="module")
def classifier():
    proc = start_model_server(model="cls", extra=["--kind", "classification"])
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def keyed(classifier, standin, tmp_path_factory):
    config = {
        "services": {
            "eos": {},
            "cls": {
                "kind": "classification",
                "backend": {"url": classifier.url, "model": "cls", "timeout_s": 60},
                "max_side": 320,
            },
            "locked": {"allow": ["key:somebody-else"]},
            "gone": {
                "kind": "passthrough",
                "backend": {"url": f"http://127.0.0.1:{free_port()}", "retries": 0},
            },
        },
        "auth": {
            "api_keys": [
                {"id": "lab", "sha256": sha(LAB_KEY)},
                {"id": "tight", "sha256": sha(TIGHT_KEY)},
                {"id": "somebody-else", "sha256": sha("a key no test presents")},
            ],
            "api_keys_firestore": False,
            "google": {"audiences": [GATEWAY_AUDIENCE], "emails": [SA_EMAIL]},
            "certs_urls": {"google": standin.certs_url("google")},
        },
        "quotas": {"principals": {"key:tight": {"daily_images": 1}}},
    }
    workdir = tmp_path_factory.mktemp("gateway")
    proc = start_gateway(config, workdir=workdir)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def cells() -> bytes:
    """Three eosinophils: the classifier says ``eosinophils``."""
    cells = [(80, 70, 40), (200, 150, 42), (300, 80, 40)]
    return encode(make_slide(400, 240, cells, seed=4), "JPEG")


def usage_records(gw) -> dict[str, dict]:
    store = SQLiteStore(gw.workdir / ".gateway" / "usage.sqlite3")
    try:
        return {r["request_id"]: r for r in store.records()}
    finally:
        store.close()


def test_detection_with_an_api_key(keyed):
    answer = client(keyed, LAB_KEY).predict(
        endpoint=endpoint("eos"),
        instances=[{"content": CONTENT}],
        parameters={"confidenceThreshold": 0.3, "maxPredictions": 1000},
    )
    assert_matches_detect(DETECTION.from_map(answer.predictions[0]), detect(keyed, 0.3, LAB_KEY))


def test_classification_with_an_api_key(keyed, cells):
    r = requests.post(
        f"{keyed.url}/v1/services/cls:classify",
        json={"image": base64.b64encode(cells).decode()},
        headers={"X-API-Key": LAB_KEY},
        timeout=120,
    )
    assert r.status_code == 200, r.text[:300]
    classified = r.json()
    content = base64.b64encode(cells).decode()
    answer = client(keyed, LAB_KEY).predict(
        endpoint=endpoint("cls"), instances=[{"content": content}]
    )
    typed = CLASSIFICATION.from_map(answer.predictions[0])
    assert list(typed.display_names) == [s["label"] for s in classified["scores"]]
    assert list(typed.display_names)[0] == "eosinophils"
    assert list(typed.confidences) == pytest.approx(
        [s["score"] for s in classified["scores"]], abs=1e-6
    )
    assert sorted(typed.ids) == [0, 1]  # the labels' places in the model's order
    assert answer.deployed_model_id == "cls" and answer.model_display_name == "cls"
    best = client(keyed, LAB_KEY).predict(
        endpoint=endpoint("cls"),
        instances=[{"content": content}],
        parameters={"maxPredictions": 1},
    )
    assert list(CLASSIFICATION.from_map(best.predictions[0]).display_names) == ["eosinophils"]


class IdToken(Credentials):
    """An ID token, as ``IDTokenCredentials`` (google-auth) hold one; signed here by the
    stand-in for Google's keys."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def refresh(self, request) -> None:
        pass


def test_a_google_id_token_as_the_clients_credentials(keyed, keys):
    token = keys["g-1"].sign(google_claims())
    answer = aiplatform_v1.PredictionServiceClient(
        transport="rest",
        credentials=IdToken(token),
        client_options=ClientOptions(api_endpoint=keyed.url),
    ).predict(endpoint=endpoint("eos"), instances=[{"content": CONTENT}])
    assert len(DETECTION.from_map(answer.predictions[0]).ids) == 10
    wait_until(
        lambda: any(r["principal"] == f"google:{SA_EMAIL}" for r in usage_records(keyed).values()),
        "the request recorded under the token's account",
    )


def test_aiplatform_endpoint_with_an_api_key(keyed):
    """``aiplatform.Endpoint`` passes ``init``'s ``api_key`` to none of its clients: the
    key goes in as credentials (google-auth's API key credentials send
    ``x-goog-api-key``)."""
    try:
        aiplatform.init(
            project=PROJECT,
            location=LOCATION,
            api_endpoint=keyed.url,
            api_transport="rest",
            credentials=google_api_key.Credentials(LAB_KEY),
        )
        found = aiplatform.Endpoint("eos").predict(
            instances=[{"content": CONTENT}],
            parameters={"confidenceThreshold": 0.3, "maxPredictions": 100},
        )
    finally:
        initializer.global_config.__init__()
    typed = json_format.ParseDict(found.predictions[0], DETECTION.pb(DETECTION()))
    assert_matches_detect(typed, detect(keyed, 0.3, LAB_KEY))


def test_admission_errors_are_the_clients_exceptions(keyed):
    instances = [{"content": CONTENT}]
    # Without credentials (the client's session would try to refresh anonymous ones)
    r = requests.post(f"{keyed.url}/v1/{endpoint('eos')}:predict", json={"instances": instances})
    assert error_of(r, 401, "UNAUTHENTICATED")["status"] == "UNAUTHENTICATED"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    with pytest.raises(core_exceptions.Unauthorized, match="invalid API key"):
        client(keyed, "not-a-key").predict(endpoint=endpoint("eos"), instances=instances)
    with pytest.raises(core_exceptions.Forbidden, match="key:lab is not allowed") as caught:
        client(keyed, LAB_KEY).predict(endpoint=endpoint("locked"), instances=instances)
    assert caught.value.reason == "FORBIDDEN"
    with pytest.raises(core_exceptions.BadRequest, match="POST /v1/models/gone:predict") as caught:
        client(keyed, LAB_KEY).predict(endpoint=endpoint("gone"), instances=instances)
    assert caught.value.reason == "WRONG_ROUTE"
    tight = client(keyed, TIGHT_KEY)
    tight.predict(endpoint=endpoint("eos"), instances=instances)
    with pytest.raises(core_exceptions.TooManyRequests) as caught:
        tight.predict(endpoint=endpoint("eos"), instances=instances)
    assert caught.value.reason == "QUOTA_EXCEEDED"
    assert caught.value.response.headers["Retry-After"]
    assert caught.value.response.json()["error"]["status"] == "RESOURCE_EXHAUSTED"


def test_keys_in_googles_header_and_in_the_query_work_on_every_model_route(keyed):
    url = f"{keyed.url}/v1/services/eos:detect"
    for extra in ({"headers": {"X-Goog-Api-Key": LAB_KEY}}, {"params": {"key": LAB_KEY}}):
        r = requests.post(url, json={"image": CONTENT}, timeout=120, **extra)
        assert r.status_code == 200, r.text[:300]
    r = requests.post(url, json={"image": CONTENT}, timeout=120)
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"


def test_a_key_in_the_query_is_never_logged_or_recorded(keyed):
    url = f"{keyed.url}/v1/{endpoint('eos')}:predict"
    body = {"instances": [{"content": CONTENT}], "parameters": {"maxPredictions": 3}}
    sent = []
    for key, status in ((LAB_KEY, 200), (LAB_KEY + "-wrong", 401)):
        r = requests.post(
            url, params={"key": key, "$alt": "json;enum-encoding=int"}, json=body, timeout=120
        )
        assert r.status_code == status, r.text[:300]
        sent.append(r.headers["X-Request-Id"])
    wait_until(lambda: sent[0] in usage_records(keyed), "the answered request recorded")
    wait_until(lambda: all(rid in keyed.log_text() for rid in sent), "both requests logged")
    records = usage_records(keyed)
    ok = records[sent[0]]
    assert (ok["principal"], ok["route"], ok["status"], ok["detections"]) == (
        "key:lab",
        "vertex",
        200,
        3,
    )
    logged = keyed.log_text()
    stored = json.dumps(list(records.values()))
    files = b"".join(p.read_bytes() for p in (keyed.workdir / ".gateway").rglob("*") if p.is_file())
    for secret in (LAB_KEY, LAB_KEY + "-wrong"):
        assert secret not in logged
        assert secret not in stored
        assert secret.encode() not in files
    access = [json.loads(line) for line in logged.splitlines() if sent[0] in line]
    assert access and all("key=" not in json.dumps(line) for line in access)
