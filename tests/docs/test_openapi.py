"""openapi.yaml against the code: every route described, and a running gateway conforming.

The structural tests read the route table; the schemathesis test drives a real gateway
process (functions-framework, API keys configured, demo page on) over loopback with
generated requests, and checks that no answer is a 5xx and that every answer (status,
content type, headers, body) is one the document allows.
"""

from __future__ import annotations

import re

import schemathesis
import yaml
from helpers import REPO, b64, png, sha
from hypothesis import HealthCheck, settings
from process_guard import process_fixture
from procs import start_gateway
from synthetic import make_slide

from gateway.rest import routes

SPEC_PATH = REPO / "openapi.yaml"
SPEC = yaml.safe_load(SPEC_PATH.read_text())
API_KEY = "schema-test-key-0123456789abcdef"
METHODS = ("get", "post", "put", "patch", "delete", "options", "head")


def _routable(service: object) -> bool:
    """A name the router takes as it is sent (a literal '%' may be decoded on the way)."""
    return (
        isinstance(service, str)
        and "%" not in service
        and re.fullmatch(routes.NAME, service) is not None
    )


def _concrete(template: str) -> str:
    template = template.replace("{project}", "p").replace("{location}", "europe-west1")
    return template.replace("{service}", "eos").replace("{version}", "1").replace("{label}", "x")


def test_every_route_is_described() -> None:
    described = {
        (m.upper(), path) for path, item in SPEC["paths"].items() for m in item if m in METHODS
    }
    for route in routes.ROUTES:
        template = route.pattern.pattern.replace(routes.NAME, "{service}").strip("^$")
        template = template.replace(routes.VERSION, "{version}").replace(routes.LABEL, "{label}")
        template = template.replace(routes.PROJECT, "{project}")
        template = template.replace(routes.LOCATION, "{location}")
        for method in route.methods:
            assert (method, template) in described, f"{method} {template} is not in openapi.yaml"
        assert ("OPTIONS", template) in described, f"no preflight for {template}"


def test_every_described_operation_has_a_route() -> None:
    for path, item in SPEC["paths"].items():
        for method in item:
            if method not in METHODS or method == "options":
                continue
            found = routes.match(method.upper(), _concrete(path))
            assert found.route.pattern.match(_concrete(path))


def _error_schema(path: str) -> str:
    """Google's error shape under Google's API paths (Vertex AI's), the gateway's elsewhere."""
    google = path.startswith(routes.GOOGLE_API_PREFIX)
    return "#/components/schemas/GoogleError" if google else "#/components/schemas/Error"


def _error_code(path: str, doc: dict) -> str:
    if path.startswith(routes.GOOGLE_API_PREFIX):
        return doc["error"]["details"][0]["metadata"]["code"]
    return doc["code"]


def test_error_statuses_use_the_error_body() -> None:
    """Every 4xx/5xx of every operation is the JSON error body with an X-Request-Id."""
    components = SPEC["components"]["responses"]
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            statuses = set(op["responses"])
            assert "500" in statuses, f"{method} {path} does not describe 500"
            for status, response in op["responses"].items():
                if int(status) < 400:
                    continue
                if "$ref" in response:
                    response = components[response["$ref"].rsplit("/", 1)[1]]
                schema = response["content"]["application/json"]["schema"]
                refs = [schema.get("$ref")] + [s.get("$ref") for s in schema.get("allOf", [])]
                assert _error_schema(path) in refs, f"{method} {path} {status}"
                assert "X-Request-Id" in response["headers"]


def test_detection_routes_describe_their_failures() -> None:
    for path in ("/v1/services/{service}:detect", "/v1/models/{service}:predict"):
        op = SPEC["paths"][path]["post"]
        expected = {"200", "400", "401", "403", "404", "413", "415", "422", "429"}
        expected |= {"500", "502", "503", "504"}
        assert expected <= set(op["responses"]), path
        assert "security" not in op  # the document-wide schemes apply
    detect = SPEC["paths"]["/v1/services/{service}:detect"]["post"]
    assert {"application/json", "multipart/form-data", "image/jpeg", "image/png"} <= set(
        detect["requestBody"]["content"]
    )
    assert set(detect["responses"]["200"]["content"]) == {
        "application/json",
        "application/geo+json",
        "image/jpeg",
    }
    assert "X-Detections-Count" in detect["responses"]["200"]["headers"]


def test_security_schemes_match_the_authenticator() -> None:
    schemes = SPEC["components"]["securitySchemes"]
    assert schemes["firebaseOrGoogleIdToken"] == {
        **schemes["firebaseOrGoogleIdToken"],
        "type": "http",
        "scheme": "bearer",
    }
    assert (schemes["apiKeyHeader"]["in"], schemes["apiKeyHeader"]["name"]) == (
        "header",
        "X-API-Key",
    )
    assert (schemes["apiKeyQuery"]["in"], schemes["apiKeyQuery"]["name"]) == ("query", "key")
    names = [next(iter(s)) for s in SPEC["security"]]
    assert names == ["firebaseOrGoogleIdToken", "apiKeyHeader", "apiKeyQuery"]


def test_service_parameter_pattern_is_the_routers() -> None:
    pattern = SPEC["components"]["parameters"]["Service"]["schema"]["pattern"]
    inner = re.sub(r"^\(\?P<service>(.*)\)$", r"\1", routes.NAME)
    assert pattern == f"^{inner}$"


# --- the running gateway ----------------------------------------------------------------


@process_fixture(scope="module")
def gateway():
    digest = sha(API_KEY)
    config = {
        "demo": True,
        "auth": {"api_keys": [{"id": "schema-test", "sha256": digest}]},
        "usage": {"enabled": False},
        "cors": {"origins": ["https://app.example"]},
        "limits": {"max_body_bytes": 4 * 1024 * 1024},
    }
    proc = start_gateway(config)
    yield proc
    proc.stop()


# Raw TIFF and WebP bodies are bytes like the JPEG and PNG ones schemathesis knows.
schemathesis.serializer.alias(["image/tiff", "image/webp"], "application/octet-stream")
# A schema can say "base64" but not "a decodable image of at most N pixels": schema-valid
# bodies may still be refused for their content (400 invalid_base64, 413, 415, 422).  Any
# other refusal of schema-valid data (405, 406, 409, ...) still fails.
ACCEPTED_POSITIVE = ["2XX", "400", "401", "403", "404", "413", "415", "422", "429"]
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED_POSITIVE}}}
)
schema = schemathesis.openapi.from_path(SPEC_PATH, config=CONFIG)


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_gateway_conforms_to_openapi(case, gateway) -> None:
    response = case.call_and_validate(base_url=gateway.url, headers={"X-API-Key": API_KEY})
    assert response.status_code < 500, response.text[:500]
    names = list((case.path_parameters or {}).values())
    if ":" in case.operation.path and response.status_code == 404 and all(map(_routable, names)):
        # A valid name that is not configured is "unknown_service" (or a version the model
        # lacks "unknown_version"); "no route" for valid names would mean the URL was built
        # wrong (the colon escaped or dropped).
        code = _error_code(case.operation.path, response.json())
        assert code in ("unknown_service", "unknown_version"), response.request.url


def _slide_png() -> bytes:
    """A synthetic slide with three cells, so the answers carry real detections."""
    cells = [(120, 100, 44), (300, 220, 46), (480, 120, 42)]
    return png(make_slide(640, 360, cells, seed=3))


def _validated(gateway, case, **kwargs):
    response = case.call_and_validate(
        base_url=gateway.url, headers={"X-API-Key": API_KEY, **kwargs.pop("headers", {})}
    )
    assert response.status_code == 200, response.text[:500]
    return response


def test_successful_answers_conform(gateway) -> None:
    """Good requests of every body form, validated against the document.

    Generated bodies almost never hold a decodable image, so the 200 answers are checked
    here; this also proves that ':predict' and ':detect' reach the gateway as written.
    """
    png = _slide_png()
    text = b64(png)
    detect = schema["/v1/services/{service}:detect"]["POST"]
    predict = schema["/v1/models/{service}:predict"]["POST"]
    svc = {"service": "eos"}

    r = _validated(
        gateway,
        detect.Case(
            path_parameters=svc, body={"image": text, "key": "s1"}, media_type="application/json"
        ),
    )
    assert r.request.url == gateway.url + "/v1/services/eos:detect"
    doc = r.json()
    assert doc["count"] == 3 and len(doc["detections"]) == 3 and doc["key"] == "s1"

    r = _validated(gateway, detect.Case(path_parameters=svc, body=png, media_type="image/png"))
    assert r.json()["count"] == 3

    form = {"image": png, "threshold": "0.3", "key": "s2"}
    r = _validated(
        gateway, detect.Case(path_parameters=svc, body=form, media_type="multipart/form-data")
    )
    assert r.json()["key"] == "s2" and r.json()["count"] == 3

    r = _validated(
        gateway,
        detect.Case(path_parameters=svc, body=png, media_type="image/png"),
        headers={"Accept": "image/jpeg"},
    )
    assert r.headers["content-type"] == ["image/jpeg"]
    assert r.headers["x-detections-count"] == ["3"]

    r = _validated(
        gateway,
        detect.Case(path_parameters=svc, body=png, media_type="image/png"),
        headers={"Accept": "application/geo+json"},
    )
    assert r.headers["content-type"] == ["application/geo+json"]
    assert r.json()["type"] == "FeatureCollection" and len(r.json()["features"]) == 3
    r = _validated(
        gateway,
        detect.Case(
            path_parameters=svc,
            body={"image": text, "format": "geojson"},
            media_type="application/json",
        ),
    )
    assert r.json()["features"][0]["properties"]["objectType"] == "detection"

    rows = {"instances": [{"image_bytes": {"b64": text}, "key": "a"}], "threshold": 0.3}
    r = _validated(
        gateway, predict.Case(path_parameters=svc, body=rows, media_type="application/json")
    )
    assert r.request.url == gateway.url + "/v1/models/eos:predict"
    assert r.json()["predictions"][0]["num_detections"] == 3

    columns = {"inputs": {"image_bytes": [{"b64": text}], "key": ["a"]}, "threshold": 0.3}
    r = _validated(
        gateway, predict.Case(path_parameters=svc, body=columns, media_type="application/json")
    )
    assert r.json()["outputs"]["num_detections"] == [3]

    vertex = schema["/v1/projects/{project}/locations/{location}/endpoints/{service}:predict"]
    where = {"project": "my-project", "location": "europe-west1", **svc}
    body = {"instances": [{"content": text}], "parameters": {"confidenceThreshold": 0.3}}
    r = _validated(
        gateway,
        vertex["POST"].Case(path_parameters=where, body=body, media_type="application/json"),
    )
    assert (
        r.request.url
        == gateway.url + "/v1/projects/my-project/locations/europe-west1/endpoints/eos:predict"
    )
    assert len(r.json()["predictions"][0]["ids"]) == 3
    resource = schema["/v1/projects/{project}/locations/{location}/endpoints/{service}"]["GET"]
    _validated(gateway, resource.Case(path_parameters=where))

    for path in (
        "/v1/services",
        "/v1/services/{service}",
        "/v1/models/{service}",
        "/healthz",
        "/readyz",
        "/",
    ):
        op = schema[path]["GET"]
        _validated(gateway, op.Case(path_parameters=svc if "{service}" in path else None))
