"""The detection use case without HTTP: what is checked before the model is called."""

from __future__ import annotations

import pytest
from helpers import jpeg, many_scans_jpeg
from PIL import Image

from gateway.config import BackendConfig, Limits, ServiceConfig
from gateway.errors import GatewayError
from gateway.kinds import get as kind_of
from gateway.kinds.detection import DetectionOptions
from gateway.pipeline import decode_budget
from gateway.pipeline.tiling import TileSize
from gateway.registry import Service
from gateway.usecases.detection import detect


class NeverCalled:
    wants_encoded = True

    def ensure_reachable(self, deadline: float) -> None:
        return None

    def predict(self, tiles, deadline, slide_pixels=None):
        raise AssertionError("the model must not be called")


def service() -> Service:
    cfg = ServiceConfig(
        name="eos",
        backend=BackendConfig(url="http://127.0.0.1:1"),
        options=DetectionOptions(TileSize(), 0.5, ("eos",), None),
    )
    return Service(cfg, NeverCalled(), kind_of("detection"))


def quota(images: int) -> None:
    return None


def test_a_rendered_answer_counts_its_copies_against_max_decoded_mb_before_the_model():
    """An image that fits once decoded, but not with its drawing, is 413 up front."""
    data = jpeg(Image.new("RGB", (2000, 1500), (200, 180, 210)))
    one = decode_budget.decoded_bytes(2000, 1500, "RGB") / decode_budget.MB
    limits = Limits(max_decoded_mb=one * 1.5, decode_budget_mb=one * 4)
    with pytest.raises(GatewayError) as info:
        detect(service(), [data], None, limits=limits, quota=quota, rendered=True)
    assert (info.value.status, info.value.code) == (413, "too_large_decoded")
    with pytest.raises(AssertionError, match="must not be called"):  # the JSON answer fits
        detect(service(), [data], None, limits=limits, quota=quota)


def test_a_jpeg_of_too_many_scans_is_refused_before_the_model():
    data = many_scans_jpeg(320, 240, 200)
    with pytest.raises(GatewayError) as info:
        detect(service(), [data], None, limits=Limits(), quota=quota)
    assert (info.value.status, info.value.code) == (422, "image_too_complex")
