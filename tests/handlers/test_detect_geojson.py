"""``:detect`` answers GeoJSON when asked (``Accept: application/geo+json`` or ``format``
in the body, the form or the query), and every feature is a box of the JSON answer."""

from __future__ import annotations

import base64
import io

import pytest
from flask import Flask, request
from helpers import SAMPLE_SLIDE
from shapely.geometry import shape

from gateway import runtime
from gateway.catalog import parse_config
from gateway.rest.app import handle

URL = "/v1/services/eos:detect"


@pytest.fixture(scope="module")
def gw():
    return runtime.build_gateway(parse_config({"usage": {"enabled": False}}))


@pytest.fixture
def client(gw, monkeypatch):
    monkeypatch.delenv("K_SERVICE", raising=False)
    monkeypatch.setattr(runtime, "_gateway", gw)
    app = Flask(__name__)
    app.add_url_rule("/<path:path>", "all", lambda path: handle(request), methods=["GET", "POST"])
    return app.test_client()


@pytest.fixture(scope="module")
def slide() -> bytes:
    return SAMPLE_SLIDE.read_bytes()


def test_every_feature_is_a_box_of_the_json_answer(client, slide):
    plain = client.post(URL, data=slide, content_type="image/jpeg")
    geo = client.post(
        URL, data=slide, content_type="image/jpeg", headers={"Accept": "application/geo+json"}
    )
    assert plain.status_code == geo.status_code == 200, geo.get_data(as_text=True)
    assert plain.mimetype == "application/json" and geo.mimetype == "application/geo+json"
    answer, doc = plain.get_json(), geo.get_json(force=True)
    assert answer["count"] == 24 and geo.headers["X-Detections-Count"] == "24"
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == answer["count"]
    for feature, det in zip(doc["features"], answer["detections"], strict=True):
        polygon = shape(feature["geometry"])
        assert feature["geometry"]["type"] == "Polygon" and polygon.is_valid
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1]
        assert list(polygon.bounds) == pytest.approx(det["box"])
        x0, y0, x1, y1 = det["box"]
        assert 0 <= x0 < x1 <= 1280 and 0 <= y0 < y1 <= 960  # pixels of the slide sent
        props = feature["properties"]
        assert props["objectType"] == "detection"
        assert props["classification"] == {"name": det["label"], "color": [0, 200, 60]}
        assert props["measurements"] == {"score": det["score"]}
    # the answer's facts beside the features, the detections only as features
    assert doc["count"] == 24 and doc["image"] == answer["image"] and "detections" not in doc
    assert doc["service"] == "eos" and doc["threshold"] == answer["threshold"]


def _features(response) -> list:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/geo+json"
    return response.get_json(force=True)["features"]


def test_format_by_name_in_body_form_and_query(client, slide):
    image = base64.b64encode(slide).decode()
    by_body = client.post(URL, json={"image": image, "format": "geojson", "threshold": 0.5})
    form = {"image": (io.BytesIO(slide), "s.jpg"), "format": "geojson", "threshold": "0.5"}
    by_form = client.post(URL, data=form, content_type="multipart/form-data")
    by_query = client.post(
        f"{URL}?format=geojson&threshold=0.5", data=slide, content_type="image/jpeg"
    )
    boxes = [
        [f["geometry"]["coordinates"] for f in _features(r)] for r in (by_body, by_form, by_query)
    ]
    assert boxes[0] == boxes[1] == boxes[2] and len(boxes[0]) > 0
    # a name in the request wins over Accept
    named_json = client.post(
        URL, json={"image": image, "format": "json"}, headers={"Accept": "application/geo+json"}
    )
    assert named_json.mimetype == "application/json" and "detections" in named_json.get_json()


def test_accept_without_geojson_keeps_json_and_jpeg(client, slide):
    for accept in ("*/*", "application/json", "application/json, application/geo+json;q=0.5"):
        r = client.post(URL, data=slide, content_type="image/jpeg", headers={"Accept": accept})
        assert r.mimetype == "application/json", accept
    r = client.post(URL, data=slide, content_type="image/jpeg", headers={"Accept": "image/jpeg"})
    assert r.mimetype == "image/jpeg"


@pytest.mark.parametrize(
    "query,message",
    [
        ("?format=shapefile", '"format" must be one of: json, geojson'),
        ("?format=geojson&render=jpeg", '"render" or for "format", not both'),
    ],
)
def test_unknown_or_clashing_formats_are_refused(client, slide, query, message):
    r = client.post(URL + query, data=slide, content_type="image/jpeg")
    assert r.status_code == 400 and message in r.get_json()["error"]
