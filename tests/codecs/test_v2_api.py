"""The Open Inference Protocol codec against the two clients it is for, used offline.

Requests are built by ``tritonclient.http`` (``InferenceServerClient.generate_request_body``,
what ``infer`` sends) and by KServe's ``InferRequest.to_rest`` (what
``InferenceRESTClient.infer`` sends); answers are read back by ``InferResult`` and by
``InferResponse.from_bytes`` (what ``InferenceRESTClient`` reads a V2 answer with).
"""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kserve.protocol.infer_type import InferInput as KInput
from kserve.protocol.infer_type import InferRequest as KRequest
from kserve.protocol.infer_type import InferResponse as KResponse
from kserve.protocol.infer_type import RequestedOutput as KOutput
from tritonclient.http import (
    InferenceServerClient,
    InferInput,
    InferRequestedOutput,
    InferResult,
)
from tritonclient.utils import InferenceServerException

from gateway.codecs import tfserving_api
from gateway.codecs import v2_api as v2
from gateway.errors import (
    BadRequest,
    GatewayError,
    InvalidBase64,
    InvalidJSON,
    PayloadTooLarge,
)
from gateway.pipeline.merge import Merged

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00fake jpeg"
PNG = b"\x89PNG\r\n\x1a\n\x00fake png"
HEADER = v2.HEADER_LENGTH


def objects(values, shape=None) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr if shape is None else arr.reshape(shape)


def triton_body(inputs, **kw) -> tuple[bytes, int | None]:
    return InferenceServerClient.generate_request_body(inputs, **kw)


def triton_input(name, values, binary=True, shape=None) -> InferInput:
    arr = objects(values, shape)
    return InferInput(name, list(arr.shape), "BYTES").set_data_from_numpy(arr, binary_data=binary)


def kserve_body(inputs, **kw) -> tuple[bytes, int | None]:
    body, length = KRequest("eos", inputs, **kw).to_rest()
    if isinstance(body, dict):  # what InferenceRESTClient then sends
        body = orjson.dumps(body)
    return body, length


def parse(body: bytes, length: int | str | None = None, max_instances: int = 16):
    return v2.parse_infer_request(body, length, max_instances=max_instances)


def parse_json(doc, max_instances: int = 16):
    return parse(json.dumps(doc).encode(), None, max_instances)


def image_input(**fields) -> dict:
    return {
        "name": "image_bytes",
        "datatype": "BYTES",
        "shape": [1],
        "data": [base64.b64encode(JPEG).decode()],
        **fields,
    }


# --- requests as tritonclient builds them ---------------------------------------------------


def test_tritonclient_binary_images_json_keys_id_and_threshold():
    body, length = triton_body(
        [triton_input("image_bytes", [JPEG, PNG]), triton_input("key", ["a", "b"], False)],
        request_id="42",
        parameters={"threshold": 0.4},
    )
    assert length is not None and length < len(body)
    req = parse(body, str(length))
    assert req.images == [JPEG, PNG] and req.keys == ["a", "b"]
    assert req.threshold == 0.4 and req.id == "42"
    # tritonclient asks for every output in binary when it names none
    assert req.binary_outputs and req.outputs is None


def test_tritonclient_binary_keys_are_utf8_text():
    body, length = triton_body(
        [triton_input("image_bytes", [JPEG]), triton_input("key", ["éos".encode()])]
    )
    assert parse(body, length).keys == ["éos"]


def test_a_single_input_may_have_any_name_and_no_threshold_cuts_nothing():
    body, length = triton_body([triton_input("IMAGE", [PNG])])
    req = parse(body, length)
    assert req.images == [PNG] and req.keys is None and req.threshold is None and req.id is None


def test_shape_n_by_1_binary_and_nested_json():
    body, length = triton_body([triton_input("image_bytes", [JPEG, PNG], shape=[2, 1])])
    assert parse(body, length).images == [JPEG, PNG]
    b64 = [base64.b64encode(x).decode() for x in (JPEG, PNG)]
    body, length = triton_body([triton_input("image_bytes", b64, False, shape=[2, 1])])
    assert length is None and json.loads(body)["inputs"][0]["data"] == b64
    assert parse(body, length).images == [JPEG, PNG]
    nested = image_input(shape=[2, 1], data=[[b64[0]], [b64[1]]])
    assert parse_json({"inputs": [nested]}).images == [JPEG, PNG]


def test_json_strings_are_read_as_base64_with_or_without_content_type():
    # tritonclient cannot send raw image bytes in JSON at all ...
    with pytest.raises(InferenceServerException, match="UTF-8"):
        triton_input("image_bytes", [JPEG], binary=False)
    # ... so a string is base64, which is what a Triton user sends by hand
    b64 = base64.b64encode(JPEG).decode()
    body, length = triton_body([triton_input("image_bytes", [b64], binary=False)])
    assert parse(body, length).images == [JPEG]
    with pytest.raises(InvalidBase64, match="'image_bytes' element 0.*read as base64"):
        parse_json({"inputs": [image_input(data=["not an image, not base64!"])]})


def test_content_types_base64_and_str():
    # a binary element may itself be base64 when its input says so; so may a key
    b64 = base64.b64encode(JPEG)
    image = {**image_input(data=None), "parameters": {"content_type": "base64"}}
    key = image_input(name="key", data=[base64.b64encode(b"k1").decode()])
    key["parameters"] = {"content_type": "base64"}
    raw = struct.pack("<I", len(b64)) + b64
    image["parameters"]["binary_data_size"] = len(raw)
    header = json.dumps({"inputs": [image, key]}).encode()
    req = parse(header + raw, len(header))
    assert req.images == [JPEG] and req.keys == ["k1"]
    text_key = image_input(name="key", data=["k2"], parameters={"content_type": "str"})
    assert parse_json({"inputs": [image_input(), text_key]}).keys == ["k2"]
    with pytest.raises(BadRequest, match="'image_bytes': an image is binary data or base64"):
        parse_json({"inputs": [image_input(parameters={"content_type": "str"})]})


def test_requested_outputs_and_their_binary_flags():
    body, length = triton_body(
        [triton_input("image_bytes", [JPEG])],
        outputs=[
            InferRequestedOutput("num_detections", binary_data=False),
            InferRequestedOutput("detection_boxes"),
        ],
    )
    req = parse(body, length)
    assert not req.binary_outputs
    assert req.outputs == [
        v2.RequestedOutput("num_detections", False),
        v2.RequestedOutput("detection_boxes", True),
    ]


# --- requests as KServe's InferRequest.to_rest builds them --------------------------------


def test_kserve_binary_images():
    image = KInput("image_bytes", [2], "BYTES")
    image.set_data_from_numpy(objects([JPEG, PNG]), binary_data=True)
    key = KInput("key", [2], "BYTES", data=["x", "y"])
    body, length = kserve_body([image, key], request_id="r-1")
    req = parse(body, length)
    assert req.images == [JPEG, PNG] and req.keys == ["x", "y"] and req.id == "r-1"
    assert json.loads(body[:length])["model_name"] == "eos"  # the body's name changes nothing


def test_kserve_base64_json_with_content_type_and_its_generated_id():
    b64 = base64.b64encode(PNG).decode()
    image = KInput("image_bytes", [1], "BYTES", data=[b64], parameters={"content_type": "base64"})
    body, length = kserve_body(
        [image],
        parameters={"binary_data_output": True, "threshold": "0.25"},
        request_outputs=[KOutput("detection_scores", {"binary_data": False})],
    )
    assert length is None
    req = parse(body, length)
    assert req.images == [PNG] and req.threshold == 0.25 and req.binary_outputs
    assert req.id and req.id == json.loads(body)["id"]  # KServe always sends one (a uuid)
    assert req.outputs == [v2.RequestedOutput("detection_scores", False)]


def test_kserve_empty_binary_input_is_null_data_and_refused_clearly():
    image = KInput("image_bytes", [0], "BYTES")
    image.set_data_from_numpy(objects([]), binary_data=True)
    body, length = kserve_body([image])
    assert json.loads(body)["inputs"][0]["data"] is None  # to_rest writes null for b""
    with pytest.raises(BadRequest, match="'image_bytes' has no images"):
        parse(body, length)


# --- request errors -------------------------------------------------------------------------


def binary_body(elements: list[bytes], size: int | None = None, extra: bytes = b"") -> tuple:
    raw = b"".join(struct.pack("<I", len(e)) + e for e in elements) + extra
    doc = {
        "inputs": [
            {
                "name": "image_bytes",
                "datatype": "BYTES",
                "shape": [len(elements)],
                "parameters": {"binary_data_size": len(raw) if size is None else size},
            }
        ]
    }
    header = json.dumps(doc).encode()
    return header + raw, len(header)


@pytest.mark.parametrize("length", ["abc", "-5", "0", "1e3", "99999", 3.5, "9" * 5000])
def test_a_bad_header_length(length):
    body, _ = binary_body([JPEG])
    with pytest.raises(BadRequest, match=HEADER):
        parse(body, length)


def test_binary_data_without_the_header_is_not_json():
    body, _ = binary_body([JPEG])
    with pytest.raises(InvalidJSON):
        parse(body, None)


def test_binary_size_without_the_header_says_so():
    header = json.dumps(
        {"inputs": [image_input(data=None, parameters={"binary_data_size": 10})]}
    ).encode()
    with pytest.raises(BadRequest, match=f"'image_bytes'.*10 bytes.*{HEADER} header missing"):
        parse(header, None)


@pytest.mark.parametrize(
    "elements,size,extra,message",
    [
        ([JPEG], 100, b"", "'image_bytes' declares 100 bytes of binary data"),
        ([JPEG, PNG], 4 + len(JPEG), b"", "'image_bytes': its binary data ends before element 1"),
        ([JPEG], None, b"zz", "'image_bytes': 2 bytes of binary data left"),
        ([JPEG], 8, b"", "'image_bytes': element 0 declares"),
    ],
)
def test_truncated_or_overlong_binary_data(elements, size, extra, message):
    body, length = binary_body(elements, size, extra)
    with pytest.raises(BadRequest, match=message):
        parse(body, length)


def test_bytes_after_every_input_belong_to_none():
    body, length = binary_body([JPEG])
    with pytest.raises(BadRequest, match="3 bytes after the JSON header belong to no input"):
        parse(body + b"abc", length)


@pytest.mark.parametrize(
    "body,error,message",
    [
        (b"{not json", InvalidJSON, "not valid JSON"),
        (b'{"inputs": "\xff\xfe"}', InvalidJSON, "not valid JSON"),  # not UTF-8
        (b"[1]", BadRequest, "JSON object"),
        (b"{}", BadRequest, '"inputs" must be a non-empty list'),
        (b'{"inputs": []}', BadRequest, '"inputs" must be a non-empty list'),
        (b'{"inputs": [7]}', BadRequest, r"inputs\[0\] must be an object"),
    ],
)
def test_bodies_that_are_not_requests(body, error, message):
    with pytest.raises(error, match=message):
        parse(body)


B64 = base64.b64encode(JPEG).decode()


@pytest.mark.parametrize(
    "doc,message",
    [
        ({"inputs": [image_input(datatype="UINT8")]}, "'image_bytes' must have datatype"),
        ({"inputs": [image_input(shape=[1, 2])]}, r"'image_bytes' must have shape \[n\]"),
        ({"inputs": [image_input(shape=[-1])]}, "'image_bytes' must have shape"),
        ({"inputs": [image_input(shape="1")]}, "'image_bytes' must have shape"),
        ({"inputs": [image_input(shape=[2])]}, "'image_bytes' has 1 elements for its shape"),
        ({"inputs": [image_input(data=None)]}, "'image_bytes' has neither"),
        (
            {"inputs": [image_input(parameters={"binary_data_size": 4})]},
            "'image_bytes' has both",
        ),
        (
            {"inputs": [image_input(parameters={"content_type": "np"})]},
            "'image_bytes': content_type",
        ),
        (
            {"inputs": [image_input(parameters={"shared_memory_region": "r"})]},
            "'image_bytes': shared memory",
        ),
        (
            {"inputs": [image_input(), image_input(name="extra")]},
            "several inputs they must be",
        ),
        ({"inputs": [image_input(), image_input()]}, "'image_bytes' is given twice"),
        (
            {"inputs": [image_input(), image_input(name="key", data=["a", "b"], shape=[2])]},
            "'key' must have one element per image",
        ),
        (
            {"inputs": [image_input(), image_input(name="key", data=[True])]},
            "'key' element 0 must be a string",
        ),
        ({"inputs": [image_input(data=[5])]}, "'image_bytes' element 0 must be a base64"),
        (
            {"inputs": [image_input(data=[[[B64]]])]},
            "'image_bytes' element 0 must be a base64",
        ),
        ({"inputs": [image_input()], "id": 5}, '"id" must be a string'),
        ({"inputs": [image_input()], "parameters": []}, '"parameters" must be an object'),
        (
            {"inputs": [image_input()], "parameters": {"binary_data_output": "yes"}},
            "binary_data_output must be true or false",
        ),
        ({"inputs": [image_input()], "parameters": {"threshold": 2}}, "between 0 and 1"),
        ({"inputs": [image_input()], "outputs": {"name": "x"}}, '"outputs" must be a list'),
        ({"inputs": [image_input()], "outputs": [{"name": 1}]}, r"outputs\[0\] must be"),
        (
            {"inputs": [image_input()], "outputs": [{"name": "a"}, {"name": "a"}]},
            "'a' is requested twice",
        ),
        (
            {
                "inputs": [image_input()],
                "outputs": [{"name": "a", "parameters": {"binary_data": 1}}],
            },
            "binary_data must be true or false",
        ),
        (
            {
                "inputs": [image_input()],
                "outputs": [{"name": "a", "parameters": {"classification": 3}}],
            },
            "classification extension is not supported",
        ),
    ],
)
def test_request_errors_name_what_is_wrong(doc, message):
    with pytest.raises(BadRequest, match=message):
        parse_json(doc)


def test_a_binary_key_that_is_not_utf8():
    body, length = triton_body(
        [triton_input("image_bytes", [JPEG]), triton_input("key", [b"\xff\xfe"])]
    )
    with pytest.raises(BadRequest, match="'key' element 0 is not UTF-8"):
        parse(body, length)


def test_more_images_than_the_limit():
    body, length = triton_body([triton_input("image_bytes", [JPEG] * 3)])
    assert len(parse(body, length, max_instances=3).images) == 3
    with pytest.raises(PayloadTooLarge, match="'image_bytes' has 3 images; the limit is 2"):
        parse(body, length, max_instances=2)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_corruption_of_a_real_request_is_refused_as_a_request_error(data):
    body, length = triton_body(
        [triton_input("image_bytes", [JPEG, PNG]), triton_input("key", ["a", "b"], False)]
    )
    at = data.draw(st.integers(0, len(body) - 1))
    patch = data.draw(st.binary(min_size=0, max_size=8))
    cut = data.draw(st.integers(0, 8))
    corrupted = body[:at] + patch + body[at + cut :]
    header = data.draw(st.one_of(st.just(length), st.integers(-2, len(corrupted) + 2)))
    try:
        req = parse(corrupted, header)
    except GatewayError:
        return
    assert len(req.images) == len(req.keys or req.images) <= 16


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 4), st.binary(max_size=40), st.integers(0, 48))
def test_any_binary_data_is_read_or_refused_as_a_request_error(count, raw, size):
    doc = {"inputs": [image_input(data=None, shape=[count])]}
    doc["inputs"][0]["parameters"] = {"binary_data_size": size}
    header = json.dumps(doc).encode()
    try:
        req = parse(header + raw, len(header))
    except GatewayError:
        return
    assert len(req.images) == count and size == len(raw)


# --- answers --------------------------------------------------------------------------------


def detection_rows() -> list[dict]:
    """Two instances as :predict answers them: two detections (with a per-detection extra
    output) and none."""
    merged = Merged(
        boxes=np.array([[10, 20, 50, 60], [0, 0, 100, 40]], np.float32),
        scores=np.array([0.9, 0.5], np.float32),
        classes=np.array([0, 0], np.int32),
        extras={"detection_multiclass_scores": np.array([[0.1, 0.9], [0.5, 0.5]], np.float32)},
    )
    empty = Merged(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))
    return [
        tfserving_api.prediction(merged, 200, 100, ["eos"], [1.0], "a"),
        tfserving_api.prediction(empty, 200, 100, ["eos"], [1.0], "b"),
    ]


def request(keys=("a", "b"), binary=False, outputs=None, id="7") -> v2.InferRequest:
    return v2.InferRequest(
        images=[JPEG] * 2,
        keys=None if keys is None else list(keys),
        threshold=None,
        id=id,
        binary_outputs=binary,
        outputs=outputs,
    )


def triton_read(body: bytes, headers: dict) -> InferResult:
    length = headers.get(HEADER)
    return InferResult.from_response_body(body, False, None if length is None else int(length))


def kserve_read(body: bytes, headers: dict) -> dict[str, np.ndarray]:
    response = KResponse.from_bytes(body, int(headers.get(HEADER, len(body))))
    return {o.name: o.as_numpy() for o in response.outputs}


@pytest.mark.parametrize("binary", [False, True])
def test_detections_are_stacked_and_padded_as_tf_pads_a_batch(binary):
    rows = detection_rows()
    body, headers = v2.encode_infer_response(
        rows, request(binary=binary), model_name="eos", model_version="1"
    )
    assert (HEADER in headers) == binary
    assert headers["Content-Type"] == ("application/octet-stream" if binary else "application/json")
    result = triton_read(body, headers)
    boxes = result.as_numpy("detection_boxes")
    assert boxes.dtype == np.float32 and boxes.shape == (2, 2, 4)
    np.testing.assert_allclose(boxes[0], rows[0]["detection_boxes"], rtol=1e-6)
    assert not boxes[1].any()
    np.testing.assert_allclose(result.as_numpy("detection_scores"), [[0.9, 0.5], [0, 0]])
    np.testing.assert_array_equal(result.as_numpy("detection_classes"), [[1, 1], [0, 0]])
    text = result.as_numpy("detection_classes_as_text").tolist()
    assert [[str(t, "utf-8") if isinstance(t, bytes) else t for t in r] for r in text] == [
        ["eos", "eos"],
        ["", ""],
    ]
    extra = result.as_numpy("detection_multiclass_scores")
    assert extra.shape == (2, 2, 2) and not extra[1].any()
    np.testing.assert_array_equal(result.as_numpy("num_detections"), [2, 0])
    assert [k if isinstance(k, str) else k.decode() for k in result.as_numpy("key")] == ["a", "b"]
    doc = result.get_response()
    assert (doc["model_name"], doc["model_version"], doc["id"]) == ("eos", "1", "7")
    assert [o["name"] for o in doc["outputs"]] == list(rows[0])  # the :predict order
    assert {o["name"]: o["datatype"] for o in doc["outputs"]} == {
        **{n: t for n, (t, _) in v2.DETECTION_OUTPUTS.items()},
        "detection_multiclass_scores": "FP32",
    }
    kserve = kserve_read(body, headers)
    np.testing.assert_allclose(kserve["detection_boxes"], boxes)
    assert kserve["num_detections"].tolist() == [2, 0]


def test_json_data_is_flat_row_major():
    body, headers = v2.encode_infer_response(
        detection_rows(), request(), model_name="eos", model_version=None
    )
    doc = json.loads(body)
    boxes = next(o for o in doc["outputs"] if o["name"] == "detection_boxes")
    assert boxes["shape"] == [2, 2, 4] and len(boxes["data"]) == 16
    assert "model_version" not in doc  # unknown: left out, as the protocol asks
    response = KResponse.from_rest(doc)  # KServe reads it as a dict too
    assert response.model_name == "eos" and response.id == "7"


def test_no_keys_no_key_output_and_no_id_no_id():
    body, headers = v2.encode_infer_response(
        detection_rows(), request(keys=None, id=None), model_name="eos", model_version="1"
    )
    doc = json.loads(body)
    assert "id" not in doc and "key" not in [o["name"] for o in doc["outputs"]]


def test_requested_outputs_in_their_order_with_their_own_binary_flags():
    outputs = [v2.RequestedOutput("num_detections", False), v2.RequestedOutput("key", None)]
    body, headers = v2.encode_infer_response(
        detection_rows(), request(binary=True, outputs=outputs), model_name="eos", model_version="1"
    )
    result = triton_read(body, headers)
    doc = result.get_response()
    assert [o["name"] for o in doc["outputs"]] == ["num_detections", "key"]
    assert doc["outputs"][0]["data"] == [2.0, 0.0]
    assert doc["outputs"][1]["parameters"] == {"binary_data_size": 2 * (4 + 1)}
    assert result.as_numpy("key").tolist() == [b"a", b"b"]
    assert kserve_read(body, headers)["key"].tolist() == ["a", "b"]


def test_an_unknown_requested_output_is_refused():
    with pytest.raises(BadRequest, match="unknown output 'boxes'; the outputs are: detection"):
        v2.encode_infer_response(
            detection_rows(),
            request(outputs=[v2.RequestedOutput("boxes", None)]),
            model_name="eos",
            model_version="1",
        )
    with pytest.raises(BadRequest, match="unknown output 'key'"):  # no keys were sent
        v2.encode_infer_response(
            detection_rows(),
            request(keys=None, outputs=[v2.RequestedOutput("key", None)]),
            model_name="eos",
            model_version="1",
        )


def test_instances_without_detections_still_have_the_box_dimension():
    rows = [detection_rows()[1]]
    body, headers = v2.encode_infer_response(
        rows, request(binary=True), model_name="eos", model_version="1"
    )
    result = triton_read(body, headers)
    assert result.as_numpy("detection_boxes").shape == (1, 0, 4)
    assert result.as_numpy("detection_scores").shape == (1, 0)
    assert kserve_read(body, headers)["detection_boxes"].shape == (1, 0, 4)


@pytest.mark.parametrize("binary", [False, True])
def test_classifications(binary):
    rows = [
        tfserving_api.classification(["normal", "inflamed"], [0.2, 0.8], "a"),
        tfserving_api.classification(["normal", "inflamed"], [0.7, 0.3], "b"),
    ]
    body, headers = v2.encode_infer_response(
        rows, request(binary=binary), model_name="tissue", model_version=None
    )
    result = triton_read(body, headers)
    np.testing.assert_allclose(result.as_numpy("scores"), [[0.2, 0.8], [0.7, 0.3]], rtol=1e-6)
    assert result.as_numpy("scores").dtype == np.float32
    labels = kserve_read(body, headers)["labels"]
    assert labels.shape == (2, 2) and labels.tolist()[1] == ["normal", "inflamed"]
    doc = result.get_response()
    assert {o["name"]: (o["datatype"], len(o["shape"])) for o in doc["outputs"]} == {
        n: (t, len(s)) for n, (t, s) in v2.CLASSIFICATION_OUTPUTS.items()
    }


def test_non_ascii_labels_keep_the_header_length_in_bytes():
    rows = [tfserving_api.classification(["éosinophile"], [1.0], "ü")]
    outputs = [v2.RequestedOutput("labels", False), v2.RequestedOutput("scores", True)]
    body, headers = v2.encode_infer_response(
        rows, request(keys=["ü"], outputs=outputs), model_name="m", model_version=None
    )
    result = triton_read(body, headers)
    assert result.as_numpy("labels").tolist() == [["éosinophile"]]
    assert result.as_numpy("scores").tolist() == [[1.0]]


# --- errors and documents -------------------------------------------------------------------


def test_error_body_has_the_protocols_error_key():
    doc = json.loads(v2.error_body("no such model", code="unknown_service", request_id="r1"))
    assert doc == {"error": "no such model", "code": "unknown_service", "request_id": "r1"}


def test_server_and_model_metadata():
    assert v2.server_metadata("eos-gateway", "0.1.0", ["binary_tensor_data"]) == {
        "name": "eos-gateway",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data"],
    }
    doc = v2.model_metadata("eos", ["1"], v2.DETECTION_OUTPUTS, platform="tensorflow")
    assert doc["name"] == "eos" and doc["versions"] == ["1"] and doc["platform"] == "tensorflow"
    assert doc["inputs"] == [
        {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]},
        {"name": "key", "datatype": "BYTES", "shape": [-1]},
    ]
    assert {"name": "detection_boxes", "datatype": "FP32", "shape": [-1, -1, 4]} in doc["outputs"]
    json.dumps(doc)  # a JSON document as it is
