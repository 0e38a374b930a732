"""Detections as QuPath's GeoJSON, read back with shapely: closed rings, the box's corners,
the properties QuPath reads (objectType, classification, measurements)."""

from __future__ import annotations

import json

import pytest
from shapely.geometry import shape

from gateway.codecs import geojson
from gateway.render import BOX_COLOUR

DETECTIONS = [
    {"box": [10.5, 20.0, 42.25, 61.0], "score": 0.91, "label": "eos"},
    {"box": [100.0, 5.0, 130.0, 33.5], "score": 0.42, "label": "neutrophil"},
    {"box": [0.0, 0.0, 3.0, 4.0], "score": 0.3, "label": "not-listed"},
]
LABELS = ("eos", "neutrophil")


def test_every_box_is_a_closed_counterclockwise_polygon_with_its_corners():
    doc = json.loads(json.dumps(geojson.feature_collection(DETECTIONS, LABELS)))
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == len(DETECTIONS)
    for feature, det in zip(doc["features"], DETECTIONS, strict=True):
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) == 5
        polygon = shape(feature["geometry"])
        assert polygon.is_valid and polygon.exterior.is_ccw
        assert list(polygon.bounds) == pytest.approx(det["box"])
        x0, y0, x1, y1 = det["box"]
        assert polygon.area == pytest.approx((x1 - x0) * (y1 - y0))


def test_properties_are_the_ones_qupath_imports():
    features = geojson.feature_collection(DETECTIONS, LABELS)["features"]
    props = [f["properties"] for f in features]
    assert {p["objectType"] for p in props} == {"detection"}
    assert [p["classification"]["name"] for p in props] == ["eos", "neutrophil", "not-listed"]
    assert [p["measurements"] for p in props] == [{"score": 0.91}, {"score": 0.42}, {"score": 0.3}]
    colours = [p["classification"]["color"] for p in props]
    assert all(len(c) == 3 for c in colours)
    assert all(isinstance(v, int) and 0 <= v <= 255 for c in colours for v in c)
    # the first label is drawn as the rendered pictures draw boxes; labels differ in colour
    assert tuple(colours[0]) == BOX_COLOUR and colours[0] != colours[1]


def test_a_labels_colour_is_the_same_on_every_slide():
    one = geojson.label_colour("neutrophil", LABELS)
    assert geojson.feature(DETECTIONS[1], LABELS)["properties"]["classification"]["color"] == one
    assert geojson.label_colour("not-listed", LABELS) == geojson.label_colour("not-listed", ())


def test_the_answers_facts_ride_beside_the_features():
    about = {"count": 3, "image": {"width": 200, "height": 100}, "type": "x", "features": []}
    doc = geojson.feature_collection(DETECTIONS, LABELS, about=about)
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 3
    assert doc["count"] == 3 and doc["image"] == {"width": 200, "height": 100}
    assert geojson.feature_collection([], LABELS)["features"] == []
