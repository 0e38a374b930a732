"""Vertex AI's online prediction wire format, outbound: the AutoML image request body, the
packing of tiles under the 1.5 MB request limit, and strict readers of the answers (boxes
``[xMin, xMax, yMin, yMax]`` normalized), the errors and the endpoint resource."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from helpers import jpeg, png

from gateway.backends import vertex_wire as wire
from gateway.backends.tfserving_wire import LabelTable
from gateway.errors import BackendBadResponse

RGB = np.full((8, 8, 3), 128, dtype=np.uint8)
JPEG = jpeg(RGB)
PNG = png(RGB)
PARAMS = {"confidence_threshold": 0.0, "max_predictions": 100}


def answer(predictions, **top) -> bytes:
    return json.dumps({"predictions": predictions, **top}).encode()


def detection(boxes, scores, names=None, ids=None) -> dict:
    p = {"confidences": scores, "bboxes": boxes}
    if names is not None:
        p["displayNames"] = names
    if ids is not None:
        p["ids"] = ids
    return p


@pytest.mark.parametrize(
    "data, mime",
    [
        (JPEG, "image/jpeg"),
        (PNG, "image/png"),
        (b"GIF89a....", "image/gif"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"BM\x00\x00", "image/bmp"),
        (b"II*\x00....", "image/tiff"),
        (b"MM\x00*....", "image/tiff"),
        (b"hello", "application/octet-stream"),
    ],
)
def test_the_mime_type_comes_from_the_bytes(data, mime):
    assert wire.mime_type(data) == mime


def test_a_request_body_in_the_automl_image_schema():
    body = wire.predict_body([wire.instance(JPEG), wire.instance(PNG)], **PARAMS)
    doc = json.loads(body)
    assert doc["parameters"] == {"confidenceThreshold": 0.0, "maxPredictions": 100}
    assert [i["mimeType"] for i in doc["instances"]] == ["image/jpeg", "image/png"]
    assert [base64.b64decode(i["content"], validate=True) for i in doc["instances"]] == [JPEG, PNG]
    assert set(doc["instances"][0]) == {"content", "mimeType"}
    assert len(wire.predict_body([], **PARAMS)) == wire.body_overhead(**PARAMS)


def test_packing_keeps_every_body_under_the_limit_and_the_order():
    sizes = [300, 300, 300, 900, 50, 2000, 10, 10, 10, 10]
    items = [(b"x" * n, i) for i, n in enumerate(sizes)]
    limit, overhead = 1000, 40
    batches = list(wire.pack(items, max_count=3, max_bytes=limit, overhead=overhead))
    assert [meta for batch in batches for _, meta in batch] == list(range(len(sizes)))
    for batch in batches:
        assert len(batch) <= 3
        body = overhead + sum(len(piece) for piece, _ in batch) + len(batch) - 1
        assert body <= limit or len(batch) == 1  # the 2000-byte instance goes alone
    assert [[meta for _, meta in b] for b in batches] == [
        [0, 1, 2],  # 40 + 900 + 2 commas = 942; a fourth would pass max_count
        [3, 4],  # 40 + 950 + 1 = 991; the next is too large for any body
        [5],
        [6, 7, 8],
        [9],
    ]


def test_a_packed_body_is_the_size_the_packing_counted():
    tiles = [
        jpeg(np.random.default_rng(i).integers(0, 255, (200, 300, 3), np.uint8)) for i in range(9)
    ]
    overhead = wire.body_overhead(**PARAMS)
    limit = 150_000
    items = [(wire.instance(t), None) for t in tiles]
    batches = list(wire.pack(items, max_count=64, max_bytes=limit, overhead=overhead))
    assert len(batches) > 1
    for batch in batches:
        body = wire.predict_body([p for p, _ in batch], **PARAMS)
        assert len(body) <= limit
    assert sum(len(b) for b in batches) == len(tiles)


def test_boxes_are_read_as_xmin_xmax_ymin_ymax_in_tile_pixels():
    body = answer(
        [
            detection(
                [[0.1, 0.3, 0.2, 0.6], [0.5, 1.0, 0.0, 0.5]],
                [0.9, 0.4],
                names=["eos", "eos"],
                ids=["1", 1],
            ),
            detection([], [], names=[], ids=[]),
        ],
        deployedModelId="4455",
        modelVersionId="2",
    )
    table = LabelTable(["eos"])
    tiles, version = wire.parse_detections(body, 2, [(1000, 500), (10, 10)], table)
    np.testing.assert_allclose(tiles[0].boxes, [[100, 100, 300, 300], [500, 0, 1000, 250]])
    np.testing.assert_allclose(tiles[0].scores, [0.9, 0.4])
    assert tiles[0].classes.tolist() == [0, 0]
    assert table.labels == ["eos"] and table.values == [1.0]
    assert tiles[1].boxes.shape == (0, 4) and len(tiles[1].scores) == 0
    assert version == "2"


def test_the_version_is_the_deployed_model_without_a_model_version():
    body = answer([detection([], [], names=[])], deployedModelId="4455")
    assert wire.parse_detections(body, 1, [(4, 4)], LabelTable([]))[1] == "4455"
    assert (
        wire.parse_detections(answer([detection([], [], names=[])]), 1, [(4, 4)], LabelTable([]))[1]
        is None
    )


def test_ids_as_numbers_or_strings_and_names_unknown_to_the_configuration():
    big = "8765432109876543210"  # Vertex's annotation spec ids: int64 written as text
    body = answer(
        [
            detection(
                [[0, 1, 0, 1]] * 4,
                [0.5] * 4,
                names=["eos", "neutrophil", "eos", "neutrophil"],
                ids=["1", 2.0, 1, big],
            )
        ]
    )
    table = LabelTable(["eos"])
    tiles, _ = wire.parse_detections(body, 1, [(2, 2)], table)
    assert [table.labels[c] for c in tiles[0].classes] == ["eos", "neutrophil", "eos", "neutrophil"]
    assert table.values == [1.0, 2.0]
    # without names, a small id is the class number, a large one its own label
    body = answer([detection([[0, 1, 0, 1]] * 2, [0.5, 0.5], ids=[1, big])])
    table = LabelTable(["eos"])
    tiles, _ = wire.parse_detections(body, 1, [(2, 2)], table)
    assert [table.labels[c] for c in tiles[0].classes] == ["eos", big]


GOOD = detection([[0.1, 0.2, 0.3, 0.4]], [0.5], names=["eos"], ids=["1"])


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"predictions": "no"}).encode(),
        answer([GOOD, GOOD]),  # two predictions for one tile
        answer([]),
        answer([7]),
        answer([{**GOOD, "confidences": None}]),
        answer([{**GOOD, "confidences": ["0.5"]}]),
        answer([{**GOOD, "confidences": [True]}]),
        answer([{**GOOD, "bboxes": None}]),
        answer([{**GOOD, "bboxes": [[0.1, 0.2, 0.3]]}]),
        answer([{**GOOD, "bboxes": [[0.1, 0.2, 0.3, "x"]]}]),
        answer([{**GOOD, "bboxes": [0.1, 0.2, 0.3, 0.4]}]),
        answer([{**GOOD, "bboxes": []}]),
        answer([{**GOOD, "displayNames": ["eos", "eos"]}]),
        answer([{**GOOD, "displayNames": [3]}]),
        answer([{**GOOD, "ids": [{"id": 1}]}]),
        answer([{**GOOD, "ids": [False]}]),
        answer([{"confidences": [0.5], "bboxes": [[0, 1, 0, 1]]}]),  # neither names nor ids
    ],
)
def test_garbage_is_a_bad_response(body):
    with pytest.raises(BackendBadResponse):
        wire.parse_detections(body, 1, [(10, 10)], LabelTable(["eos"]))


@pytest.mark.parametrize("confidence, box", [("NaN", "0.5"), ("0.5", "1e999")])
def test_non_finite_numbers_are_a_bad_response(confidence, box):
    bad = '{"predictions":[{"confidences":[%s],"bboxes":[[0,%s,0,1]],"ids":[1]}]}'
    with pytest.raises(BackendBadResponse):
        wire.parse_detections((bad % (confidence, box)).encode(), 1, [(9, 9)], LabelTable([]))


def test_classifications_best_first_as_vertex_answers_them():
    body = answer(
        [
            {"ids": ["2", "1"], "displayNames": ["inflamed", "normal"], "confidences": [0.7, 0.3]},
            {"ids": [5], "confidences": [1.0]},
        ],
        deployedModelId="9",
    )
    found, version = wire.parse_classifications(body, 2)
    assert found[0].labels == ("inflamed", "normal") and found[0].scores == (0.7, 0.3)
    assert found[1].labels == ("5",)
    assert version == "9"
    for bad in (answer([{"displayNames": [], "confidences": []}]), answer([{"confidences": [1]}])):
        with pytest.raises(BackendBadResponse):
            wire.parse_classifications(bad, 1)


def test_error_messages_from_googles_error_shape():
    body = json.dumps(
        {
            "error": {
                "code": 400,
                "message": "Invalid  image\ncontent.",
                "status": "INVALID_ARGUMENT",
            }
        }
    ).encode()
    assert wire.error_message(body) == "INVALID_ARGUMENT: Invalid image content."
    assert wire.error_message(b'{"error": "plain"}') == "plain"
    assert wire.error_message(b"<html>502</html>") == "<html>502</html>"
    assert len(wire.error_message(b"x" * 5000)) <= 300


def test_the_endpoint_resource_says_whether_a_model_is_deployed():
    def state(doc):
        return wire.endpoint_state(json.dumps(doc).encode())

    assert state({"name": "e"})[0] is False
    assert state({"name": "e", "deployedModels": []})[:2] == (False, None)
    one = {"id": "111", "model": "projects/p/locations/l/models/m", "modelVersionId": "3"}
    assert state({"deployedModels": [one]})[:2] == (True, "3")
    assert state({"deployedModels": [{"id": "111"}]})[:2] == (True, "111")
    assert state({"deployedModels": [one, {"id": "222"}]})[:2] == (True, None)
    assert wire.endpoint_state(b"nope")[0] is False
    assert state({"deployedModels": "x"})[0] is False
