"""``:detect`` answering the slide drawn: one decode, drawn in place, within the budget."""

from __future__ import annotations

import io

import flask
import pytest
from helpers import SAMPLE_SLIDE
from PIL import Image

from gateway.catalog import parse_config
from gateway.pipeline import decode_budget
from gateway.rest.app import handle
from gateway.runtime import build_gateway, current_gateway, set_gateway


@pytest.fixture(scope="module")
def client():
    before = current_gateway()
    gw = build_gateway(parse_config({"auth": {"required": False}, "usage": {"enabled": False}}))
    set_gateway(gw)
    app = flask.Flask(__name__)
    app.add_url_rule("/<path:path>", "any", lambda path: handle(flask.request), methods=["POST"])
    yield gw, app.test_client()
    set_gateway(before)


def test_the_rendered_answer_is_the_slide_with_its_count(client):
    gw, http = client
    budget = decode_budget.budget_for(gw.config.limits)
    budget.peak = 0
    data = SAMPLE_SLIDE.read_bytes()
    resp = http.post(
        "/v1/services/eos:detect",
        data=data,
        headers={"Content-Type": "image/jpeg", "Accept": "image/jpeg"},
    )
    assert resp.status_code == 200, resp.get_data()[:300]
    assert resp.mimetype == "image/jpeg"
    assert int(resp.headers["X-Detections-Count"]) == 24
    drawn = Image.open(io.BytesIO(resp.get_data()))
    assert drawn.size == Image.open(SAMPLE_SLIDE).size
    # The render's reservation holds the decode and the answer's JPEG.
    w, h = drawn.size
    assert budget.peak >= decode_budget.decoded_bytes(w, h, "RGB", decode_budget.RENDER_COPIES)
    assert budget.in_use == 0


def test_a_slide_too_large_to_render_is_413_before_detection(client):
    gw, http = client
    w, h = Image.open(SAMPLE_SLIDE).size
    once = decode_budget.decoded_bytes(w, h, "RGB") / decode_budget.MB
    limits = type(gw.config.limits)(max_decoded_mb=once * 1.5, decode_budget_mb=once * 4)
    small = build_gateway(parse_config({"auth": {"required": False}, "usage": {"enabled": False}}))
    object.__setattr__(small.config, "limits", limits)
    set_gateway(small)
    try:
        data = SAMPLE_SLIDE.read_bytes()
        headers = {"Content-Type": "image/jpeg"}
        rendered = http.post("/v1/services/eos:detect?render=jpeg", data=data, headers=headers)
        plain = http.post("/v1/services/eos:detect", data=data, headers=headers)
    finally:
        set_gateway(gw)
    assert plain.status_code == 200
    assert rendered.status_code == 413 and rendered.get_json()["code"] == "too_large_decoded"
