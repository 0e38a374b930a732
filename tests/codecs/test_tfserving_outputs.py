"""The model's whole answer: extra per-detection outputs follow their detection through
the merge, columnar answers are rectangular tensors, rows keep their natural lengths.

Sources: TF Serving's ``json_tensor_test.cc`` (FromJsonMultipleNamedTensors: a row answer
is one object per instance, a columnar answer one tensor per output with the batch as
its first dimension) and ``api_rest.md`` ("Response format": the columnar ``outputs``
are tensors; a tensor is rectangular).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.backends import tfserving_wire as wire
from gateway.backends.base import TileDetections
from gateway.codecs import tfserving_api as api
from gateway.pipeline.merge import Merged, above, merge
from gateway.pipeline.tiling import plan_tiles


def automl(boxes, scores, n=None, **outputs):
    """One prediction as an AutoML Vision Edge detector exported for TF Serving gives it."""
    return {
        "detection_boxes": boxes,
        "detection_scores": scores,
        "detection_classes": [1.0] * len(scores),
        "detection_classes_as_text": ["eos"] * len(scores),
        "num_detections": float(len(scores) if n is None else n),
        "image_info": [720, 960, 1, 0, 960, 720],
        "key": "tile-0",
        **outputs,
    }


def parse(*predictions, sizes=None):
    body = json.dumps({"predictions": list(predictions)}).encode()
    sizes = sizes or [(960, 720)] * len(predictions)
    return wire.parse_backend_predictions(body, len(predictions), sizes, wire.LabelTable(["eos"]))


# -- reading the model's answer ---------------------------------------------------------


def test_per_detection_outputs_are_read_and_cut_to_num_detections():
    # A padded answer, as the export gives it: 6 rows, 2 of them real (num_detections).
    boxes = [[0.1, 0.1, 0.2, 0.2], [0.3, 0.3, 0.4, 0.4]] + [[0, 0, 0, 0]] * 4
    pred = automl(
        boxes,
        [0.9, 0.4, 0, 0, 0, 0],
        n=2,
        detection_multiclass_scores=[[0.1, 0.9], [0.6, 0.4]] + [[0, 0]] * 4,
        detection_anchor_indices=[17.0, 4.0, 0, 0, 0, 0],
        raw_detection_boxes=[[0, 0, 1, 1]] * 9,  # one row per anchor, not per detection
    )
    (det,) = parse(pred)
    assert set(det.extras) == {"detection_multiclass_scores", "detection_anchor_indices"}
    assert det.extras["detection_multiclass_scores"].tolist() == [[0.1, 0.9], [0.6, 0.4]]
    assert det.extras["detection_anchor_indices"].tolist() == [17.0, 4.0]


def test_image_info_is_not_taken_for_a_per_detection_output():
    # image_info has 6 values: with 6 detections its length matches, but it describes
    # the tile, not its detections.
    pred = automl([[0.1, 0.1, 0.2, 0.2]] * 6, [0.5] * 6, detection_anchor_indices=list(range(6)))
    (det,) = parse(pred)
    assert set(det.extras) == {"detection_anchor_indices"}


def test_ragged_or_non_numeric_outputs_are_left_out():
    pred = automl(
        [[0.1, 0.1, 0.2, 0.2]] * 2,
        [0.5, 0.4],
        ragged=[[1, 2], [3]],
        objects=[{"a": 1}, {"b": 2}],
        names=["x", "y"],
    )
    (det,) = parse(pred)
    assert set(det.extras) == {"names"} and det.extras["names"].tolist() == ["x", "y"]


# -- through the merge -------------------------------------------------------------------


def _views(tiles, cells):
    """Each tile sees every cell wholly inside it; extra outputs name the cell and tile."""
    per_tile = []
    for t in tiles:
        rows = [
            (i, [x0 - t.x0, y0 - t.y0, x1 - t.x0, y1 - t.y0], score)
            for i, (x0, y0, x1, y1, score) in enumerate(cells)
            if t.x0 <= x0 and x1 <= t.x1 and t.y0 <= y0 and y1 <= t.y1
        ]
        ids = np.array([i for i, _, _ in rows], dtype=np.int64)
        per_tile.append(
            TileDetections(
                boxes=np.array([b for _, b, _ in rows], dtype=np.float64).reshape(-1, 4),
                scores=np.array([s for _, _, s in rows]),
                classes=np.zeros(len(rows), np.int32),
                extras={
                    "cell": ids,
                    "tile": np.full(len(rows), t.index),
                    "multiclass": np.stack([1 - ids / 100, ids / 100], axis=1).reshape(-1, 2),
                },
            )
        )
    return per_tile


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 30))
def test_extra_outputs_follow_their_detection_through_the_merge(seed, n):
    rng = np.random.default_rng(seed)
    w, h = 1900, 1400
    tiles = plan_tiles(w, h, 960, 720, 128, align=16)
    cells = []
    for _ in range(n):
        x, y, d = rng.uniform(0, w - 60), rng.uniform(0, h - 60), rng.uniform(20, 60)
        cells.append((x, y, x + d, y + d, float(rng.uniform(0.05, 1))))
    merged = merge(tiles, _views(tiles, cells), w, h)
    cell = merged.extras["cell"]
    for k in range(len(merged)):
        x0, y0, x1, y1, score = cells[cell[k]]
        assert merged.boxes[k].tolist() == pytest.approx([x0, y0, x1, y1], abs=1e-3)
        assert merged.scores[k] == pytest.approx(score, abs=1e-6)
        assert merged.extras["multiclass"][k].tolist() == pytest.approx(
            [1 - cell[k] / 100, cell[k] / 100]
        )
    assert merged.extras["multiclass"].shape == (len(merged), 2)
    kept = above(merged, 0.5)
    assert kept.extras["cell"].tolist() == [
        c for c, s in zip(cell, merged.scores, strict=True) if s >= 0.5
    ]


def test_an_output_one_tile_lacks_or_shapes_otherwise_is_dropped():
    tiles = plan_tiles(1900, 700, 960, 720, 128, align=16)
    assert len(tiles) == 2
    cells = [(10, 10, 50, 50, 0.9), (1800, 10, 1850, 50, 0.8)]
    a, b = _views(tiles, cells)
    b = TileDetections(b.boxes, b.scores, b.classes, {"cell": b.extras["cell"]})
    merged = merge(tiles, [a, b], 1900, 700)
    assert set(merged.extras) == {"cell"} and sorted(merged.extras["cell"].tolist()) == [0, 1]
    b = TileDetections(b.boxes, b.scores, b.classes, {"cell": np.zeros((1, 3))})
    assert merge(tiles, [a, b], 1900, 700).extras == {}


def test_a_cell_made_of_fragments_takes_its_best_fragment_s_outputs():
    tiles = plan_tiles(1900, 700, 960, 720, 128, align=16)
    left, right = tiles
    # A cell wider than the overlap: each tile sees only a part, cut by its inner edge.
    cut_l = left.x1 - left.x0
    per_tile = [
        TileDetections(
            np.array([[cut_l - 150.0, 100, cut_l, 300]]),
            np.array([0.6]),
            np.zeros(1, np.int32),
            {"anchor": np.array([11])},
        ),
        TileDetections(
            np.array([[0.0, 100, 200, 300]]),
            np.array([0.7]),
            np.zeros(1, np.int32),
            {"anchor": np.array([22])},
        ),
    ]
    merged = merge(tiles, per_tile, 1900, 700)
    assert len(merged) == 1 and merged.extras["anchor"].tolist() == [22]


# -- the answer ---------------------------------------------------------------------------


def _prediction(n, key, extras=True):
    rng = np.random.default_rng(n)
    boxes = np.sort(rng.uniform(0, 500, (n, 4)), axis=1).astype(np.float32)
    merged = Merged(
        boxes,
        np.sort(rng.uniform(0, 1, n))[::-1].astype(np.float32),
        np.zeros(n, np.int32),
        {"detection_multiclass_scores": rng.uniform(0, 1, (n, 2))} if extras else {},
    )
    return api.prediction(merged, 500, 500, ("eos",), (1.0,), key)


def test_columnar_answers_are_rectangular_and_say_each_instance_s_count():
    preds = [_prediction(3, "a"), _prediction(0, "b"), _prediction(5, "c")]
    out = api.predict_response(preds, columnar=True)["outputs"]
    # np.array of a ragged answer raises "inhomogeneous shape"; TF Serving's never is.
    assert np.array(out["detection_boxes"]).shape == (3, 5, 4)
    assert np.array(out["detection_scores"]).shape == (3, 5)
    assert np.array(out["detection_classes"]).shape == (3, 5)
    assert np.array(out["detection_classes_as_text"]).shape == (3, 5)
    assert np.array(out["detection_multiclass_scores"]).shape == (3, 5, 2)
    assert out["num_detections"] == [3, 0, 5] and out["key"] == ["a", "b", "c"]
    # real rows first, then zeros ("" for strings) up to the longest instance
    assert out["detection_boxes"][0][:3] == preds[0]["detection_boxes"]
    assert out["detection_boxes"][0][3:] == [[0.0] * 4] * 2
    assert out["detection_scores"][1] == [0.0] * 5
    assert out["detection_classes_as_text"][0] == ["eos"] * 3 + [""] * 2
    assert out["detection_multiclass_scores"][0][3:] == [[0.0, 0.0]] * 2


def test_row_answers_keep_their_natural_lengths():
    preds = [_prediction(3, "a"), _prediction(0, "b")]
    rows = api.predict_response(preds, columnar=False)["predictions"]
    assert [len(p["detection_boxes"]) for p in rows] == [3, 0]
    assert [len(p["detection_multiclass_scores"]) for p in rows] == [3, 0]
    assert [p["num_detections"] for p in rows] == [3, 0]


def test_an_output_only_some_instances_have_is_padded_in_columns():
    preds = [_prediction(2, "a"), _prediction(1, "b", extras=False)]
    out = api.predict_response(preds, columnar=True)["outputs"]
    assert np.array(out["detection_multiclass_scores"]).shape == (2, 2, 2)
    assert out["detection_multiclass_scores"][1] == [[0.0, 0.0]] * 2
