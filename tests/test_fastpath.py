"""The lossless JPEG tile path gives the same detections as the plain path (decode, crop,
encode), through the real KServe model server, and steps aside whenever it should.

On the real slides the reference is the plain path with the decoded tiles sent losslessly:
the plain path's own JPEG q95 re-encoding moves the embedded detector's maxima by one of
its 4-px blocks here and there (and flips one of 43 cells on the 1920x1440 slide), which
is that path's generation loss, not a property of the cut.  Synthetic slides, whose cell
count is known, are checked against both.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from helpers import jpeg, real_photo
from PIL import Image
from procs import start_model_server
from synthetic import make_slide, random_cells

from gateway.backends.base import TileInput
from gateway.backends.tfserving import TFServingBackend
from gateway.codecs import jpegcut
from gateway.config import BackendConfig, ServiceConfig
from gateway.detector import estimate_cell_diameter
from gateway.errors import UndecodableImage
from gateway.pipeline import merge as merging
from gateway.pipeline.images import decode, probe
from gateway.pipeline.slide import detect_slide_bytes, lossless_tiles, tiles_for

MAX_PIXELS = 40_000_000
THRESHOLD = 0.3


@pytest.fixture(scope="module")
def servers():
    """Model servers by cell size, started on first use.

    The embedded detector estimates the cell size of each image it gets unless told, and
    that estimate swings with noise far below JPEG quality 95 (39 vs 58 px on one tile of
    a real slide for a mean pixel difference of 0.35), which would compare the estimator,
    not the tiles.  A real model has one fixed scale, so each server is told the slide's.
    """
    running: dict[int, tuple[ServiceConfig, TFServingBackend]] = {}
    procs = []

    def get(cell_size: float) -> tuple[ServiceConfig, TFServingBackend]:
        key = round(cell_size)
        if key not in running:
            server = start_model_server(extra=["--cell-size-px", str(key)])
            procs.append(server)
            service = ServiceConfig(
                name="eos", backend=BackendConfig(url=server.url, model="eos", timeout_s=120)
            )
            running[key] = (service, TFServingBackend(service))
        return running[key]

    try:
        yield get
    finally:
        for proc in procs:
            proc.stop()


@pytest.fixture(scope="module")
def backend(servers):
    return servers(46)


def slide_cell_size(data: bytes) -> float:
    return estimate_cell_diameter(decode(data, MAX_PIXELS).rgb)


def synthetic(width: int, height: int, n: int, seed: int) -> tuple[np.ndarray, int]:
    cells = random_cells(width, height, n, diameter=46, seed=seed, min_gap=4)
    return make_slide(width, height, cells, seed=seed), len(cells)


def run_decoded_lossless(data: bytes, backend) -> merging.Merged:
    """The plain path (decode, crop) with tiles sent losslessly: the decoded slide's pixels."""
    service, be = backend
    image = decode(data, MAX_PIXELS)
    tiles = tiles_for(service, image.width, image.height)
    inputs = []
    for t in tiles:
        buf = io.BytesIO()
        Image.fromarray(image.rgb[t.y0 : t.y1, t.x0 : t.x1]).save(buf, format="PNG")
        inputs.append(TileInput(t.index, t.width, t.height, encoded=buf.getvalue()))
    result = be.predict(inputs, time.monotonic() + 120)
    merged = merging.merge(tiles, result.tiles, image.width, image.height)
    return merging.above(merged, THRESHOLD)


def run(data: bytes, backend, lossless: bool) -> merging.Merged:
    service, be = backend
    deadline = time.monotonic() + 120
    result = detect_slide_bytes(data, MAX_PIXELS, service, be, deadline, lossless=lossless)
    return merging.above(result.detections, THRESHOLD)


def assert_same_detections(fast: merging.Merged, plain: merging.Merged) -> None:
    assert len(fast) == len(plain)
    unmatched = list(range(len(plain)))
    for box in fast.boxes:
        dist = [np.abs(box - plain.boxes[j]).max() for j in unmatched]
        k = int(np.argmin(dist))
        assert dist[k] <= 2.0, (box, plain.boxes[unmatched[k]])
        unmatched.pop(k)


def uses_fast_path(data: bytes, service: ServiceConfig) -> bool:
    info = probe(data, MAX_PIXELS)
    return lossless_tiles(data, info, tiles_for(service, info.width, info.height)) is not None


@pytest.mark.parametrize(
    "name", ["real-slide-1920x1440.jpg", "real-slide-large.jpg", "real-slide.jpg"]
)
def test_real_slides_same_detections(servers, name):
    data = real_photo(name).read_bytes()
    backend = servers(slide_cell_size(data))
    assert uses_fast_path(data, backend[0])
    fast, decoded = run(data, backend, True), run_decoded_lossless(data, backend)
    assert len(decoded) > 10  # the slides have cells: the comparison means something
    assert_same_detections(fast, decoded)


@pytest.mark.parametrize(
    "width,height,subsampling,seed",
    [(1920, 1440, 2, 1), (2000, 1500, 0, 2), (960, 720, 1, 3), (2600, 1200, 2, 4)],
)
def test_synthetic_slides_same_detections(backend, width, height, subsampling, seed):
    rgb, n = synthetic(width, height, max(8, width * height // 60_000), seed)
    data = jpeg(rgb, quality=92, subsampling=subsampling)
    assert uses_fast_path(data, backend[0])
    fast, plain = run(data, backend, True), run(data, backend, False)
    assert len(fast) == len(plain) == n
    assert_same_detections(fast, run_decoded_lossless(data, backend))


def test_tiles_are_the_submitted_pixels():
    """Each lossless tile decodes to the slide's own pixels (edges differ by chroma upsampling)."""
    data = real_photo("real-slide-1920x1440.jpg").read_bytes()
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    service = ServiceConfig(name="eos")
    tiles = tiles_for(service, 1920, 1440)
    inputs = lossless_tiles(data, probe(data, MAX_PIXELS), tiles)
    assert inputs is not None and len(inputs) == len(tiles) > 1
    for t, inp in zip(tiles, inputs, strict=True):
        tile = np.asarray(Image.open(io.BytesIO(inp.encoded)).convert("RGB")).astype(int)
        assert tile.shape == (t.height, t.width, 3)
        diff = np.abs(tile - full[t.y0 : t.y1, t.x0 : t.x1])
        assert np.median(diff) == 0
        assert (diff > 2).mean() < 0.001


def test_declines_what_it_cannot_cut_exactly():
    rgb, _ = synthetic(1024, 768, 6, 5)
    service = ServiceConfig(name="eos")
    progressive = jpeg(rgb, quality=90, progressive=True)
    assert not uses_fast_path(progressive, service)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the tiles of the stored pixels are not the oriented slide's
    rotated = jpeg(rgb, quality=90, exif=exif.tobytes())
    assert not uses_fast_path(rotated, service)
    gray = jpeg(rgb[:, :, 0].copy(), quality=90)
    assert not uses_fast_path(gray, service)
    cmyk = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(cmyk, format="JPEG", quality=90)
    assert not uses_fast_path(cmyk.getvalue(), service)
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, format="PNG")
    assert not uses_fast_path(png.getvalue(), service)
    assert uses_fast_path(jpeg(rgb, quality=90), service)


def test_declined_images_still_answer(backend):
    rgb, n = synthetic(1200, 900, 6, 6)
    for data in (jpeg(rgb, quality=92, progressive=True), jpeg(rgb, quality=92)):
        assert len(run(data, backend, True)) == n


def test_broken_jpegs_are_422_on_the_fast_path(backend):
    data = real_photo("real-slide-1920x1440.jpg").read_bytes()
    assert jpegcut.cut(data[: len(data) // 2], [(0, 0, 960, 720)]) is None
    with pytest.raises(UndecodableImage):
        run(data[: len(data) // 2], backend, True)
    bad = bytearray(data)
    bad[len(bad) // 2 : len(bad) // 2 + 4000] = b"\x00" * 4000
    assert jpegcut.cut(bytes(bad), [(0, 0, 960, 720)]) is None


def test_plain_path_when_the_library_is_missing(backend, monkeypatch):
    data = real_photo("real-slide.jpg").read_bytes()
    assert uses_fast_path(data, backend[0])
    monkeypatch.setattr(jpegcut, "_lib", None)
    monkeypatch.setattr(jpegcut, "_lib_tried", True)
    assert not jpegcut.available()
    assert not uses_fast_path(data, backend[0])
    fallback, plain = run(data, backend, True), run(data, backend, False)
    assert len(plain) > 10
    np.testing.assert_array_equal(fallback.boxes, plain.boxes)
    np.testing.assert_array_equal(fallback.scores, plain.scores)


def test_unaligned_or_outside_regions_are_refused():
    data = real_photo("real-slide-1920x1440.jpg").read_bytes()
    assert jpegcut.cut(data, [(8, 0, 960, 720)]) is None  # 4:2:0: MCU is 16 px
    assert jpegcut.cut(data, [(0, 0, 1921, 720)]) is None
    assert jpegcut.cut(data, [(16, 16, 16, 720)]) is None
    assert jpegcut.cut(data, [(16, 16, 32, 32)]) is not None
