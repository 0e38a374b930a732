"""Small files that decode into huge images: each image's decoded size is checked from its
header, and a process decodes at most its budget at once (others wait, then get a 503 with
Retry-After).  Multi-picture JPEGs from phones are read as their first picture."""

from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.request

import pytest
from helpers import (
    b64,
    encode,
    many_chunks_png,
    many_scans_jpeg,
    many_segments_jpeg,
    png,
    synthetic_slide,
)
from PIL import Image
from procs import free_port, start_gateway

from gateway.catalog import parse_config
from gateway.errors import GatewayError
from gateway.pipeline import decode_budget
from gateway.pipeline.decode_budget import DecodeBudget, Overloaded, decoded_bytes

MB = 1024 * 1024


def flat_png(width: int, height: int, mode: str = "L") -> bytes:
    """A few kB of PNG that decodes into width x height pixels of zeros."""
    return png(Image.new(mode, (width, height)), optimize=True)


def mpo(first: Image.Image, second: Image.Image) -> bytes:
    return encode(first, "MPO", save_all=True, append_images=[second])


def post_predict(url: str, image: bytes) -> tuple[int, dict, dict]:
    body = json.dumps({"instances": [{"b64": b64(image)}]}).encode()
    req = urllib.request.Request(
        f"{url}/v1/models/eos:predict", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


# -- the budget's accounting ---------------------------------------------------------------------


def test_decoded_size_counts_the_file_mode_and_the_rgb_copy():
    assert decoded_bytes(1000, 1000, "RGB") == 4_000_000  # Pillow pads RGB to 4 bytes
    assert decoded_bytes(1000, 1000, "L") == 5_000_000
    assert decoded_bytes(1000, 1000, "I;16") == 14_000_000  # scaled through float64
    assert decoded_bytes(1000, 1000, "RGB", copies=2) == 8_000_000


def test_budget_never_holds_more_than_its_size():
    budget = DecodeBudget(100, wait_s=0.5)
    entered = threading.Barrier(3)
    release = threading.Event()

    def hold():
        with budget.reserve(40):
            entered.wait(timeout=5)
            release.wait(timeout=5)

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    entered.wait(timeout=5)  # two hold 80 of 100: a third of 40 does not fit
    try:
        with pytest.raises(Overloaded) as info:
            with budget.reserve(40):
                pass
    finally:
        release.set()
    for t in threads:
        t.join()
    assert info.value.status == 503 and info.value.headers["Retry-After"]
    assert budget.peak <= 100 and budget.in_use == 0
    with budget.reserve(40):  # room again once the others are done
        assert budget.in_use == 40


def test_a_waiting_decode_gets_its_turn_when_room_is_freed():
    budget = DecodeBudget(100, wait_s=10)
    release = threading.Event()
    holding = threading.Event()

    def hold():
        with budget.reserve(80):
            holding.set()
            release.wait(timeout=5)

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(timeout=5)
    threading.Timer(0.3, release.set).start()
    with budget.reserve(80):
        assert budget.in_use == 80
    t.join()
    assert budget.peak == 80


def test_configuration_keys_are_checked():
    cfg = parse_config({"limits": {"max_decoded_mb": 64, "decode_budget_mb": 128}})
    assert decode_budget.settings(cfg.limits)[:2] == (64 * MB, 128 * MB)
    for bad in ({"max_decoded_mb": -1}, {"max_decoded_mb": 64, "decode_budget_mb": 32}):
        with pytest.raises(ValueError):
            decode_budget.settings(parse_config({"limits": bad}).limits)


# -- over a socket -------------------------------------------------------------------------------


@pytest.mark.process
def test_a_small_file_with_a_huge_decoded_size_is_a_413_before_decoding():
    gateway = start_gateway({"limits": {"max_decoded_mb": 64}})
    try:
        image = flat_png(6300, 6300)  # ~40 kB, 39.7 MP of zeros: 189 MB decoded
        assert len(image) < 200_000
        status, _, doc = post_predict(gateway.url, image)
    finally:
        gateway.stop()
    assert status == 413 and doc["code"] == "too_large_decoded", doc


@pytest.mark.process
def test_past_the_process_budget_requests_wait_then_get_503_with_retry_after():
    """Four 33 MP images at once with room for one: none is decoded beyond the budget;
    those that cannot wait long enough are told when to come back."""
    gateway = start_gateway(
        {"limits": {"max_decoded_mb": 200, "decode_budget_mb": 200, "decode_wait_s": 0}},
        env={"THREADS": "4"},
    )
    image = flat_png(6600, 5000)
    results: list[tuple[int, dict, dict]] = []
    try:
        threads = [
            threading.Thread(target=lambda: results.append(post_predict(gateway.url, image)))
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        gateway.stop()
    statuses = sorted(r[0] for r in results)
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    assert 503 in statuses, statuses  # four decodes of 165 MB never ran in 200 MB at once
    for status, headers, doc in results:
        if status == 503:
            assert doc["code"] == "overloaded" and int(headers["Retry-After"]) > 0


@pytest.mark.process
def test_mpo_is_read_as_its_first_picture():
    first = Image.open(io.BytesIO(synthetic_slide(640, 480, 6, 3, "JPEG")))
    second = Image.new("RGB", (640, 480), (0, 0, 0))
    gateway = start_gateway()
    try:
        status, _, doc = post_predict(gateway.url, mpo(first, second))
        _, _, plain = post_predict(gateway.url, synthetic_slide(640, 480, 6, 3, "JPEG"))
    finally:
        gateway.stop()
    assert status == 200, doc
    assert doc["predictions"][0]["num_detections"] == plain["predictions"][0]["num_detections"]


def test_overloaded_is_a_gateway_error():
    assert issubclass(Overloaded, GatewayError)


@pytest.mark.process
def test_a_truncated_image_is_a_422_while_the_model_server_is_down():
    """The image's own fault first: the caller must not retry an image that never decodes."""
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    gateway = start_gateway({"services": {"eos": {"backend": {"url": down, "timeout_s": 5}}}})
    slide = synthetic_slide(960, 720, 6, 5, "PNG")
    try:
        first, _, doc = post_predict(gateway.url, slide)
        assert first == 503 and doc["code"] == "backend_unavailable", doc  # known down now
        truncated, _, doc = post_predict(gateway.url, slide[: len(slide) * 2 // 3])
        assert truncated == 422 and doc["code"] == "undecodable_image", doc
        whole, _, doc = post_predict(gateway.url, slide)
        assert whole == 503 and doc["code"] == "backend_unavailable", doc
    finally:
        gateway.stop()


@pytest.mark.process
def test_images_that_would_cost_the_decoder_minutes_are_422_at_once():
    """Thousands of repeated scans, millions of empty segments or chunks: refused from a
    count of the bytes, by the documented limits, before any decoder reads them."""
    gateway = start_gateway({"limits": {"max_jpeg_scans": 20, "max_image_segments": 500}})
    try:
        for image, limit in (
            (many_scans_jpeg(2000, 1500, 400), "limits.max_jpeg_scans"),
            (many_segments_jpeg(200_000), "limits.max_image_segments"),
            (many_chunks_png(200_000, b"IDAT"), "limits.max_image_segments"),
        ):
            status, _, doc = post_predict(gateway.url, image)
            assert status == 422 and doc["code"] == "image_too_complex", doc
            assert limit in doc["error"]
        status, _, doc = post_predict(gateway.url, many_scans_jpeg(640, 480, 20))
        assert status == 200, doc  # at the limit: served
    finally:
        gateway.stop()


@pytest.mark.process
def test_a_passthrough_body_with_a_key_given_twice_is_400_and_charges_nothing(tmp_path):
    """TF Serving reads the first of duplicate keys, so a body of 40 instances followed by
    a decoy of one is refused rather than charged as one."""
    from procs import start_model_server

    models = start_model_server(model="echo", extra=["--kind", "echo"])
    config = {
        "services": {"echo": {"kind": "passthrough", "backend": {"url": models.url}}},
        "quotas": {"default": {"daily_images": 5}},
    }
    gateway = start_gateway(config, workdir=tmp_path)
    try:
        for body in (
            b'{"instances": [' + b",".join([b"[1]"] * 40) + b'], "instances": [[1]]}',
            b'{"inputs": {"x": [' + b",".join([b"[1]"] * 40) + b'], "x": [[1]]}}',
        ):
            req = urllib.request.Request(
                f"{gateway.url}/v1/models/echo:predict",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(req, timeout=60)
            doc = json.loads(info.value.read())
            assert info.value.code == 400 and doc["code"] == "invalid_json", doc
            assert "twice" in doc["error"]
        decoy = b'{"inputs": {"key": [1], "x": [' + b",".join([b"[1]"] * 6) + b"]}}"
        req = urllib.request.Request(
            f"{gateway.url}/v1/models/echo:predict",
            data=decoy,
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as info:  # 6 images over a quota of 5
            urllib.request.urlopen(req, timeout=60)
        assert info.value.code == 429
    finally:
        gateway.stop()
        models.stop()
