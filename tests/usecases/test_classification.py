"""The classification use case without HTTP: what a classifier is sent, and what quotas count.

The model is a fake here (it records what it is given); the same paths run against real
model servers in tests/gateway/test_kinds_gateway.py.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import jpeg, png
from PIL import Image

from gateway.backends.base import Classification, ClassifyResult, ImageInput
from gateway.config import BackendConfig, Limits, ServiceConfig
from gateway.errors import GatewayError, QuotaExceeded
from gateway.kinds import get as kind_of
from gateway.kinds.classification import ClassificationOptions
from gateway.pipeline import whole
from gateway.registry import Service
from gateway.usecases.classification import classify

URL = "http://127.0.0.1:1"


class FakeClassifier:
    def __init__(self) -> None:
        self.sent: list[ImageInput] = []

    def ensure_reachable(self, deadline: float) -> None:
        return None

    def classify(self, images, deadline: float) -> ClassifyResult:
        self.sent.extend(images)
        preds = [Classification(("a", "b"), (0.25, 0.75)) for _ in images]
        return ClassifyResult(preds, model="fake", version="7", backend_ms=1.0)


class CountingQuota:
    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def __call__(self, images: int) -> None:
        if self.used + images > self.limit:
            raise QuotaExceeded("over")
        self.used += images


def service(max_side: int | None = None, timeout_s: float = 30.0) -> tuple[Service, FakeClassifier]:
    backend = FakeClassifier()
    cfg = ServiceConfig(
        name="cls",
        kind="classification",
        backend=BackendConfig(url=URL, timeout_s=timeout_s),
        options=ClassificationOptions(labels=(), max_side=max_side),
    )
    return Service(cfg, backend, kind_of("classification")), backend


def noise_jpeg(width: int, height: int, **save) -> bytes:
    """Random pixels: nothing the classifier could take a shortcut on."""
    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return jpeg(rgb, quality=90, **save)


def run(svc: Service, images: list[bytes], quota=None):
    result = classify(svc, images, limits=Limits(), quota=quota or CountingQuota(99))
    return result.facts, result


def sent_size(inp: ImageInput) -> tuple[int, int]:
    return Image.open(io.BytesIO(inp.encoded)).size


def test_an_upright_jpeg_that_fits_is_sent_as_submitted():
    svc, backend = service(max_side=1000)
    data = noise_jpeg(640, 480)
    ctx, result = run(svc, [data])
    assert backend.sent[0].encoded == data
    assert result.images[0].best() == ("b", 0.75)
    assert (ctx.instances, ctx.backend_model, ctx.backend_version) == (1, "fake", "7")
    assert ctx.image == {"bytes": len(data), "width": 640, "height": 480, "format": "JPEG"}


def test_max_side_downscales_keeping_the_aspect_ratio():
    svc, backend = service(max_side=300)
    ctx, result = run(svc, [noise_jpeg(1200, 800)])
    assert sent_size(backend.sent[0]) == (300, 200)
    assert (result.images[0].info.width, result.images[0].info.height) == (1200, 800)


def test_exif_orientation_is_applied_before_sending():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    svc, backend = service()
    _, result = run(svc, [noise_jpeg(640, 480, exif=exif.tobytes())])
    assert sent_size(backend.sent[0]) == (480, 640)
    assert (result.images[0].info.width, result.images[0].info.height) == (480, 640)


def test_other_formats_are_sent_as_jpeg_whole_once():
    rgba = png(Image.new("RGBA", (500, 300), (10, 20, 30, 128)))
    svc, backend = service()
    run(svc, [rgba, noise_jpeg(64, 48)])
    assert len(backend.sent) == 2  # one payload per image: never tiled
    assert Image.open(io.BytesIO(backend.sent[0].encoded)).format == "JPEG"
    assert sent_size(backend.sent[0]) == (500, 300)


def test_every_image_is_checked_before_the_model_or_the_quota():
    svc, backend = service()
    quota = CountingQuota(99)
    with pytest.raises(GatewayError) as info:
        run(svc, [noise_jpeg(64, 48), b"not an image"], quota)
    assert (info.value.status, info.value.code) == (415, "unsupported_image")
    assert info.value.message.startswith("instance 1:")
    assert backend.sent == [] and quota.used == 0
    with pytest.raises(QuotaExceeded):
        run(svc, [noise_jpeg(64, 48)] * 3, CountingQuota(2))
    assert backend.sent == []


@pytest.mark.parametrize("cut", [2, 200, 0.5])
def test_a_truncated_jpeg_sent_as_submitted_is_422_before_the_model(cut):
    svc, backend = service(max_side=1000)
    data = noise_jpeg(640, 480)
    keep = int(len(data) * cut) if isinstance(cut, float) else len(data) - cut
    with pytest.raises(GatewayError) as info:
        run(svc, [noise_jpeg(64, 48), data[:keep]])
    assert (info.value.status, info.value.code) == (422, "undecodable_image")
    assert info.value.message.startswith("instance 1:")
    assert backend.sent == []


def test_a_request_past_its_deadline_is_504_before_the_model(monkeypatch):
    import time

    svc, backend = service(timeout_s=0.05)
    made = whole.whole_image

    def slow(*args):  # the first image's preparation uses up the request's time
        out = made(*args)
        time.sleep(0.1)
        return out

    monkeypatch.setattr("gateway.usecases.classification.whole_image", slow)
    with pytest.raises(GatewayError) as info:
        run(svc, [noise_jpeg(64, 48), noise_jpeg(64, 48)])
    assert (info.value.status, info.value.code) == (504, "backend_timeout")
    assert backend.sent == []
