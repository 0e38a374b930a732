"""The V2 codec against a real V2 server (KServe's ModelServer hosting the project's
detector and classifier): the same tiles answered over the Open Inference Protocol, in
each box layout, and over TF Serving's protocol give the same detections."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from helpers import SAMPLE_SLIDE, b64
from PIL import Image
from procs import start_model_server

from gateway.backends import tfserving_wire, v2_wire
from gateway.errors import BackendBadResponse
from gateway.jsonio import b64encode

pytestmark = pytest.mark.process

# (left, top, right, bottom) of the sample slide: tiles of two sizes, cells in each
CROPS = [(0, 0, 960, 720), (320, 240, 960, 720), (640, 480, 1280, 960)]


@pytest.fixture(scope="module")
def tiles() -> list[bytes]:
    slide = Image.open(SAMPLE_SLIDE)
    out = []
    for crop in CROPS:
        buf = io.BytesIO()
        slide.crop(crop).save(buf, "JPEG", quality=95)
        out.append(buf.getvalue())
    return out


SIZES = [(r - left, b - top) for left, top, r, b in CROPS]

LAYOUTS = {
    "yxyx_normalized": [],  # the defaults: TF's names and layout
    "xyxy_pixels": ["--v2-box-format", "xyxy_pixels", "--v2-outputs", "boxes=b,scores=s,classes=c"],
}
NAMES = {
    "yxyx_normalized": ("detection_boxes", "detection_scores", "detection_classes_as_text"),
    "xyxy_pixels": ("b", "s", "c"),
}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def detector(request, tmp_path_factory):
    control = tmp_path_factory.mktemp("control") / "control.json"
    control.write_text("{}")
    server = start_model_server(control_file=control, extra=LAYOUTS[request.param])
    server.control = control
    yield request.param, server
    server.stop()


def v1_detections(url: str, tiles: list[bytes], table: tfserving_wire.LabelTable):
    body = tfserving_wire.backend_request([b64encode(t) for t in tiles], ["k"] * len(tiles))
    resp = requests.post(
        url + "/v1/models/eos:predict",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    return tfserving_wire.parse_backend_predictions(resp.content, len(tiles), SIZES, table)


def v2_post(url: str, tiles: list[bytes], mode: str, outputs, binary_outputs: bool = False):
    body, headers = v2_wire.infer_request(
        tiles,
        input_name="image_bytes",
        bytes_mode=mode,
        outputs=outputs,
        request_id="req-1",
        binary_outputs=binary_outputs,
    )
    return requests.post(url + "/v2/models/eos/infer", data=body, headers=headers, timeout=60)


def header_length(resp: requests.Response) -> int | None:
    value = resp.headers.get(v2_wire.HEADER_LENGTH)
    return int(value) if value is not None else None


@pytest.mark.parametrize("binary_outputs", [False, True])
def test_v2_detections_match_the_tf_serving_route(detector, tiles, binary_outputs):
    layout, server = detector
    boxes, scores, classes = NAMES[layout]
    reference = v1_detections(server.url, tiles, tfserving_wire.LabelTable(["eos"]))
    resp = v2_post(
        server.url, tiles, "base64", [boxes, scores, classes, "num_detections"], binary_outputs
    )
    assert resp.status_code == 200, resp.text
    assert (header_length(resp) is not None) == binary_outputs
    table = tfserving_wire.LabelTable(["eos"])
    got = v2_wire.parse_detections(
        resp.content,
        header_length(resp),
        len(tiles),
        SIZES,
        table,
        boxes=boxes,
        scores=scores,
        classes=classes,
        box_format=layout,
    )
    assert sum(len(t.scores) for t in reference) > 10  # the tiles hold cells
    for ref, tile in zip(reference, got, strict=True):
        assert len(tile.scores) == len(ref.scores)
        # six decimals of a normalized box, and float32 on the way
        np.testing.assert_allclose(tile.boxes, ref.boxes, rtol=0, atol=0.01)
        np.testing.assert_allclose(tile.scores, ref.scores, rtol=1e-6, atol=1e-6)
        assert [table.labels[c] for c in tile.classes] == ["eos"] * len(ref.scores)


def test_the_model_answers_only_the_outputs_asked_for(detector, tiles):
    layout, server = detector
    boxes, scores, _ = NAMES[layout]
    resp = v2_post(server.url, tiles[:1], "base64", [scores, boxes])
    assert [o["name"] for o in resp.json()["outputs"]] == [scores, boxes]
    assert resp.json()["id"] == "req-1"
    with pytest.raises(BackendBadResponse, match="no output"):
        v2_wire.parse_detections(
            resp.content, None, 1, SIZES[:1], tfserving_wire.LabelTable([]),
            boxes=boxes, scores=scores, classes="c2", box_format=layout,
        )  # fmt: skip


def test_a_binary_request_reaches_the_model_and_its_refusal_reads(detector):
    """KServe 0.21 turns binary BYTES into text, so the model refuses them; what matters
    here is that the framing (content type, header length) gets the request to it."""
    _, server = detector
    resp = v2_post(server.url, [b"not an image"], "binary", [])
    assert resp.status_code == 400
    assert "base64" in v2_wire.error_message(resp.content)


def test_metadata_and_readiness(detector):
    layout, server = detector
    meta = v2_wire.parse_metadata(requests.get(server.url + "/v2/models/eos", timeout=10).content)
    assert meta["name"] == "eos"
    assert meta["inputs"] == [{"name": "image_bytes", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in meta["outputs"]] == [*NAMES[layout], "num_detections"]
    assert v2_wire.model_ready(
        requests.get(server.url + "/v2/models/eos/ready", timeout=10).status_code
    )
    missing = requests.get(server.url + "/v2/models/other/ready", timeout=10)
    assert not v2_wire.model_ready(missing.status_code)
    assert "other" in v2_wire.error_message(missing.content)


def test_v2_classifications_match_the_tf_serving_route(tiles):
    server = start_model_server(model="eos", extra=["--kind", "classification"])
    try:
        body = {"instances": [{"image_bytes": {"b64": b64(t)}, "key": "k"} for t in tiles]}
        v1 = requests.post(server.url + "/v1/models/eos:predict", json=body, timeout=60)
        reference = tfserving_wire.parse_classifications(v1.content, len(tiles), ())
        for label_output, labels in (("labels", ()), (None, ("eosinophils", "none"))):
            outputs = ["scores"] + ([label_output] if label_output else [])
            resp = v2_post(server.url, tiles, "base64", outputs)
            assert resp.status_code == 200, resp.text
            got = v2_wire.parse_classifications(
                resp.content, None, len(tiles), labels, scores="scores", label_output=label_output
            )
            for ref, c in zip(reference, got, strict=True):
                assert c.labels == ref.labels
                np.testing.assert_allclose(c.scores, ref.scores, rtol=1e-6)
    finally:
        server.stop()


def test_a_model_answering_garbage_is_a_502(detector, tiles):
    layout, server = detector
    boxes, scores, classes = NAMES[layout]
    server.control.write_text('{"garbage": true}')
    try:
        resp = v2_post(server.url, tiles[:1], "base64", [boxes, scores, classes])
    finally:
        server.control.write_text("{}")
    assert resp.status_code == 200, resp.text
    with pytest.raises(BackendBadResponse) as info:
        v2_wire.parse_detections(
            resp.content, None, 1, SIZES[:1], tfserving_wire.LabelTable([]),
            boxes=boxes, scores=scores, classes=classes, box_format=layout,
        )  # fmt: skip
    assert info.value.status == 502
