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
import json
import platform
import sys
import time
import urllib.request

import numpy as np
import pytest
from helpers import jpeg, png, real_photo
from hidden_libs import without_library
from PIL import Image
from process_guard import process_fixture
from procs import start_gateway, start_model_server
from synthetic import make_slide, random_cells

from gateway.backends.base import TileInput
from gateway.backends.tfserving import TFServingBackend
from gateway.config import BackendConfig, ServiceConfig
from gateway.detector import estimate_cell_diameter
from gateway.errors import UndecodableImage
from gateway.pipeline import jpegcut
from gateway.pipeline import merge as merging
from gateway.pipeline.images import decode, probe
from gateway.pipeline.slide import cuts_losslessly, detect_slide, lossless_tiles, tiles_for
from gateway.pipeline.tiling import TileSize

MAX_PIXELS = 40_000_000
# requirements.txt pins the turbojpeg wheel (a libturbojpeg of its own) where wheels exist.
WHEEL_PINNED = platform.machine() == "x86_64" and sys.version_info < (3, 14)
THRESHOLD = 0.3


@process_fixture(scope="module")
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
    tiles = tiles_for(TileSize(), image.width, image.height)
    inputs = []
    for t in tiles:
        encoded = png(image.rgb[t.y0 : t.y1, t.x0 : t.x1])
        inputs.append(TileInput(t.index, t.width, t.height, encoded=encoded))
    result = be.predict([inputs], time.monotonic() + 120)
    merged = merging.merge(tiles, result.tiles, image.width, image.height)
    return merging.above(merged, THRESHOLD)


def run(data: bytes, backend, lossless: bool) -> merging.Merged:
    service, be = backend
    deadline = time.monotonic() + 120
    info = probe(data, MAX_PIXELS)
    result = detect_slide(data, info, TileSize(), be, deadline, MAX_PIXELS, lossless=lossless)
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
    if not cuts_losslessly(data, info):
        return False
    return lossless_tiles(data, tiles_for(TileSize(), info.width, info.height)) is not None


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
    tiles = tiles_for(TileSize(), 1920, 1440)
    inputs = lossless_tiles(data, tiles)
    assert inputs is not None and len(inputs) == len(tiles) > 1
    for t, inp in zip(tiles, inputs, strict=True):
        tile = np.asarray(Image.open(io.BytesIO(inp.encoded)).convert("RGB")).astype(int)
        assert tile.shape == (t.height, t.width, 3)
        diff = np.abs(tile - full[t.y0 : t.y1, t.x0 : t.x1])
        assert np.median(diff) == 0
        assert (diff > 2).mean() < 0.001


def test_declines_what_it_cannot_cut_exactly():
    service = ServiceConfig(name="eos")
    rgb, _ = synthetic(1024, 768, 6, 5)
    progressive = jpeg(rgb, quality=90, progressive=True)
    assert not uses_fast_path(progressive, service)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the tiles of the stored pixels are not the oriented slide's
    rotated = jpeg(rgb, quality=90, exif=exif.tobytes())
    assert not uses_fast_path(rotated, service)
    gray = jpeg(rgb[:, :, 0].copy(), quality=90)
    assert not uses_fast_path(gray, service)
    assert not uses_fast_path(jpeg(Image.fromarray(rgb).convert("CMYK"), quality=90), service)
    assert not uses_fast_path(png(rgb), service)
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
    monkeypatch.setattr(jpegcut, "_source", None)
    monkeypatch.setattr(jpegcut, "_lib_tried", True)
    assert not jpegcut.available()
    assert jpegcut.image_path() == "decode and re-encode (no libturbojpeg found)"
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


def test_every_library_source_cuts_the_same_bytes(monkeypatch):
    """The system's library and the one bundled in the pinned wheel give identical tiles."""
    sources = jpegcut.candidates()
    if WHEEL_PINNED:
        assert any(name.startswith("turbojpeg wheel") for name, _ in sources)
    data = real_photo("real-slide-1920x1440.jpg").read_bytes()
    boxes = [(0, 0, 960, 720), (832, 0, 1920, 720), (0, 592, 960, 1440), (1904, 1424, 1920, 1440)]
    cuts = {}
    for name, path in sources:
        lib = jpegcut.open_library(path)
        if lib is None:
            assert name.startswith("system"), f"{name} does not load"
            continue
        monkeypatch.setattr(jpegcut, "_lib", lib)
        monkeypatch.setattr(jpegcut, "_source", name)
        monkeypatch.setattr(jpegcut, "_lib_tried", True)
        assert jpegcut.image_path() == f"lossless JPEG cut: {name}"
        cuts[name] = jpegcut.cut(data, boxes)
        assert cuts[name] is not None and len(cuts[name]) == len(boxes)
    assert cuts
    first = next(iter(cuts.values()))
    assert all(tiles == first for tiles in cuts.values())
    for tile, (x0, y0, x1, y1) in zip(first, boxes, strict=True):
        assert Image.open(io.BytesIO(tile)).size == (x1 - x0, y1 - y0)


def test_the_image_path_is_logged_once_per_process(monkeypatch):
    from gateway import logs

    out = io.StringIO()
    monkeypatch.setattr(jpegcut, "_lib_tried", False)
    monkeypatch.setattr(jpegcut, "_lib", None)
    monkeypatch.setattr(jpegcut, "_source", None)
    logs.configure(stream=out)
    try:
        for _ in range(3):
            assert jpegcut.available() == jpegcut.image_path().startswith("lossless")
    finally:
        logs.configure()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["image_path"] for line in lines] == [jpegcut.image_path()]
    assert lines[0]["message"] == f"image path: {jpegcut.image_path()}"


def readyz_image_path(proc) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/readyz", timeout=30) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as e:  # 503 when a backend is down: the field is there too
        body = json.loads(e.read())
    return body["image_path"]


@pytest.mark.process
def test_the_gateway_cuts_losslessly_without_the_system_library():
    """The gateway as a machine without libturbojpeg0 runs it: the pinned wheel's library.

    (The system library is covered in a private mount namespace, see tests/hidden_libs.py.)
    Each process logs the path it takes once, at start, and ``/readyz`` shows it.
    """
    plain = start_gateway()
    hidden = start_gateway(start=False)
    hidden.argv = without_library(hidden.argv, jpegcut.SYSTEM_LIBRARY)
    hidden.start()
    try:
        logged = [image_paths_logged(proc) for proc in (plain, hidden)]
        shown = readyz_image_path(plain)
        assert shown == jpegcut.image_path()
        assert shown.startswith("lossless JPEG cut: ")
        without = readyz_image_path(hidden)
        if WHEEL_PINNED:
            assert without.startswith("lossless JPEG cut: turbojpeg wheel"), without
        else:
            assert without == "decode and re-encode (no libturbojpeg found)", without
        assert image_paths_logged(plain) == [shown] and image_paths_logged(hidden) == [without]
        assert logged == [[shown], [without]]  # logged at start, before any request
    finally:
        plain.stop()
        hidden.stop()


def image_paths_logged(proc) -> list[str]:
    return [
        json.loads(line)["image_path"]
        for line in proc.log_text().splitlines()
        if line.startswith("{") and '"image_path"' in line
    ]
