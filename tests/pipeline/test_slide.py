"""Slides for a remote model are made band by band: the bands hold every tile once, in
order, and tiles cropped from the decoded image are the very bytes of the decoded
pixels' own encoding (no profile or gamma of the source carried), with a JPEG source's
own quantization tables and chroma sampling."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import jpeg, png, real_photo
from PIL import Image, JpegImagePlugin

from gateway.pipeline import jpegcut, slide
from gateway.pipeline.images import decode, decode_image
from gateway.pipeline.tiles import JPEG_QUALITY, encoded_tiles, jpeg_settings
from gateway.pipeline.tiling import plan_tiles

MAX_PIXELS = 40_000_000


@pytest.mark.parametrize(
    "make",
    [
        lambda: real_photo("real-slide-1920x1440.jpg").read_bytes(),
        lambda: png(np.random.default_rng(1).integers(0, 255, (800, 1100, 3), dtype=np.uint8)),
        # A profile and a gamma in the source must not reach the tiles.
        lambda: png(
            np.random.default_rng(2).integers(0, 255, (700, 900, 3), dtype=np.uint8),
            icc_profile=b"not really a profile",
        ),
    ],
    ids=["jpeg", "png", "png-with-profile"],
)
def test_cropped_tiles_are_the_array_tiles(make):
    data = make()
    info, img = decode_image(data, MAX_PIXELS)
    rgb = decode(data, MAX_PIXELS).rgb
    tiles = plan_tiles(info.width, info.height, 480, 360, 64, align=16)
    made = encoded_tiles(img, tiles)
    assert [t.index for t in made] == [t.index for t in tiles]
    source = Image.open(io.BytesIO(data))
    if source.format == "JPEG":  # the slide's own tables and 4:2:0, as the lossless cut keeps
        assert JpegImagePlugin.get_sampling(source) == 2
        settings = {"qtables": source.quantization, "subsampling": 2}
    else:
        settings = {"quality": JPEG_QUALITY, "subsampling": 0}
    for t, m in zip(tiles, made, strict=True):
        assert (m.width, m.height) == (t.width, t.height)
        expected = io.BytesIO()  # straight through Pillow: a quality would rescale the tables
        Image.fromarray(rgb[t.y0 : t.y1, t.x0 : t.x1]).save(expected, "JPEG", **settings)
        assert m.encoded == expected.getvalue()
        tile = Image.open(io.BytesIO(m.encoded))
        if source.format == "JPEG":
            assert tile.quantization == source.quantization


def _sampling_of_tiles(data: bytes) -> int:
    info, img = decode_image(data, MAX_PIXELS)
    made = encoded_tiles(img, plan_tiles(info.width, info.height, 480, 360, 64, align=16))
    return JpegImagePlugin.get_sampling(Image.open(io.BytesIO(made[0].encoded)))


def test_tiles_of_other_jpegs_are_quality_95_at_full_chroma():
    rgb = np.random.default_rng(3).integers(0, 255, (600, 800, 3), dtype=np.uint8)
    # 4:2:2 halves one axis only: after an EXIF rotation it would be the wrong one
    assert _sampling_of_tiles(jpeg(rgb, 80, subsampling=1)) == 0
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the decoded image is a new one, not the file's
    assert _sampling_of_tiles(jpeg(rgb, 80, subsampling=2, exif=exif.tobytes())) == 0
    assert _sampling_of_tiles(jpeg(rgb, 80, subsampling=2)) == 2
    assert jpeg_settings(Image.fromarray(rgb)) == {"quality": JPEG_QUALITY, "subsampling": 0}


@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("size", [(960, 720), (1920, 1440), (3196, 1737), (4000, 3000)])
def test_bands_hold_every_tile_once_in_order(size, split):
    w, h = size
    tiles = plan_tiles(w, h, 960, 720, 64, align=16)
    bands, parallel = slide._bands(tiles, w * h, split)
    assert [t for band in bands for t in band] == tiles
    for band in bands:  # whole tile rows only
        rows = {t.y0 for t in band}
        assert all(
            sum(1 for t in tiles if t.y0 == y) == sum(1 for t in band if t.y0 == y) for y in rows
        )
    if w * h > slide.PARALLEL_CUT_MAX_PIXELS:
        assert not parallel and len(bands) == len({t.y0 for t in tiles})
    elif split:
        assert len(bands) <= 2 and parallel == (len(bands) == 2)
    else:
        assert len(bands) == 1 and not parallel


def test_big_444_jpeg_is_decoded_not_cut():
    rgb = np.random.default_rng(3).integers(0, 255, (2600, 2600, 3), dtype=np.uint8)
    for subsampling, cut in ((0, False), (2, True)):
        data = jpeg(rgb, quality=90, subsampling=subsampling)
        info, _ = decode_image(data, MAX_PIXELS)
        assert jpegcut.coefficient_bytes_per_pixel(data) == (6.0 if subsampling == 0 else 3.0)
        assert slide.cuts_losslessly(data, info) == cut


class _Consumer:
    """A remote detector that takes bands until the stream ends or raises."""

    wants_encoded = True

    def __init__(self) -> None:
        self.bands = 0

    def predict(self, tiles, deadline, slide_pixels=None):
        for _ in tiles:
            self.bands += 1
        raise AssertionError("the stream should have stopped at the deadline")


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_a_deadline_passed_while_making_tiles_stops_the_next_band(fmt, monkeypatch):
    """The request's deadline is checked before each band is cut or encoded."""
    import time

    from gateway.errors import BackendTimeout
    from gateway.pipeline.images import probe
    from gateway.pipeline.tiling import TileSize

    rgb = np.random.default_rng(4).integers(0, 255, (2000, 2000, 3), dtype=np.uint8)
    data = jpeg(rgb, quality=80) if fmt == "jpeg" else png(rgb)
    info = probe(data, MAX_PIXELS)
    deadline = time.monotonic() + 30
    real_time_left = slide.time_left
    calls = []

    def time_left(until, before):
        calls.append(before)
        if len(calls) > 2:  # the request's time runs out once the first band is made
            until = time.monotonic() - 1
        return real_time_left(until, before)

    monkeypatch.setattr(slide, "time_left", time_left)
    monkeypatch.setattr(slide, "PARALLEL_CUT_MAX_PIXELS", 1)  # one band a tile row
    backend = _Consumer()
    with pytest.raises(BackendTimeout) as info_:
        slide.detect_slide(data, info, TileSize(960, 720, 64), backend, deadline, MAX_PIXELS)
    assert backend.bands == 1
    assert "timeout_s" in info_.value.message
