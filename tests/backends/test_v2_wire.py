"""The Open Inference Protocol codec: requests a V2 server (and tritonclient's own decoder)
reads as sent, and strict readers of answers in JSON (flat or nested) and in binary, where
garbage is a 502 and never a wrong count."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from gateway.backends import v2_wire as v2
from gateway.backends.boxes import BOX_FORMATS, to_tile_pixels
from gateway.backends.labels import LabelTable
from gateway.errors import BackendBadResponse

IMAGES = [b"\xff\xd8 first \x00 image", b"", b'\x89PNG "quoted" \\ and \xff bytes' * 50]


def split(body: bytes, headers: dict[str, str]) -> tuple[dict, bytes]:
    """The JSON header of a request or answer, and the binary data after it."""
    n = int(headers.get(v2.HEADER_LENGTH, len(body)))
    return json.loads(body[:n]), body[n:]


# -- requests ------------------------------------------------------------------------------


def test_base64_request_is_json_with_the_content_type_mlserver_decodes():
    body, headers = v2.infer_request(
        IMAGES, input_name="image_bytes", bytes_mode="base64", outputs=["a", "b"], request_id="r-1"
    )
    assert headers == {"Content-Type": "application/json"}
    doc = json.loads(body)
    (tensor,) = doc["inputs"]
    assert doc["id"] == "r-1"
    assert tensor["name"] == "image_bytes"
    assert (tensor["shape"], tensor["datatype"]) == ([3], "BYTES")
    assert tensor["parameters"] == {"content_type": "base64"}
    assert [base64.b64decode(s, validate=True) for s in tensor["data"]] == IMAGES
    assert doc["outputs"] == [{"name": "a"}, {"name": "b"}]


def test_binary_request_decodes_with_tritonclient_and_matches_its_own_body():
    body, headers = v2.infer_request(
        IMAGES, input_name="in", bytes_mode="binary", outputs=["boxes"], request_id="7"
    )
    assert headers["Content-Type"] == "application/octet-stream"
    doc, data = split(body, headers)
    (tensor,) = doc["inputs"]
    assert (tensor["shape"], tensor["datatype"]) == ([3], "BYTES")
    assert tensor["parameters"] == {"binary_data_size": len(data)}
    assert "data" not in tensor
    assert list(deserialize_bytes_tensor(data)) == IMAGES
    assert doc["outputs"] == [{"name": "boxes"}]

    from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

    theirs = InferInput("in", [3], "BYTES")
    theirs.set_data_from_numpy(np.array(IMAGES, dtype=object), binary_data=True)
    their_body, their_length = InferenceServerClient.generate_request_body(
        [theirs], outputs=[InferRequestedOutput("boxes", binary_data=False)], request_id="7"
    )
    their_doc = json.loads(their_body[:their_length])
    assert their_body[their_length:] == data
    assert their_doc["inputs"] == doc["inputs"]
    assert their_doc["id"] == doc["id"]


def test_names_and_ids_are_escaped_and_no_outputs_asks_for_all():
    body, _ = v2.infer_request(
        [b"x"], input_name='in"put', bytes_mode="base64", outputs=[], request_id='a"\\b'
    )
    doc = json.loads(body)
    assert (doc["id"], doc["inputs"][0]["name"]) == ('a"\\b', 'in"put')
    assert "outputs" not in doc


def test_binary_outputs_can_be_asked_for():
    body, headers = v2.infer_request(
        [b"x"],
        input_name="i",
        bytes_mode="binary",
        outputs=["s"],
        request_id="",
        binary_outputs=True,
    )
    doc, _ = split(body, headers)
    assert doc["outputs"] == [{"name": "s", "parameters": {"binary_data": True}}]


def test_an_unknown_bytes_mode_is_a_programming_error():
    with pytest.raises(ValueError, match="bytes mode"):
        v2.infer_request([b"x"], input_name="i", bytes_mode="hex", outputs=[], request_id="")


# -- answers -------------------------------------------------------------------------------

SIZES = [(960, 720), (640, 480)]
PIXELS = np.array(  # two tiles, three rows each, in tile pixels [x0, y0, x1, y1]
    [
        [[96.0, 72.0, 192.0, 144.0], [480.0, 360.0, 528.0, 432.0], [0.0, 0.0, 9.6, 7.2]],
        [[64.0, 48.0, 128.0, 96.0], [320.0, 240.0, 352.0, 288.0], [0.0, 0.0, 0.0, 0.0]],
    ]
)
SCORES = [[0.9, 0.8, 0.1], [0.7, 0.6, 0.0]]


def as_format(box_format: str) -> np.ndarray:
    """PIXELS written in ``box_format``."""
    out = PIXELS.copy()
    for i, (w, h) in enumerate(SIZES):
        x0, y0, x1, y1 = (PIXELS[i, :, j] for j in range(4))
        if box_format == "yxyx_normalized":
            out[i] = np.stack([y0 / h, x0 / w, y1 / h, x1 / w], 1)
        elif box_format == "xyxy_normalized":
            out[i] = np.stack([x0 / w, y0 / h, x1 / w, y1 / h], 1)
    return out


def tensor(name: str, datatype: str, value, nested: bool = False) -> dict:
    arr = np.asarray(value)
    data = arr.tolist() if nested else arr.reshape(-1).tolist()
    return {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": data}


def raw(name: str, datatype: str, value, dtype=None) -> tuple[dict, bytes]:
    """An output as binary data: numbers in ``dtype``, BYTES serialized by tritonclient."""
    arr = np.asarray(value, dtype=dtype) if dtype is not None else np.asarray(value, dtype=object)
    if datatype == "BYTES":
        data = serialize_byte_tensor(arr).item() if arr.size else b""
    else:
        data = arr.astype(dtype).tobytes()
    row = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
    row["parameters"] = {"binary_data_size": len(data)}
    return row, data


def answer(*rows, extra: dict | None = None) -> tuple[bytes, int | None]:
    """A body from JSON rows and (row, bytes) pairs; binary data follows in output order."""
    outputs, blobs = [], []
    for row in rows:
        if isinstance(row, tuple):
            outputs.append(row[0])
            blobs.append(row[1])
        else:
            outputs.append(row)
    doc = {"id": "x", "model_name": "m", "model_version": None, "outputs": outputs}
    doc.update(extra or {})
    header = json.dumps(doc).encode()
    return header + b"".join(blobs), (len(header) if blobs else None)


def detections(body, length, box_format="yxyx_normalized", classes="classes", table=None):
    return v2.parse_detections(
        body,
        length,
        2,
        SIZES,
        table or LabelTable(["eos"]),
        boxes="boxes",
        scores="scores",
        classes=classes,
        box_format=box_format,
    )


@pytest.mark.parametrize("box_format", BOX_FORMATS)
@pytest.mark.parametrize("nested", [False, True])
def test_each_box_format_in_json_flat_or_nested_gives_the_same_tile_pixels(box_format, nested):
    body, length = answer(
        tensor("boxes", "FP32", as_format(box_format), nested),
        tensor("scores", "FP32", SCORES, nested),
        tensor("classes", "BYTES", [["eos"] * 3] * 2, nested),
    )
    tiles = detections(body, length, box_format)
    for i, tile in enumerate(tiles):
        np.testing.assert_allclose(tile.boxes, PIXELS[i], atol=1e-9)
        np.testing.assert_allclose(tile.scores, SCORES[i])
        assert tile.classes.tolist() == [0, 0, 0]


@pytest.mark.parametrize("box_format", BOX_FORMATS)
def test_binary_outputs_read_as_their_datatypes_say(box_format):
    table = LabelTable(["eos"])
    body, length = answer(
        raw("boxes", "FP32", as_format(box_format), np.float32),
        raw("scores", "FP64", SCORES, np.float64),
        raw("classes", "BYTES", [[b"eos", b"neutrophil", b"eos"], [b"", b"eos", b"eos"]]),
        raw("num_detections", "INT32", [3, 2], np.int32),
    )
    tiles = detections(body, length, box_format, table=table)
    np.testing.assert_allclose(tiles[0].boxes, PIXELS[0], rtol=1e-6, atol=1e-4)  # float32
    assert [len(t.scores) for t in tiles] == [3, 2]
    assert [table.labels[c] for c in tiles[0].classes] == ["eos", "neutrophil", "eos"]
    assert [table.labels[c] for c in tiles[1].classes] == ["", "eos"]


def test_binary_and_json_outputs_mix_in_one_answer():
    body, length = answer(
        tensor("scores", "FP32", SCORES),
        raw("boxes", "FP32", as_format("yxyx_normalized"), np.float32),
        tensor("classes", "FP32", [[1, 1, 1], [1, 1, 1]]),
        raw("detection_multiclass_scores", "FP16", np.ones((2, 3, 2)), np.float16),
    )
    tiles = detections(body, length)
    np.testing.assert_allclose(tiles[1].boxes, PIXELS[1], rtol=1e-6, atol=1e-4)
    assert tiles[1].extras["detection_multiclass_scores"].shape == (3, 2)


def test_padded_batches_are_cut_to_num_detections():
    table = LabelTable(["eos"])
    body, length = answer(
        tensor("boxes", "FP32", as_format("yxyx_normalized")),
        tensor("scores", "FP32", SCORES),
        tensor("classes", "FP32", [[1, 2, 0], [1, 0, 0]]),
        tensor("num_detections", "FP32", [2, 1]),
        tensor("anchors", "INT32", [[5, 6, 0], [7, 0, 0]]),
        tensor("image_info", "INT32", [[720, 960, 1, 0, 960, 720]] * 2),
    )
    tiles = detections(body, length, table=table)
    assert [len(t.boxes) for t in tiles] == [2, 1]
    assert [table.labels[c] for c in tiles[0].classes] == ["eos", "class_2"]
    assert tiles[0].extras["anchors"].tolist() == [5, 6]
    assert tiles[1].extras["anchors"].tolist() == [7]
    assert "image_info" not in tiles[0].extras  # not one value per detection
    np.testing.assert_allclose(tiles[1].boxes, PIXELS[1, :1], atol=1e-9)


def test_num_detections_of_shape_n_1_beyond_k_or_negative_is_clamped():
    body, length = answer(
        tensor("boxes", "FP32", as_format("yxyx_normalized")),
        tensor("scores", "FP32", SCORES),
        tensor("num_detections", "INT64", [[99], [-1]]),
    )
    tiles = detections(body, length, classes=None)
    assert [len(t.boxes) for t in tiles] == [3, 0]
    assert tiles[1].boxes.shape == (0, 4)


def test_without_a_classes_output_every_detection_is_the_first_label():
    table = LabelTable(["eos"])
    body, length = answer(
        tensor("boxes", "FP32", as_format("xyxy_pixels")), tensor("scores", "FP32", SCORES)
    )
    tiles = detections(body, length, "xyxy_pixels", classes=None, table=table)
    assert tiles[0].classes.tolist() == [0, 0, 0]
    assert table.labels == ["eos"]


def test_no_detections_at_all():
    body, length = answer(
        tensor("boxes", "FP32", np.zeros((2, 0, 4))),
        tensor("scores", "FP32", np.zeros((2, 0))),
        raw("classes", "BYTES", np.zeros((2, 0), dtype=object)),
    )
    tiles = detections(body, length)
    assert [t.boxes.shape for t in tiles] == [(0, 4), (0, 4)]


def test_the_conversion_is_the_shared_one():
    got = to_tile_pixels(as_format("yxyx_normalized")[0], "yxyx_normalized", *SIZES[0])
    np.testing.assert_allclose(got, PIXELS[0], atol=1e-9)
    with pytest.raises(ValueError, match="box format"):
        to_tile_pixels(PIXELS[0], "cxcywh", 1, 1)


GOOD = [
    tensor("boxes", "FP32", as_format("yxyx_normalized")),
    tensor("scores", "FP32", SCORES),
    tensor("classes", "BYTES", [["eos"] * 3] * 2),
]


def replace(name: str, row) -> list:
    return [row if r["name"] == name else r for r in GOOD]


def claimed(name: str, datatype: str, shape: list, size: int, data: bytes) -> tuple[dict, bytes]:
    """A binary output whose header claims ``size`` bytes of ``shape``, whatever ``data`` is."""
    row = {"name": name, "datatype": datatype, "shape": shape}
    return {**row, "parameters": {"binary_data_size": size}}, data


def shaped(row_data: tuple[dict, bytes], shape: list) -> tuple[dict, bytes]:
    """The binary output with its header's shape changed, its data as it was."""
    row, data = row_data
    return {**row, "shape": shape}, data


def cut(body_length: tuple[bytes, int | None], drop: int) -> tuple[bytes, int | None]:
    return body_length[0][:-drop], body_length[1]


BAD_ANSWERS = {
    "not json": (b"<html>502</html>", None),
    "no outputs": (b'{"model_name": "m"}', None),
    "outputs not a list": (b'{"outputs": {"boxes": []}}', None),
    "an output is not an object": answer("boxes"),
    "no boxes": answer(*GOOD[1:]),
    "no scores": answer(GOOD[0], GOOD[2]),
    "no classes": answer(*GOOD[:2]),
    "the same output twice": answer(*GOOD, GOOD[1]),
    "a batch of one for two": answer(*replace("boxes", tensor("boxes", "FP32", [PIXELS[0]]))),
    "boxes of three numbers": answer(*replace("boxes", tensor("boxes", "FP32", PIXELS[:, :, :3]))),
    "boxes without a batch": answer(*replace("boxes", tensor("boxes", "FP32", PIXELS[0]))),
    "scores of another k": answer(*replace("scores", tensor("scores", "FP32", [[1, 2], [3, 4]]))),
    "classes of another k": answer(*replace("classes", tensor("classes", "FP32", [[1], [1]]))),
    "classes as booleans": answer(*replace("classes", tensor("classes", "BOOL", [[True] * 3] * 2))),
    "text scores": answer(*replace("scores", tensor("scores", "BYTES", [["a"] * 3] * 2))),
    "strings in FP32 data": answer(
        *replace("scores", {**GOOD[1], "data": ["0.9", "0.8", "0.1", "0.7", "0.6", "0.0"]})
    ),
    "nulls in the data": answer(*replace("scores", {**GOOD[1], "data": [None] * 6})),
    "ragged data": answer(*replace("scores", {**GOOD[1], "data": [[0.9, 0.8, 0.1], [0.7]]})),
    "fewer elements than its shape": answer(*replace("scores", {**GOOD[1], "data": [0.9] * 5})),
    "data that is not a list": answer(*replace("scores", {**GOOD[1], "data": "0.9"})),
    "no shape": answer(*replace("scores", {**GOOD[1], "shape": None})),
    "a negative dimension": answer(*replace("scores", {**GOOD[1], "shape": [-2, -3]})),
    "no datatype": answer(*replace("scores", {**GOOD[1], "datatype": None})),
    "an unknown datatype": answer(*replace("scores", {**GOOD[1], "datatype": "FP128"})),
    "parameters not an object": answer(*replace("scores", {**GOOD[1], "parameters": [1]})),
    "NaN in binary boxes": answer(
        *GOOD[1:], raw("boxes", "FP32", np.full((2, 3, 4), np.nan), np.float32)
    ),
    "infinite binary scores": answer(
        GOOD[0], GOOD[2], raw("scores", "FP64", [[np.inf, 0, 0], [0, 0, 0]], np.float64)
    ),
    "a NaN num_detections": answer(*GOOD, raw("num_detections", "FP32", [np.nan, 1], np.float32)),
    "num_detections of another batch": answer(*GOOD, tensor("num_detections", "FP32", [1])),
    "text num_detections": answer(*GOOD, tensor("num_detections", "BYTES", ["1", "2"])),
    "binary data cut short": cut(answer(*GOOD[1:], raw("boxes", "FP32", PIXELS, np.float32)), 1),
    "bytes after the binary data": (lambda b: (b[0] + b"\x00", b[1]))(
        answer(*GOOD[1:], raw("boxes", "FP32", PIXELS, np.float32))
    ),
    "binary data of the wrong size for its shape": answer(
        *GOOD[1:],
        shaped(raw("boxes", "FP32", np.zeros((2, 3, 5)), np.float32), [2, 3, 4]),
    ),
    "a BYTES element cut in its length": answer(
        *GOOD[:2], claimed("classes", "BYTES", [2, 3], 2, b"\x03\x00")
    ),
    "a BYTES element past its data": answer(
        *GOOD[:2], claimed("classes", "BYTES", [2, 3], 6, b"\x09\x00\x00\x00ab")
    ),
    "too few BYTES elements": answer(
        *GOOD[:2],
        shaped(raw("classes", "BYTES", [[b"eos", b"eos"], [b"eos", b"eos"]]), [2, 3]),
    ),
    "text that is not UTF-8": answer(*GOOD[:2], raw("classes", "BYTES", [[b"\xff"] * 3] * 2)),
    "a BOOL of 2": answer(*GOOD[:2], claimed("classes", "BOOL", [2, 3], 6, b"\x02" * 6)),
    "a binary size past the end": answer(
        *GOOD[1:], claimed("boxes", "FP32", [2, 3, 4], 10**6, b"\x00" * 96)
    ),
    "a negative binary size": answer(
        *GOOD[1:], claimed("boxes", "FP32", [2, 3, 4], -96, b"\x00" * 96)
    ),
    "binary data without a header length": (
        answer(*GOOD[1:], raw("boxes", "FP32", np.zeros((2, 0, 4)), np.float32))[0],
        None,
    ),
    "a header length past the body": (answer(*GOOD)[0], 10**6),
    "a header length of zero": (answer(*GOOD)[0], 0),
}


@pytest.mark.parametrize("name", list(BAD_ANSWERS))
def test_garbage_is_a_502_with_a_message(name):
    body, length = BAD_ANSWERS[name]
    with pytest.raises(BackendBadResponse, match="the model answered") as info:
        detections(body, length)
    assert info.value.status == 502


def test_a_text_header_length_is_refused_too():
    body, _ = answer(*GOOD)
    with pytest.raises(BackendBadResponse):
        detections(body, "12")  # type: ignore[arg-type]


def test_a_wrong_box_format_or_tile_count_is_a_programming_error():
    body, length = answer(*GOOD)
    with pytest.raises(ValueError, match="box format"):
        detections(body, length, "yxyx")
    with pytest.raises(ValueError, match="tile sizes"):
        v2.parse_detections(
            body, length, 3, SIZES, LabelTable([]),
            boxes="boxes", scores="scores", classes=None, box_format="xyxy_pixels",
        )  # fmt: skip


# -- classifications -----------------------------------------------------------------------


def classify(body, length, labels=(), label_output="labels", expected=2):
    return v2.parse_classifications(
        body, length, expected, labels, scores="scores", label_output=label_output
    )


def test_a_classifier_that_names_its_scores_is_believed():
    body, length = answer(
        tensor("scores", "FP32", [[0.2, 0.8], [0.6, 0.4]]),
        raw("labels", "BYTES", [[b"a", b"b"], [b"a", b"b"]]),
    )
    got = classify(body, length, labels=("x", "y"))
    assert [(c.labels, c.scores) for c in got] == [
        (("a", "b"), (0.2, 0.8)),
        (("a", "b"), (0.6, 0.4)),
    ]


def test_a_vocabulary_of_labels_or_class_numbers_names_every_image():
    body, length = answer(
        tensor("scores", "FP64", [[0.2, 0.8], [0.6, 0.4]]), tensor("labels", "INT32", [3, 7])
    )
    assert [c.labels for c in classify(body, length)] == [("3", "7"), ("3", "7")]


def test_configured_labels_name_a_scores_only_model():
    body, length = answer(tensor("scores", "FP32", [[1, 0], [0, 1]]))
    assert classify(body, length, labels=("p", "q"), label_output=None)[1].labels == ("p", "q")
    assert classify(body, length, labels=("p", "q"))[0].labels == ("p", "q")  # not answered
    with pytest.raises(BackendBadResponse, match="without labels"):
        classify(body, length, labels=("p",), label_output=None)


@pytest.mark.parametrize(
    "rows",
    [
        [],
        [tensor("scores", "FP32", [[0.5, 0.5]])],
        [tensor("scores", "FP32", [0.5, 0.5])],
        [tensor("scores", "FP32", np.zeros((2, 0)))],
        [tensor("scores", "BYTES", [["a"], ["b"]])],
        [raw("scores", "FP32", [[np.nan], [0.5]], np.float32)],
        [tensor("scores", "FP32", [[0.5], [0.5]]), tensor("labels", "BYTES", [["a", "b"]] * 2)],
        [tensor("scores", "FP32", [[0.5], [0.5]]), tensor("labels", "FP32", [[0.5], [1]])],
        [tensor("scores", "FP32", [[0.5], [0.5]]), tensor("labels", "BOOL", [[True], [False]])],
    ],
)
def test_a_classifier_s_garbage_is_a_502(rows):
    body, length = answer(*rows)
    with pytest.raises(BackendBadResponse):
        classify(body, length, labels=("only",))


# -- errors, readiness, metadata -----------------------------------------------------------


def test_error_texts():
    assert v2.error_message(b'{"error": "unexpected  inference\\n output"}') == (
        "unexpected inference output"
    )
    detail = {"detail": [{"loc": ["body"], "msg": "Field required"}, {"msg": "bad"}]}
    assert v2.error_message(json.dumps(detail).encode()) == "Field required; bad"
    assert v2.error_message(b'{"detail": "Not Found"}') == "Not Found"
    assert v2.error_message(b"<html>oops</html>") == "<html>oops</html>"
    assert v2.error_message(b"\xff" * 1000) == "\ufffd" * 200


def test_readiness_is_the_status_alone():
    assert v2.model_ready(200)
    assert not any(v2.model_ready(s) for s in (400, 404, 500, 503))


def test_metadata_is_read_strictly():
    doc = {
        "name": "eos",
        "versions": ["1", 2],
        "platform": "tensorflow_savedmodel",
        "inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "detection_boxes", "datatype": "FP32", "shape": [-1, 100, 4]}],
    }
    got = v2.parse_metadata(json.dumps(doc).encode())
    assert got == {**doc, "versions": ["1", "2"]}
    kserve = {"name": "eos", "versions": None, "platform": "", "inputs": [], "outputs": []}
    assert v2.parse_metadata(json.dumps(kserve).encode())["versions"] == []


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"versions": ["1"]}',
        b'{"name": "m", "versions": "1"}',
        b'{"name": "m", "platform": 3}',
        b'{"name": "m", "inputs": {}}',
        b'{"name": "m", "outputs": [{"name": "o", "datatype": "FP32"}]}',
        b'{"name": "m", "outputs": [{"name": "o", "datatype": "FP32", "shape": [-2]}]}',
        b'{"name": "m", "outputs": ["o"]}',
    ],
)
def test_bad_metadata_is_a_502(body):
    with pytest.raises(BackendBadResponse):
        v2.parse_metadata(body)


# -- anything at all -----------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=30,
)
OUTPUT = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["boxes", "scores", "classes", "num_detections", "other"]),
        "datatype": st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "FP16", "BF16"]),
        "shape": st.lists(st.integers(-1, 4), max_size=4),
    },
    optional={
        "data": JSON,
        "parameters": st.none() | st.fixed_dictionaries({"binary_data_size": st.integers(-2, 64)}),
    },
)


@given(st.lists(OUTPUT, max_size=5), st.binary(max_size=64), st.none() | st.integers(-5, 600))
def test_any_answer_is_detections_or_a_502(outputs, tail, length):
    body = json.dumps({"outputs": outputs}).encode() + tail
    for parse in (detections, lambda b, n: classify(b, n, labels=("a",))):
        try:
            parse(body, length)
        except BackendBadResponse:
            pass


@given(st.binary(max_size=200), st.none() | st.integers(-5, 300))
def test_any_bytes_are_a_502(body, length):
    with pytest.raises(BackendBadResponse):
        detections(body, length)
