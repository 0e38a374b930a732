"""The outbound TF Serving / AutoML wire format: the request sent for tiles, and the strict
readers of a detector's and a classifier's answers: a model that answers garbage is a 502,
never a wrong count or label."""

from __future__ import annotations

import json

import pytest

from gateway.backends import tfserving_wire as wire
from gateway.backends.tfserving_wire import backend_error_message, parse_classifications
from gateway.errors import BackendBadResponse


def body(doc) -> bytes:
    return json.dumps(doc).encode()


def test_rows_and_columns():
    rows = {"predictions": [{"scores": [0.2, 0.8], "labels": ["a", "b"], "key": "image-0"}]}
    (c,) = parse_classifications(body(rows), 1, ())
    assert (c.labels, c.scores) == (("a", "b"), (0.2, 0.8))
    cols = {"outputs": {"scores": [[0.1, 0.9], [0.6, 0.4]], "labels": [["x", "y"], ["x", "y"]]}}
    got = parse_classifications(body(cols), 2, ())
    assert [c.scores for c in got] == [(0.1, 0.9), (0.6, 0.4)]


def test_configured_labels_name_a_model_that_answers_scores_only():
    (c,) = parse_classifications(body({"predictions": [{"scores": [1, 0]}]}), 1, ("p", "q"))
    assert c.labels == ("p", "q")
    with pytest.raises(BackendBadResponse, match="without labels"):
        parse_classifications(body({"predictions": [{"scores": [1, 0]}]}), 1, ("p",))


@pytest.mark.parametrize(
    "answer",
    [
        b"not json",
        body({"predictions": []}),
        body({"predictions": [{"scores": [0.5]}, {"scores": [0.5]}]}),
        body({"predictions": ["x"]}),
        body({"predictions": [{"scores": "high", "labels": ["a"]}]}),
        body({"predictions": [{"scores": [], "labels": []}]}),
        body({"predictions": [{"scores": [[0.5]], "labels": ["a"]}]}),
        body({"predictions": [{"scores": [0.5, 0.5], "labels": ["a"]}]}),
        body({"predictions": [{"scores": [0.5], "labels": [None]}]}),
        b'{"predictions": [{"scores": [NaN], "labels": ["a"]}]}',
        body({"outputs": {"labels": [["a"]]}}),
    ],
)
def test_garbage_is_a_bad_response(answer):
    with pytest.raises(BackendBadResponse):
        parse_classifications(answer, 1, ())


def test_error_text_of_a_refusal():
    assert backend_error_message(body({"error": "Servable  not\nfound"})) == "Servable not found"
    assert backend_error_message(b"<html>oops</html>") == "<html>oops</html>"


def test_backend_request_is_valid_tf_serving_json():
    body = wire.backend_request([b"QUJD", b"REVG"], ["tile-0", "tile-1"])
    doc = json.loads(body)
    assert doc == {
        "instances": [
            {"image_bytes": {"b64": "QUJD"}, "key": "tile-0"},
            {"image_bytes": {"b64": "REVG"}, "key": "tile-1"},
        ]
    }


def automl(boxes, scores, n=None, texts=None):
    return {
        "detection_boxes": boxes,
        "detection_scores": scores,
        "detection_classes": [1.0] * len(scores),
        "detection_classes_as_text": texts or ["eos"] * len(scores),
        "num_detections": float(len(scores) if n is None else n),
        "key": "tile-0",
    }


def test_backend_predictions_become_tile_pixels():
    body = json.dumps({"predictions": [automl([[0.5, 0.25, 1.0, 0.5]], [0.8])]}).encode()
    table = wire.LabelTable(("eos",))
    (det,) = wire.parse_backend_predictions(body, 1, [(960, 720)], table)
    assert det.boxes.tolist() == [[240.0, 360.0, 480.0, 720.0]]
    assert table.labels[det.classes[0]] == "eos"


def test_num_detections_is_read_not_assumed():
    boxes = [[0.1, 0.1, 0.2, 0.2]] * 40
    body = json.dumps({"predictions": [automl(boxes, [0.9] * 40, n=3)]}).encode()
    (det,) = wire.parse_backend_predictions(body, 1, [(100, 100)], wire.LabelTable(("eos",)))
    assert len(det.scores) == 3
    body = json.dumps({"predictions": [automl(boxes[:5], [0.9] * 5, n=40)]}).encode()
    (det,) = wire.parse_backend_predictions(body, 1, [(100, 100)], wire.LabelTable(("eos",)))
    assert len(det.scores) == 5


def test_unknown_labels_from_the_model_are_kept():
    body = json.dumps(
        {"predictions": [automl([[0, 0, 1, 1]] * 2, [0.9, 0.8], texts=["eos", "neutrophil"])]}
    ).encode()
    table = wire.LabelTable(("eos",))
    (det,) = wire.parse_backend_predictions(body, 1, [(10, 10)], table)
    assert [table.labels[c] for c in det.classes] == ["eos", "neutrophil"]


@pytest.mark.parametrize(
    "body",
    [
        b"<html>oops</html>",
        b"{}",
        b'{"predictions": []}',
        b'{"predictions": [1]}',
        b'{"predictions": [{"detection_boxes": "x", "detection_scores": []}]}',
        b'{"predictions": [{"detection_boxes": [[1, 2, 3]], "detection_scores": [0.5]}]}',
        b'{"predictions": [{"detection_boxes": [[0,0,1,1]], "detection_scores": ["a"]}]}',
    ],
)
def test_garbage_from_the_backend_is_a_502(body):
    with pytest.raises(BackendBadResponse) as info:
        wire.parse_backend_predictions(body, 1, [(10, 10)], wire.LabelTable(("eos",)))
    assert info.value.status == 502


def test_model_status_of_tf_serving_and_kserve():
    tfs = {"model_version_status": [{"version": "3", "state": "AVAILABLE"}]}
    assert wire.model_status(json.dumps(tfs).encode())[:2] == (True, "3")
    loading = {"model_version_status": [{"version": "3", "state": "LOADING"}]}
    assert wire.model_status(json.dumps(loading).encode())[0] is False
    assert wire.model_status(b'{"name": "eos", "ready": true}')[0] is True
    assert wire.model_status(b"garbage")[0] is False
