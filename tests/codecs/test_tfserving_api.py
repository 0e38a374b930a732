"""TF Serving's REST API as the gateway serves it (requests read, predictions written, what a
passthrough body counts for quotas) and the :detect codec's JSON request."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs import tfserving_api as api
from gateway.codecs.detect import parse_json
from gateway.codecs.tfserving_api import passthrough_batch_size
from gateway.errors import (
    BadRequest,
    GatewayError,
    InvalidBase64,
    InvalidJSON,
    PayloadTooLarge,
)
from gateway.jsonio import b64decode_strict
from gateway.pipeline.merge import Merged

IMG = b"\xff\xd8\xff\xe0fake-jpeg-bytes"
B64 = base64.b64encode(IMG).decode()


def parse(doc, query=None, max_instances=16):
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return api.parse_predict_request(body, query_threshold=query, max_instances=max_instances)


def test_the_web_apps_exact_request():
    req = parse({"instances": [{"image_bytes": {"b64": B64}, "key": "eos"}]})
    assert [(i.image, i.key) for i in req.instances] == [(IMG, "eos")]
    assert req.threshold is None and not req.columnar


def test_several_instances_keep_their_order_and_keys():
    req = parse({"instances": [{"image_bytes": {"b64": B64}, "key": k} for k in "abc"]})
    assert [i.key for i in req.instances] == ["a", "b", "c"]


def test_columnar_inputs_are_supported():
    req = parse({"inputs": {"image_bytes": [{"b64": B64}, {"b64": B64}], "key": ["x", "y"]}})
    assert req.columnar and [i.key for i in req.instances] == ["x", "y"]


@pytest.mark.parametrize(
    "doc,query,expected",
    [
        ({"threshold": 0.5}, None, 0.5),
        ({}, "0.25", 0.25),
        ({"threshold": 0.7}, "0.2", 0.7),  # the body wins
        ({"threshold": 0}, None, 0.0),
        ({"threshold": 1}, None, 1.0),
    ],
)
def test_threshold_from_body_or_query(doc, query, expected):
    req = parse({"instances": [{"image_bytes": {"b64": B64}}], **doc}, query)
    assert req.threshold == expected


@pytest.mark.parametrize(
    "doc,error",
    [
        (b"{not json", InvalidJSON),
        (b"", InvalidJSON),
        ([1, 2], BadRequest),
        ({}, BadRequest),
        ({"instances": []}, BadRequest),
        ({"instances": "x"}, BadRequest),
        ({"instances": [{"image_bytes": "abc"}]}, BadRequest),
        ({"instances": [{"image_bytes": {"b64": 5}}]}, InvalidBase64),
        ({"instances": [{"image_bytes": {"b64": "abcde"}}]}, InvalidBase64),
        ({"instances": [{"image_bytes": {"b64": "ab$="}}]}, InvalidBase64),
        ({"instances": [{"image_bytes": {"b64": B64 + "-"}}]}, InvalidBase64),
        ({"instances": [{"image_bytes": {"b64": B64}, "extra": 1}]}, BadRequest),
        ({"instances": [{"image_bytes": {"b64": B64}}], "inputs": {}}, BadRequest),
        ({"instances": [{"image_bytes": {"b64": B64}}], "threshold": 1.5}, BadRequest),
        ({"instances": [{"image_bytes": {"b64": B64}}], "threshold": "high"}, BadRequest),
        ({"instances": [{"image_bytes": {"b64": B64}}], "threshold": True}, BadRequest),
        ({"instances": [{"image_bytes": {"b64": B64}}], "signature_name": "x"}, BadRequest),
        ({"inputs": {"image_bytes": [{"b64": B64}], "key": ["a", "b"]}}, BadRequest),
        ({"instances": [{"image_bytes": {"b64": B64}}] * 17}, PayloadTooLarge),
    ],
)
def test_malformed_requests_are_client_errors(doc, error):
    with pytest.raises(error) as info:
        parse(doc)
    assert 400 <= info.value.status < 500 and info.value.message


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(["instances", "inputs", "image_bytes", "b64", "key", "threshold"])
                | st.text(max_size=8),
                children,
                max_size=4,
            )
        ),
        max_leaves=20,
    )
)
def test_any_json_shape_is_parsed_or_refused_cleanly(doc):
    try:
        parse(json.dumps(doc).encode())
    except GatewayError as exc:
        assert 400 <= exc.status < 500
    except ValueError:  # json.dumps of NaN etc. is outside this test
        pass


def test_strict_base64_refuses_urlsafe_and_misplaced_padding():
    assert b64decode_strict(base64.b64encode(b"\xfb\xff").decode(), "x") == b"\xfb\xff"
    for bad in ["-_8=", "+/8=A", "+/=8", "+/8==", "é==="]:
        with pytest.raises(InvalidBase64):
            b64decode_strict(bad, "x")


def test_prediction_normalizes_boxes_to_the_submitted_image():
    merged = Merged(
        np.array([[100, 50, 200, 150], [0, 0, 10, 10]], np.float32),
        np.array([0.9, 0.4], np.float32),
        np.array([0, 0], np.int32),
    )
    p = api.prediction(merged, 1000, 500, ("eos",), (1.0,), "eos")
    assert p["detection_boxes"][0] == [0.1, 0.1, 0.3, 0.2]  # [ymin, xmin, ymax, xmax]
    assert p["detection_scores"] == pytest.approx([0.9, 0.4])
    assert p["detection_classes_as_text"] == ["eos", "eos"]
    assert p["num_detections"] == 2 and p["key"] == "eos"


def test_detect_json_request():
    req = parse_json(json.dumps({"image": B64, "threshold": 0.4, "key": "k"}).encode(), {})
    assert (req.image, req.threshold, req.key, req.render) == (IMG, 0.4, "k", None)
    with pytest.raises(BadRequest):
        parse_json(b'{"img": "x"}', {})
    with pytest.raises(BadRequest):
        parse_json(json.dumps({"image": B64, "render": "gif"}).encode(), {})


@pytest.mark.parametrize(
    "body,count",
    [
        (b'{"instances": [1, 2, 3]}', 3),
        (b'{"signature_name": "s", "instances": [{"x": 1}]}', 1),
        (b'{"inputs": [[1], [2]]}', 2),
        (b'{"inputs": {"a": [[1, 2], [3, 4]], "b": [1]}}', 2),
        (b'{"inputs": {"a": 5}}', 1),
        # A decoy first input does not make the batch look smaller: the largest counts.
        (b'{"inputs": {"key": ["k"], "image_bytes": [1, 2, 3, 4, 5]}}', 5),
        (b'{"inputs": {"a": 7, "b": [1, 2, 3]}}', 3),
    ],
)
def test_passthrough_quota_counts_instances_or_the_largest_inputs_batch(body, count):
    assert passthrough_batch_size(body) == count


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [1, 2, 3, 4], "instances": [1]}',
        b'{"inputs": {"a": [1, 2, 3], "a": [1]}}',
        b'{"instances": [{"x": 1, "x": 2}]}',
        b'{"instances": [1], "instances": [1]}',
    ],
)
def test_a_key_given_twice_is_refused_wherever_images_are_counted(body):
    """TF Serving reads the first of duplicate keys, Python parsers the last: refused."""
    with pytest.raises(InvalidJSON) as info:
        passthrough_batch_size(body)
    assert info.value.status == 400 and "twice" in info.value.message
    with pytest.raises(InvalidJSON):
        parse(body)


def test_a_key_given_twice_beside_a_decoded_image_is_refused():
    image = base64.b64encode(IMG * 1000).decode()  # long enough to be decoded in place
    once = f'{{"instances": [{{"image_bytes": {{"b64": "{image}"}}, "key": "a"}}]}}'
    assert parse(once.encode()).instances[0].image == IMG * 1000
    with pytest.raises(InvalidJSON):
        parse((once[:-1] + ', "instances": []}').encode())


def test_nan_and_infinity_are_not_json_in_a_request_body():
    for body in (b'{"instances": [NaN]}', b'{"inputs": {"a": Infinity}}'):
        with pytest.raises(InvalidJSON):
            passthrough_batch_size(body)


@pytest.mark.parametrize(
    "body",
    [
        b"[1]",
        b'{"rows": [1]}',
        b'{"instances": []}',
        b'{"instances": 1}',
        b'{"inputs": {}}',
        b'{"instances": [1], "inputs": [1]}',
    ],
)
def test_passthrough_bodies_without_inputs_are_refused(body):
    with pytest.raises(BadRequest):
        passthrough_batch_size(body)
