"""``backend.max_detections_per_tile``: each protocol's reader refuses a tile's answer with
more detections than the limit (502), and takes one at the limit."""

from __future__ import annotations

import json

import pytest

from gateway.backends import tfserving_wire, v2_wire, vertex_wire
from gateway.backends.labels import LabelTable
from gateway.errors import BackendBadResponse

LIMIT = 50


def _tfserving(k: int) -> list:
    body = json.dumps(
        {
            "predictions": [
                {
                    "detection_boxes": [[0.1, 0.1, 0.2, 0.2]] * k,
                    "detection_scores": [0.5] * k,
                    "detection_classes": [1] * k,
                    "num_detections": k,
                }
            ]
        }
    ).encode()
    return tfserving_wire.parse_backend_predictions(
        body, 1, [(960, 720)], LabelTable(("eos",)), LIMIT
    )


def _v2(k: int) -> list:
    body = json.dumps(
        {
            "model_name": "m",
            "outputs": [
                {
                    "name": "detection_boxes",
                    "shape": [1, k, 4],
                    "datatype": "FP32",
                    "data": [0.1, 0.1, 0.2, 0.2] * k,
                },
                {
                    "name": "detection_scores",
                    "shape": [1, k],
                    "datatype": "FP32",
                    "data": [0.5] * k,
                },
            ],
        }
    ).encode()
    return v2_wire.parse_detections(
        body,
        None,
        1,
        [(960, 720)],
        LabelTable(("eos",)),
        boxes="detection_boxes",
        scores="detection_scores",
        classes=None,
        box_format="yxyx_normalized",
        count=None,
        max_detections=LIMIT,
    )


def _vertex(k: int) -> list:
    body = json.dumps(
        {
            "predictions": [
                {
                    "confidences": [0.5] * k,
                    "bboxes": [[0.1, 0.2, 0.1, 0.2]] * k,
                    "displayNames": ["eos"] * k,
                    "ids": ["1"] * k,
                }
            ]
        }
    ).encode()
    found, _ = vertex_wire.parse_detections(body, 1, [(960, 720)], LabelTable(("eos",)), LIMIT)
    return found


@pytest.mark.parametrize("read", [_tfserving, _v2, _vertex], ids=["tfserving", "v2", "vertex"])
def test_more_detections_than_the_limit_is_a_502(read):
    assert len(read(LIMIT)[0].scores) == LIMIT
    with pytest.raises(BackendBadResponse, match="max_detections_per_tile") as caught:
        read(LIMIT + 1)
    assert caught.value.status == 502
