"""Hostile and unusual images against a real gateway process: 200 or the pinned 4xx, never a
5xx, boxes in the EXIF-oriented frame, and memory that stays bounded."""

from __future__ import annotations

import io

import numpy as np
import pytest
from bad_images import corpus
from helpers import encode
from loadgen import (
    RssSampler,
    detect_call,
    idle_rss_bytes,
    predict_call,
    send,
    shape_problem,
)
from PIL import Image
from process_guard import process_fixture
from procs import start_gateway
from synthetic import make_slide

from gateway.config import Limits

MiB = 1024 * 1024
# Cloud Functions' memory setting this gateway is sized for: a hostile image must not push
# the whole process group anywhere near it.
MEMORY_CEILING = 1024 * MiB

# PIL method that undoes each EXIF orientation: exif_transpose(stored) == upright.
UNDO = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # stored rotated 90 ccw; viewers turn it 270 ccw
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}

CELLS = [(120.0, 100.0, 46.0), (400.0, 90.0, 46.0), (250.0, 300.0, 46.0), (560.0, 400.0, 46.0)]


@process_fixture(scope="module")
def gateway():
    proc = start_gateway()
    yield proc
    proc.stop()


def _send_corpus(port: int) -> list[str]:
    failures = []
    for item in corpus(Limits().max_pixels):
        for make, expect in (
            (detect_call, item.expect),
            (predict_call, item.expect_json or item.expect),
        ):
            call = make(item.name, "eos", item.data, set(expect))
            out = send(port, call, timeout_s=60)
            if out.status not in expect or out.error:
                failures.append(
                    f"{item.name} via {call.path}: {out.status} {out.code} {out.error or ''}"
                    f" (expected {sorted(expect)})"
                )
    return failures


def test_corpus_gets_200_or_pinned_4xx_with_bounded_memory(gateway):
    """Two passes over the corpus: each answer as pinned, and RSS back to the same idle level."""
    with RssSampler(gateway.pid) as sampler:
        assert _send_corpus(gateway.port) == []
        after_first = idle_rss_bytes(gateway.pid)
        assert _send_corpus(gateway.port) == []
        after_second = idle_rss_bytes(gateway.pid)
    assert sampler.peak < MEMORY_CEILING, f"peak RSS {sampler.peak / MiB:.0f} MiB"
    growth = after_second - after_first
    assert growth <= max(0.10 * after_first, 20 * MiB), (
        f"idle RSS grew from {after_first / MiB:.0f} to {after_second / MiB:.0f} MiB"
    )
    assert "Traceback" not in gateway.log_text()


def _oriented(upright: np.ndarray, orientation: int) -> bytes:
    """JPEG whose stored pixels, turned as its EXIF tag says, are ``upright``."""
    img = Image.fromarray(upright)
    if orientation != 1:
        img = img.transpose(UNDO[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", quality=95, exif=exif.tobytes())


def _centres(port: int, data: bytes) -> tuple[tuple[int, int], list[tuple[float, float]]]:
    call = detect_call("oriented", "eos", data, {200})
    out = send(port, call, timeout_s=60, keep_body=True)
    assert out.status == 200 and out.error is None, (out.status, out.error)
    doc = out.body
    size = (doc["image"]["width"], doc["image"]["height"])
    centres = [
        ((d["box"][0] + d["box"][2]) / 2, (d["box"][1] + d["box"][3]) / 2)
        for d in doc["detections"]
    ]
    return size, sorted(centres)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_boxes_in_the_upright_frame(gateway, orientation):
    upright = make_slide(640, 480, CELLS, seed=11)
    data = _oriented(upright, orientation)
    stored = Image.open(io.BytesIO(data))
    assert stored.getexif().get(0x0112) == orientation
    if orientation >= 5:
        assert stored.size == (480, 640)
    size, centres = _centres(gateway.port, data)
    assert size == (640, 480)
    assert len(centres) == len(CELLS)
    for (cx, cy, _), (x, y) in zip(sorted(CELLS), centres, strict=True):
        assert abs(cx - x) <= 6 and abs(cy - y) <= 6, (orientation, (cx, cy), (x, y))


def test_answers_have_the_pinned_shapes(gateway):
    """A plain check of the checker: a good slide passes it, and so does an error body."""
    data = encode(make_slide(320, 240, CELLS[:1], seed=1), "PNG")
    for make in (detect_call, predict_call):
        out = send(gateway.port, make("ok", "eos", data, {200}), timeout_s=60)
        assert (out.status, out.error) == (200, None)
    assert shape_problem("/v1/services/eos:detect", 200, b'{"count": 1, "detections": []}')
    assert shape_problem("/x", 500, b"<html>") is not None
