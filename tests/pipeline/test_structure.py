"""Scans and segments counted from the bytes, before a decoder reads them."""

from __future__ import annotations

import pytest
from helpers import (
    encode,
    jpeg_scans,
    many_blocks_gif,
    many_chunks_png,
    many_scans_jpeg,
    many_segments_jpeg,
    png,
)
from PIL import Image

from gateway.errors import ImageTooComplex
from gateway.pipeline import structure
from gateway.pipeline.images import probe

LIMIT = 40_000_000


def test_a_progressive_jpeg_has_its_scans_counted():
    data = encode(Image.new("RGB", (300, 200), (9, 99, 199)), "JPEG", progressive=True)
    found = structure.count(data, 1000, 1000)
    assert found.scans == len(jpeg_scans(data)) >= 6
    assert found.segments >= 3  # tables and the frame


def test_a_baseline_jpeg_has_one_scan_and_the_next_picture_is_not_counted():
    one = encode(Image.new("RGB", (64, 48), (1, 2, 3)), "JPEG")
    assert structure.count(one, 10, 100).scans == 1
    assert structure.count(one + one, 10, 100).scans == 1  # MPO: the first picture only


def test_stuffed_bytes_and_restart_markers_are_not_scans():
    import numpy as np

    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "JPEG", quality=100)
    assert b"\xff\x00" in data
    assert structure.count(data, 10, 100).scans == 1


def test_repeated_scans_past_the_limit_are_refused_before_decoding():
    data = many_scans_jpeg(256, 256, 40)
    assert structure.count(data, 1000, 1000).scans == 40
    with pytest.raises(ImageTooComplex) as info:
        probe(data, LIMIT, max_scans=32)
    assert info.value.status == 422 and info.value.code == "image_too_complex"
    assert "limits.max_jpeg_scans" in info.value.message
    assert probe(data, LIMIT, max_scans=40).width == 256


@pytest.mark.parametrize(
    "data",
    [
        many_segments_jpeg(200),
        many_segments_jpeg(200, marker=0xE5),
        many_chunks_png(200),
        many_chunks_png(200, kind=b"IDAT"),
        many_blocks_gif(100),  # each block and its sub-block
    ],
    ids=["jpeg-com", "jpeg-app5", "png-text", "png-empty-idat", "gif-comments"],
)
def test_segments_past_the_limit_are_refused(data):
    with pytest.raises(ImageTooComplex) as info:
        probe(data, LIMIT, max_segments=100)
    assert "limits.max_image_segments" in info.value.message
    assert probe(data, LIMIT, max_segments=300).width == 64


def test_counting_stops_one_past_the_limit():
    found = structure.count(many_segments_jpeg(100_000), 32, 50)
    assert found.segments == 51


def test_plain_images_pass():
    img = Image.new("RGB", (640, 480), (10, 20, 30))
    for data in (encode(img, "JPEG"), png(img), encode(img, "JPEG", progressive=True)):
        structure.check(data, 32, 10_000)
    assert structure.count(encode(img, "WEBP"), 1, 16) == structure.Structure()
    gif = structure.count(encode(img, "GIF"), 1, 16)
    assert gif.scans == 0 and gif.segments <= 16
