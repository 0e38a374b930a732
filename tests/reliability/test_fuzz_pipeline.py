"""Hypothesis on the request parsers, the tiling geometry and the merge: whatever comes in
(random JSON, random sizes up to the limits, NaN and out-of-range boxes from the backend),
the answer is a result or a 4xx/502 GatewayError, never another exception, and the
geometric promises hold."""

from __future__ import annotations

import base64
import math

import numpy as np
import orjson
from absl_base64 import absl_base64_unescape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.backends import tfserving_wire as wire
from gateway.backends.base import TileDetections
from gateway.codecs import detect as detect_wire
from gateway.codecs import tfserving_api as api
from gateway.config import Limits
from gateway.errors import BackendBadResponse, GatewayError
from gateway.jsonio import b64decode_strict
from gateway.pipeline import merge
from gateway.pipeline.tiling import MAX_SCALE, axis_spans, plan_tiles

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                ["instances", "inputs", "image_bytes", "b64", "key", "threshold", "image", "render"]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)
b64_images = st.binary(max_size=64).map(lambda b: {"b64": base64.b64encode(b).decode()})
instance_rows = st.fixed_dictionaries(
    {"image_bytes": b64_images | json_values},
    optional={"key": json_values, "extra": json_values},
)
predict_docs = st.fixed_dictionaries(
    {},
    optional={
        "instances": st.lists(instance_rows | b64_images | json_values, max_size=20) | json_values,
        "inputs": json_values | st.fixed_dictionaries({"image_bytes": st.lists(b64_images)}),
        "threshold": json_values,
        "signature_name": st.sampled_from(["serving_default", "other"]) | json_values,
    },
)


def _is_client_error(exc: GatewayError) -> bool:
    return 400 <= exc.status < 500 and bool(exc.code) and bool(exc.message)


@FUZZ
@given(doc=predict_docs | json_values, query=st.none() | st.text(max_size=8))
def test_predict_parser_answers_a_request_or_a_4xx(doc, query):
    body = orjson.dumps(doc)
    try:
        req = api.parse_predict_request(body, query_threshold=query, max_instances=16)
    except GatewayError as exc:
        assert _is_client_error(exc), exc
        return
    assert 1 <= len(req.instances) <= 16
    assert all(isinstance(i.image, bytes) and isinstance(i.key, str) for i in req.instances)
    assert req.threshold is None or 0.0 <= req.threshold <= 1.0


@FUZZ
@given(body=st.binary(max_size=200))
def test_parsers_take_arbitrary_bytes(body):
    for parse in (
        lambda: api.parse_predict_request(body, query_threshold=None, max_instances=16),
        lambda: detect_wire.parse_json(body, {}),
    ):
        try:
            parse()
        except GatewayError as exc:
            assert _is_client_error(exc), exc


@FUZZ
@given(
    doc=st.fixed_dictionaries(
        {},
        optional={
            "image": st.binary(max_size=32).map(lambda b: base64.b64encode(b).decode())
            | json_values,
            "threshold": json_values,
            "key": json_values,
            "render": json_values,
        },
    )
    | json_values,
    query=st.dictionaries(st.sampled_from(["threshold", "key", "render"]), st.text(max_size=6)),
)
def test_detect_parser_answers_a_request_or_a_4xx(doc, query):
    try:
        req = detect_wire.parse_json(orjson.dumps(doc), query)
    except GatewayError as exc:
        assert _is_client_error(exc), exc
        return
    assert isinstance(req.image, bytes)
    assert req.threshold is None or 0.0 <= req.threshold <= 1.0


@FUZZ
@given(data=st.binary(max_size=100), junk=st.text(max_size=4))
def test_strict_base64_round_trips_and_refuses_what_tf_serving_refuses(data, junk):
    text = base64.b64encode(data).decode()
    assert b64decode_strict(text, "x") == data
    mangled = text + junk
    try:
        out = b64decode_strict(mangled, "x")
    except GatewayError as exc:
        assert exc.status == 400
        assert absl_base64_unescape(mangled) is None
    else:
        assert out == absl_base64_unescape(mangled)


# --- tiling -----------------------------------------------------------------------------


@st.composite
def slide_and_tile(draw):
    width = draw(st.integers(1, 65535))
    height = draw(st.integers(1, max(1, min(65535, Limits().max_pixels // width))))
    tw = draw(st.integers(32, 2048))
    th = draw(st.integers(32, 2048))
    overlap = draw(st.integers(0, min(tw, th) // 2))
    return width, height, tw, th, overlap


@settings(max_examples=1000, deadline=None)
@given(params=slide_and_tile(), align=st.sampled_from([1, 16]))
def test_tiles_cover_the_slide_with_the_promised_overlap(params, align):
    width, height, tw, th, overlap = params
    for length, size in ((width, tw), (height, th)):
        spans = axis_spans(length, size, overlap, align)
        assert spans[0][0] == 0 and spans[-1][1] == length
        cap = math.floor(MAX_SCALE * size)
        for (a0, a1), (b0, b1) in zip(spans, spans[1:], strict=False):
            assert a0 < b0 and a1 < b1  # ordered, no span inside another
            assert a1 - b0 >= overlap  # consecutive spans overlap enough
        for s0, s1 in spans:
            assert 0 <= s0 < s1 <= length
            assert s1 - s0 <= cap
            assert s1 - s0 >= min(size, length)
    tiles = plan_tiles(width, height, tw, th, overlap, align)
    assert [t.index for t in tiles] == list(range(len(tiles)))
    assert sum(1 for t in tiles if t.x0 == 0 and t.y0 == 0) == 1


# --- merge ------------------------------------------------------------------------------

weird_floats = st.floats(allow_nan=True, allow_infinity=True, width=32) | st.sampled_from(
    [0.0, -1.0, 1e9, -1e9, float("nan"), float("inf"), -float("inf")]
)


@st.composite
def tiles_and_detections(draw):
    width = draw(st.integers(1, 5000))
    height = draw(st.integers(1, 5000))
    tw, th = draw(st.integers(32, 1200)), draw(st.integers(32, 1200))
    overlap = draw(st.integers(0, min(tw, th) // 2))
    tiles = plan_tiles(width, height, tw, th, overlap, 16)
    per_tile = []
    for t in tiles:
        n = draw(st.integers(0, 6))
        coords = st.floats(-50, max(t.width, t.height) + 50, width=32) | weird_floats
        boxes = draw(st.lists(st.lists(coords, min_size=4, max_size=4), min_size=n, max_size=n))
        scores = draw(st.lists(weird_floats | st.floats(0, 1), min_size=n, max_size=n + 1))
        classes = draw(st.lists(st.integers(0, 3), min_size=max(n - 1, 0), max_size=n))
        per_tile.append(
            TileDetections(
                np.asarray(boxes, np.float64).reshape(-1, 4),
                np.asarray(scores, np.float64),
                np.asarray(classes, np.int64),
            )
        )
    return width, height, tiles, per_tile


@FUZZ
@given(case=tiles_and_detections())
def test_merge_survives_garbage_and_answers_valid_boxes(case):
    width, height, tiles, per_tile = case
    out = merge.merge(tiles, per_tile, width, height)
    assert out.boxes.shape == (len(out), 4)
    assert np.isfinite(out.boxes).all() and np.isfinite(out.scores).all()
    assert (out.boxes[:, 0] >= 0).all() and (out.boxes[:, 2] <= width).all()
    assert (out.boxes[:, 1] >= 0).all() and (out.boxes[:, 3] <= height).all()
    assert (out.boxes[:, 0] < out.boxes[:, 2]).all() and (out.boxes[:, 1] < out.boxes[:, 3]).all()
    assert ((out.scores >= 0) & (out.scores <= 1)).all()
    assert (np.diff(out.scores) <= 0).all()
    assert len(out) <= sum(min(len(d.boxes), len(d.scores), len(d.classes)) for d in per_tile)


@st.composite
def separate_cells(draw):
    """Slides with cells (square boxes) that do not touch, each smaller than the overlap."""
    width, height = draw(st.integers(200, 4000)), draw(st.integers(200, 3000))
    overlap = 128
    cells = []
    for _ in range(draw(st.integers(1, 8))):
        d = draw(st.integers(8, overlap - 8))
        x0 = draw(st.integers(0, width - d))
        y0 = draw(st.integers(0, height - d))
        box = (x0, y0, x0 + d, y0 + d)
        if all(
            box[2] + 2 < c[0] or c[2] + 2 < box[0] or box[3] + 2 < c[1] or c[3] + 2 < box[1]
            for c in cells
        ):
            cells.append(box)
    return width, height, overlap, cells


@FUZZ
@given(case=separate_cells())
def test_every_cell_is_reported_once_with_its_own_box(case):
    """What a perfect model would see through each tile, merged back: the cells, once each."""
    width, height, overlap, cells = case
    tiles = plan_tiles(width, height, 960, 720, overlap, 16)
    per_tile = []
    for t in tiles:
        seen = []
        for x0, y0, x1, y1 in cells:
            cx0, cy0 = max(x0, t.x0), max(y0, t.y0)
            cx1, cy1 = min(x1, t.x1), min(y1, t.y1)
            if cx0 < cx1 and cy0 < cy1:
                seen.append([cx0 - t.x0, cy0 - t.y0, cx1 - t.x0, cy1 - t.y0])
        n = len(seen)
        per_tile.append(
            TileDetections(
                np.asarray(seen, np.float64).reshape(-1, 4),
                np.full(n, 0.9),
                np.zeros(n, np.int64),
            )
        )
    out = merge.merge(tiles, per_tile, width, height)
    got = sorted(tuple(round(float(v)) for v in b) for b in out.boxes)
    assert got == sorted(cells)


# --- what the backend answers -------------------------------------------------------------

backend_numbers = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-5, 5)


@st.composite
def backend_answers(draw):
    n_tiles = draw(st.integers(1, 4))
    preds = []
    for _ in range(draw(st.sampled_from([n_tiles, n_tiles, n_tiles + 1, max(n_tiles - 1, 0)]))):
        k = draw(st.integers(0, 5))
        box = st.lists(backend_numbers, min_size=4, max_size=4) | json_values
        preds.append(
            draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "detection_boxes": st.lists(box, min_size=k, max_size=k) | json_values,
                        "detection_scores": st.lists(backend_numbers, min_size=k, max_size=k)
                        | json_values,
                        "detection_classes": st.lists(backend_numbers | json_values, max_size=k),
                        "detection_classes_as_text": st.lists(json_values, max_size=k),
                        "num_detections": backend_numbers | json_values,
                    },
                )
                | json_values
            )
        )
    doc = draw(st.just({"predictions": preds}) | json_values)
    return n_tiles, orjson.dumps(doc)


@FUZZ
@given(answer=backend_answers())
def test_backend_answers_become_detections_or_a_502(answer):
    n_tiles, body = answer
    tiles = plan_tiles(960 * n_tiles, 720, 960, 720, 0, 16)[:n_tiles]
    if len(tiles) != n_tiles:
        return
    table = wire.LabelTable(("eos",))
    try:
        per_tile = wire.parse_backend_predictions(
            body, n_tiles, [(t.width, t.height) for t in tiles], table
        )
    except BackendBadResponse as exc:
        assert exc.status == 502
        return
    out = merge.merge(tiles, per_tile, tiles[-1].x1, 720)
    assert np.isfinite(out.boxes).all()
    assert all(0 <= c < len(table.labels) for c in out.classes.tolist())
