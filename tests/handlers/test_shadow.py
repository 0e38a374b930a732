"""Variants and shadows through the gateway's one entry point, in-process: two fake
detectors that disagree in known ways (a missed cell, a shifted box, a lower score), the
variant that served named in the answer and ``X-Served-By``, the shadow invisible to the
caller, cut at ``max_wait_ms``, and its comparison stored beside the usage record."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import flask
import numpy as np
import pytest
from helpers import jpeg

from gateway import backends
from gateway.backends.base import BackendResult, OutboundProtocol, Readiness, TileDetections
from gateway.catalog import parse_config
from gateway.config import ServiceConfig
from gateway.errors import BackendTimeout, BackendUnavailable
from gateway.rest.app import handle
from gateway.runtime import build_gateway, current_gateway, set_gateway
from gateway.schema import BOOL, NUMBER, Fields, ListOf, Setting
from gateway.usage.sqlite_store import SQLiteStore

# Cells in the slide's pixels [x0, y0, x1, y1, score]; the slide is one tile.
CELLS = [
    [10, 10, 40, 40, 0.9],
    [100, 100, 130, 130, 0.8],
    [200, 50, 230, 80, 0.7],
    [300, 200, 330, 230, 0.6],
]
# The candidate misses the third cell, shifts the fourth by 20 px (IoU 1/5: no match) and
# scores the second below the service's threshold (0.3): at the threshold it counts 2 of
# the reference's 4 (plus the shifted box: 3), matching 1 box one to one.
CANDIDATE = [
    [10, 10, 40, 40, 0.9],
    [100, 100, 130, 130, 0.2],
    [320, 200, 350, 230, 0.6],
]


@dataclass(frozen=True)
class FakeOptions:
    cells: tuple[tuple[float, ...], ...]
    hold_s: float
    down: bool


class FakeDetector:
    """An in-process detector answering the same cells on every slide."""

    wants_encoded = False

    def __init__(self, service: ServiceConfig) -> None:
        self.service = service
        self.options: FakeOptions = service.backend.options

    def predict(self, tiles, deadline, slide_pixels=None) -> BackendResult:
        groups = [t for g in tiles for t in g]
        if self.options.down:
            raise BackendUnavailable("the model server is unreachable")
        until = time.monotonic() + self.options.hold_s
        while time.monotonic() < until:
            if time.monotonic() > deadline:
                raise BackendTimeout("the model did not answer in time")
            time.sleep(0.01)
        cells = np.array(self.options.cells, dtype=np.float64).reshape(-1, 5)
        out = [
            TileDetections(cells[:, :4], cells[:, 4], np.zeros(len(cells), dtype=np.int64))
            if i == 0
            else TileDetections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))
            for i, _ in enumerate(groups)
        ]
        return BackendResult(out, ("eos",), (1.0,), self.service.backend.model, "7")

    def ensure_reachable(self, deadline: float) -> None:
        return None

    def readiness(self) -> Readiness:
        return Readiness(not self.options.down, "fake", self.service.backend.model, "7")

    def pinned(self, version=None, label=None) -> FakeDetector:
        return self

    def model_status(self, version=None, label=None) -> dict:
        return {"model_version_status": []}

    def model_metadata(self, version=None, label=None) -> dict:
        return {}


def _options(values: dict[str, Any], where: str) -> FakeOptions:
    cells = tuple(tuple(float(v) for v in c) for c in values["cells"] or ())
    return FakeOptions(cells, values["hold_s"], values["down"])


FAKE = OutboundProtocol(
    name="fake",
    fields=Fields(
        {
            "cells": ListOf(ListOf(NUMBER)),
            "hold_s": Setting(NUMBER, 0.0, lo=0),
            "down": Setting(BOOL, False),
        }
    ),
    client=FakeDetector,
    roles=("detector",),
    make_options=_options,
)


@pytest.fixture(scope="module", autouse=True)
def fake_protocol() -> Iterator[None]:
    backends.register_protocol(FAKE, __name__)
    yield
    backends.unregister_protocol(FAKE.name)


def fake(cells: list, model: str, **more: Any) -> dict[str, Any]:
    url = "http://fake.invalid"  # never called: the detector runs in-process
    return {"protocol": "fake", "url": url, "model": model, "cells": cells, **more}


def config(tmp_path, shadow: dict | None = None, **variants: dict) -> dict[str, Any]:
    eos: dict[str, Any] = {
        "variants": variants
        or {
            "current": {**fake(CELLS, "eos-v1"), "weight": 1},
            "candidate": {**fake(CANDIDATE, "eos-v2"), "weight": 0},
        }
    }
    if shadow is not None:
        eos["shadow"] = shadow
    return {
        "services": {"eos": eos},
        "usage": {
            "store": "sqlite",
            "sqlite": {"path": str(tmp_path / "usage.db")},
            "spool_path": str(tmp_path / "spool.db"),
        },
    }


@pytest.fixture
def serve() -> Iterator[Any]:
    """Builds a gateway from a configuration and answers requests through it in-process."""
    before = current_gateway()
    app = flask.Flask(__name__)
    app.add_url_rule(
        "/<path:path>", "any", lambda path: handle(flask.request), methods=["GET", "POST"]
    )
    client = app.test_client()

    def start(raw: dict[str, Any]):
        gw = build_gateway(parse_config(raw))
        set_gateway(gw)
        return gw, client

    yield start
    set_gateway(before)


SLIDE = jpeg(np.full((300, 400, 3), 200, dtype=np.uint8))


def detect(client, **headers: str):
    return client.post(
        "/v1/services/eos:detect", data=SLIDE, content_type="image/jpeg", headers=headers
    )


def comparisons(tmp_path) -> list[dict[str, Any]]:
    return list(SQLiteStore(tmp_path / "usage.db").comparisons("eos"))


def usage_rows(tmp_path) -> list[dict[str, Any]]:
    return list(SQLiteStore(tmp_path / "usage.db").records())


def test_the_answer_names_the_variant_that_served(serve, tmp_path):
    gw, client = serve(config(tmp_path))
    resp = detect(client)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["count"] == 4
    assert body["model"] == {"name": "eos-v1", "version": "7", "variant": "current"}
    assert resp.headers["X-Served-By"] == "current; model=eos-v1; version=7"
    (row,) = usage_rows(tmp_path)
    assert row["variant"] == "current"
    assert row["shadow"]["status"] is None


def test_a_service_without_variants_is_served_by_its_default(serve, tmp_path):
    raw = config(tmp_path)
    raw["services"] = {"eos": {"backend": fake(CELLS, "eos")}}
    gw, client = serve(raw)
    resp = detect(client)
    assert resp.get_json()["model"]["variant"] == "default"
    assert resp.headers["X-Served-By"].startswith("default; model=eos")


def test_the_shadow_is_invisible_and_its_comparison_is_stored(serve, tmp_path):
    gw, client = serve(config(tmp_path / "a"))
    plain = detect(client)
    gw, client = serve(config(tmp_path / "b", shadow={"variant": "candidate"}))
    shadowed = detect(client)
    assert shadowed.status_code == plain.status_code == 200
    strip = lambda r: {k: v for k, v in r.get_json().items() if k != "request_id"}  # noqa: E731
    assert strip(shadowed) == strip(plain)
    assert shadowed.headers["X-Served-By"] == plain.headers["X-Served-By"]

    (record,) = comparisons(tmp_path / "b")
    assert record["primary"]["variant"] == "current"
    assert record["shadow"]["variant"] == "candidate"
    assert record["shadow"]["status"] == "ok"
    (slide,) = record["slides"]
    assert (slide["primary_count"], slide["shadow_count"], slide["difference"]) == (4, 2, -2)
    assert (slide["matched"], slide["only_primary"], slide["only_shadow"]) == (1, 3, 1)
    assert slide["boxes"]["only_shadow"] == [{"x0": 320.0, "y0": 200.0, "x1": 350.0, "y1": 230.0}]
    assert "image" not in json.dumps(record)  # never image bytes
    (row,) = usage_rows(tmp_path / "b")
    assert row["images"] == 1  # the quota counted the request once
    assert row["shadow"]["variant"] == "candidate" and row["shadow"]["status"] == "ok"
    assert row["shadow"]["tiles"] == 1


def test_a_shadow_past_max_wait_is_recorded_as_cut(serve, tmp_path):
    variants = {
        "current": {**fake(CELLS, "eos-v1"), "weight": 1},
        "candidate": {**fake(CANDIDATE, "eos-v2", hold_s=30), "weight": 0},
    }
    gw, client = serve(config(tmp_path, {"variant": "candidate", "max_wait_ms": 200}, **variants))
    resp = detect(client)
    assert resp.status_code == 200 and resp.get_json()["count"] == 4
    (record,) = comparisons(tmp_path)
    assert record["shadow"]["status"] == "cut"
    assert "slides" not in record
    (row,) = usage_rows(tmp_path)
    assert row["shadow"]["status"] == "cut"


def test_a_failing_shadow_never_changes_the_callers_answer(serve, tmp_path):
    variants = {
        "current": {**fake(CELLS, "eos-v1"), "weight": 1},
        "candidate": {**fake(CANDIDATE, "eos-v2", down=True), "weight": 0},
    }
    gw, client = serve(config(tmp_path, {"variant": "candidate"}, **variants))
    resp = detect(client)
    assert resp.status_code == 200 and resp.get_json()["count"] == 4
    (record,) = comparisons(tmp_path)
    assert record["shadow"]["status"] == "failed"
    assert record["shadow"]["error_code"] == "backend_unavailable"


def test_comparisons_survive_a_store_outage_in_the_spool(serve, tmp_path):
    gw, client = serve(config(tmp_path, {"variant": "candidate"}))
    store = gw.usage.store
    real_commit = store.commit

    def down(record, *, spooled=False):
        raise OSError("disk gone")

    store.commit = down
    assert detect(client).status_code == 200
    assert comparisons(tmp_path) == []
    assert gw.usage.spool.pending() == 1
    store.commit = real_commit
    gw.usage.delivery._down_until = 0.0  # the outage is over
    assert gw.usage.flush_spool() == 1
    (record,) = comparisons(tmp_path)
    assert record["slides"][0]["matched"] == 1


def test_a_variant_not_ready_is_skipped_and_readyz_says_so(serve, tmp_path):
    variants = {
        "current": {**fake(CELLS, "eos-v1", down=True), "weight": 1},
        "candidate": {**fake(CANDIDATE, "eos-v2"), "weight": 1},
    }
    gw, client = serve(config(tmp_path, **variants))
    ready = client.get("/readyz")
    assert ready.status_code == 200
    state = ready.get_json()["services"]["eos"]
    assert "skipped for routing: current" in state["detail"]
    assert state["variants"]["current"]["ready"] is False
    served = {detect(client).headers["X-Served-By"].split(";")[0] for _ in range(8)}
    assert served == {"candidate"}


def test_allow_pins_a_validation_team_and_the_comparison_endpoint_answers_allowed_callers(
    serve, tmp_path
):
    keys = {name: hashlib.sha256(name.encode()).hexdigest() for name in ("lab", "team", "other")}
    raw = config(tmp_path, {"variant": "candidate"})
    raw["services"]["eos"]["variants"]["candidate"]["allow"] = ["key:team"]
    raw["services"]["eos"]["allow"] = ["key:lab", "key:team"]
    raw["auth"] = {"api_keys": [{"id": n, "sha256": h} for n, h in keys.items()]}
    gw, client = serve(raw)
    lab = detect(client, **{"X-API-Key": "lab"})
    team = detect(client, **{"X-API-Key": "team"})
    assert lab.get_json()["model"]["variant"] == "current"
    assert team.get_json()["model"]["variant"] == "candidate"  # and no shadow of itself

    url = "/v1/services/eos/comparison?since=7d&variant=current&variant=candidate&cutoff=3"
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"X-API-Key": "other"}).status_code == 403
    resp = client.get(url, headers={"X-API-Key": "lab"})
    assert resp.status_code == 200
    (pair,) = resp.get_json()["pairs"]
    assert pair["requests"] == {"shadowed": 1, "compared": 1}
    assert pair["counts"] == {
        "current": {"mean": 4.0, "median": 4},
        "candidate": {"mean": 2.0, "median": 2},
    }
    assert pair["boxes"]["f1"] == round(2 / 6, 4)  # 1 matched, 3 + 1 alone: 2 / (2 + 4)
    assert pair["cutoff"] == {
        "value": 3.0,
        "crossings": 1,
        "positive_only_current": 1,
        "positive_only_candidate": 0,
    }
    bad = client.get("/v1/services/eos/comparison?variant=x", headers={"X-API-Key": "lab"})
    assert bad.status_code == 400
