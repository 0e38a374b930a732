"""``tools/triton_server.py``: a real Triton Inference Server hosting the embedded
detector, called with tritonclient over HTTP with the binary tensor data extension.  The
boxes it answers are those the detector finds in-process on the same tile."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tritonclient.http as triton
from helpers import SAMPLE_SLIDE, jpeg, png
from PIL import Image
from procs import start_triton_server
from tritonclient.utils import InferenceServerException

from gateway.detector import detect
from tools import triton_server

DETECTION_OUTPUTS = (
    "detection_boxes",
    "detection_scores",
    "detection_classes",
    "detection_classes_as_text",
    "num_detections",
)


def _tile(box: tuple[int, int, int, int]) -> bytes:
    """A tile of the sample slide as the gateway sends one: JPEG bytes."""
    return jpeg(Image.open(SAMPLE_SLIDE).crop(box))


TILE = _tile((0, 0, 960, 720))
CORNER = _tile((960, 720, 1280, 960))
BLANK = png(np.full((240, 320, 3), 255, np.uint8))


def _in_process(data: bytes) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The detector's boxes (pixels, float64) and scores on the tile those bytes decode to."""
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    det = detect(rgb)
    return det.boxes.astype(np.float64), det.scores, rgb.shape[0], rgb.shape[1]


def _normalized(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    yxyx = np.stack([boxes[:, 1] / h, boxes[:, 0] / w, boxes[:, 3] / h, boxes[:, 2] / w], 1)
    return np.clip(yxyx, 0, 1)


def _infer(
    client: triton.InferenceServerClient, model: str, rows: list[bytes], outputs: tuple[str, ...]
) -> triton.InferResult:
    image_bytes = triton.InferInput("image_bytes", [len(rows), 1], "BYTES")
    image_bytes.set_data_from_numpy(np.array(rows, dtype=object).reshape(-1, 1), binary_data=True)
    wanted = [triton.InferRequestedOutput(name, binary_data=True) for name in outputs]
    return client.infer(model, [image_bytes], outputs=wanted)


def _close(got: np.ndarray, want: np.ndarray) -> None:
    """Equal within float32 rounding: the server answers float32 of the same float64s."""
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def server():
    proc = start_triton_server()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server):
    with triton.InferenceServerClient(server.url.removeprefix("http://")) as c:
        yield c


@pytest.mark.process
def test_binary_tiles_get_the_boxes_the_detector_finds_in_process(client):
    assert client.is_model_ready("eos")
    result = _infer(client, "eos", [TILE, BLANK, CORNER], DETECTION_OUTPUTS)
    # Every output came back as binary tensor data, not JSON.
    for out in result.get_response()["outputs"]:
        assert out["parameters"]["binary_data_size"] > 0, out
    boxes, scores, classes, texts, counts = (result.as_numpy(k) for k in DETECTION_OUTPUTS)
    want = [_in_process(data) for data in (TILE, BLANK, CORNER)]
    width = max(len(s) for _, s, _, _ in want)
    assert width > 0 and len(want[0][1]) != len(want[2][1])  # rows of different lengths
    assert boxes.shape == (3, width, 4) and scores.shape == texts.shape == (3, width)
    assert counts.shape == (3, 1) and boxes.dtype == scores.dtype == counts.dtype == np.float32
    for row, (want_boxes, want_scores, h, w) in enumerate(want):
        n = len(want_scores)
        assert counts[row, 0] == n
        _close(boxes[row, :n], _normalized(want_boxes, h, w))
        _close(scores[row, :n], want_scores)
        assert list(texts[row, :n]) == [b"eos"] * n and list(classes[row, :n]) == [1.0] * n
        # The rest of the row is TF's padding: zeros and empty strings.
        assert not boxes[row, n:].any() and not scores[row, n:].any()
        assert not classes[row, n:].any() and set(texts[row, n:].tolist()) <= {b""}


@pytest.mark.process
def test_a_request_without_detections_answers_one_zero_row(client):
    result = _infer(client, "eos", [BLANK], DETECTION_OUTPUTS)
    assert result.as_numpy("num_detections").tolist() == [[0.0]]
    assert result.as_numpy("detection_boxes").tolist() == [[[0.0] * 4]]
    assert result.as_numpy("detection_classes_as_text").tolist() == [[b""]]


@pytest.mark.process
def test_triton_refuses_what_the_model_does_not_declare(client):
    other = triton.InferInput("image", [1, 1], "BYTES")
    other.set_data_from_numpy(np.array([[TILE]], dtype=object), binary_data=True)
    with pytest.raises(InferenceServerException, match="unexpected inference input") as exc:
        client.infer("eos", [other])
    assert exc.value.status() == "400"
    with pytest.raises(InferenceServerException, match="batch-size must be <= 8") as exc:
        _infer(client, "eos", [TILE] * (triton_server.MAX_BATCH + 1), ("num_detections",))
    assert exc.value.status() == "400"


@pytest.mark.process
def test_a_bad_image_fails_its_own_request_only(client):
    with pytest.raises(InferenceServerException, match="cannot decode image_bytes"):
        _infer(client, "eos", [b"not an image"], ("num_detections",))
    counts = _infer(client, "eos", [TILE], ("num_detections",)).as_numpy("num_detections")
    assert counts[0, 0] == len(_in_process(TILE)[1])


@pytest.mark.process
def test_pixel_boxes_and_the_classifier_each_on_their_own_server():
    """Boxes ``[x0, y0, x1, y1]`` in pixels of the tile sent; a classification model;
    and each server stops on SIGTERM leaving no pytriton workspace behind."""
    pixels = start_triton_server(model="eos-px", extra=["--box-format", "xyxy_pixels"])
    try:
        with triton.InferenceServerClient(pixels.url.removeprefix("http://")) as c:
            result = _infer(c, "eos-px", [CORNER], ("detection_boxes", "num_detections"))
    finally:
        assert pixels.stop() == 0 and pixels.workspace_left == [], pixels.log_text()[-3000:]
    want_boxes, _, _, _ = _in_process(CORNER)
    assert result.as_numpy("num_detections")[0, 0] == len(want_boxes) > 0
    _close(result.as_numpy("detection_boxes")[0], want_boxes)

    cls = start_triton_server(model="cls", extra=["--kind", "classification"])
    try:
        with triton.InferenceServerClient(cls.url.removeprefix("http://")) as c:
            result = _infer(c, "cls", [TILE, BLANK], ("scores", "labels"))
    finally:
        assert cls.stop() == 0 and cls.workspace_left == [], cls.log_text()[-3000:]
    labels = [b"eosinophils", b"none"]
    assert result.as_numpy("labels").tolist() == [labels, labels]
    p = 1.0 - np.exp(-len(_in_process(TILE)[1]) / 2.0)
    _close(result.as_numpy("scores"), np.array([[p, 1.0 - p], [0.0, 1.0]]))


def test_rows_are_padded_to_the_longest_and_boxes_follow_the_format():
    """The same answer shaping, in-process (no server): the fast loop's check."""
    normalized = triton_server.detection_outputs([TILE, BLANK])
    pixels = triton_server.detection_outputs([TILE, BLANK], box_format="xyxy_pixels")
    want_boxes, want_scores, h, w = _in_process(TILE)
    n = len(want_scores)
    assert normalized["num_detections"].tolist() == [[n], [0]]
    assert normalized["detection_boxes"].shape == pixels["detection_boxes"].shape == (2, n, 4)
    _close(normalized["detection_boxes"][0], _normalized(want_boxes, h, w))
    _close(pixels["detection_boxes"][0], want_boxes)
    assert not normalized["detection_boxes"][1].any() and not pixels["detection_boxes"][1].any()
    assert normalized["detection_classes_as_text"][1].tolist() == [b""] * n
    with pytest.raises(ValueError, match="cannot decode image_bytes"):
        triton_server.detection_outputs([b"GIF89a broken"])
