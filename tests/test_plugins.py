"""Plug-ins registered from outside the package: an outbound protocol (``toyproto``, whose
client plays the detector role against a small model server in a thread of this process)
and a kind of service (``counter``), each with a configuration key of its own, configured
by name and served through the gateway's one HTTP entry point (:func:`gateway.rest.app.handle`).

The two plug-ins are the examples of ``docs/extending.md``, word for word
(:func:`test_the_guide_shows_this_code`); nothing under ``gateway/`` knows them.
"""

from __future__ import annotations

import ast
import base64
import json
import re
import sys
import threading
import time
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import flask
import numpy as np
import pytest
from helpers import REPO, assert_error, b64, jpeg
from procs import free_port

from gateway import backends, kinds
from gateway.backends.base import (
    BackendResult,
    OutboundProtocol,
    Readiness,
    TileDetections,
    TileInput,
    not_ready,
    status_reason,
)
from gateway.backends.http_client import ModelHttpClient, Retryable, status_error
from gateway.backends.http_pool import Response
from gateway.catalog import parse_config
from gateway.config import Limits, ServiceConfig
from gateway.context import Facts
from gateway.errors import BackendBadResponse, GatewayError, NotFound, UnknownVersion
from gateway.jsonio import b64encode
from gateway.kinds.base import Kind, Output
from gateway.rest.app import handle
from gateway.runtime import build_gateway, current_gateway, set_gateway
from gateway.schema import NUMBER, STRING, ConfigError, Fields, Setting
from gateway.usecases.checks import Quota, admit_images, reporting

GUIDE = REPO / "docs" / "extending.md"

# --- the protocol (docs/extending.md, "Adding a protocol") --------------------------------


@dataclass(frozen=True)
class ToyOptions:
    path: str  # where the model answers, after the path of the backend's URL


def toy_options(values: dict[str, Any], where: str) -> ToyOptions:
    """What the key's type alone cannot say is checked here, naming the key."""
    if not values["path"].startswith("/"):
        raise ConfigError(f"{where}.path must start with '/', got {values['path']!r}")
    return ToyOptions(values["path"])


def read_detections(data: bytes, count: int) -> list[TileDetections]:
    """The answer's detections, one list per tile; any other answer is the model's fault
    (502), never the client's."""
    try:
        per_tile = json.loads(data)["detections"]
        if not isinstance(per_tile, list) or len(per_tile) != count:
            raise ValueError(f"{count} tiles sent, answers for another number")
        out = []
        for found in per_tile:
            boxes = np.array([d["box"] for d in found], dtype=np.float64).reshape(-1, 4)
            scores = np.array([d["score"] for d in found], dtype=np.float64)
            out.append(TileDetections(boxes, scores, np.zeros(len(scores), dtype=np.int64)))
        return out
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise BackendBadResponse(
            "the model answered with something that is not detections"
        ) from exc


class ToyDetector:
    """The detector role over toyproto: each group of tiles is one ``POST`` of
    ``{"tiles": [{"width", "height", "image": base64}]}``, answered by
    ``{"detections": [[{"box": [x0, y0, x1, y1], "score": s}, ...], ...]}`` (a list per
    tile, boxes in the tile's pixels)."""

    wants_encoded = True  # tiles as JPEG/PNG bytes, not pixel arrays

    def __init__(self, service: ServiceConfig) -> None:
        self.service = service
        self.client = ModelHttpClient(service.name, service.backend)  # pool, retries, breaker
        base = urlsplit(service.backend.url or "").path.rstrip("/")
        self.path = base + service.backend.options.path

    def _status_error(self, resp: Response) -> GatewayError:
        # The model server's words go to the log only (GatewayError.detail).
        detail = f"HTTP {resp.status}: {resp.data[:4096].decode('utf-8', 'replace')}"
        return status_error(self.service.name, resp.status, detail)

    def ensure_reachable(self, deadline: float) -> None:
        self.client.ensure_reachable(deadline)

    def predict(
        self,
        tiles: Iterable[Sequence[TileInput]],
        deadline: float,
        slide_pixels: np.ndarray | None = None,
    ) -> BackendResult:
        started = time.perf_counter()
        found: list[TileDetections] = []
        for group in tiles:
            body = json.dumps(
                {
                    "tiles": [
                        {
                            "width": t.width,
                            "height": t.height,
                            "image": b64encode(t.encoded or b"").decode(),
                        }
                        for t in group
                    ]
                }
            ).encode()
            resp = self.client.send("POST", self.path, body, deadline, on_status=self._status_error)
            if resp.status != 200:
                raise self._status_error(resp)
            found += read_detections(resp.data, len(group))
        return BackendResult(
            tiles=found,
            labels=("eos",),  # TileDetections.classes index these
            class_values=(1.0,),
            model=self.service.backend.model,
            backend_ms=(time.perf_counter() - started) * 1000.0,
        )

    def readiness(self) -> Readiness:
        model = self.service.backend.model
        deadline = time.monotonic() + min(self.service.backend.timeout_s, 5.0)
        try:
            resp = self.client.call("GET", self.path, None, deadline)
        except Retryable as exc:
            return not_ready(model, exc.error)  # reason: unreachable
        except GatewayError as exc:
            return not_ready(model, exc)  # timeout, no_credentials...
        if resp.status != 200:
            return Readiness(False, f"HTTP {resp.status}", model, reason=status_reason(resp.status))
        return Readiness(True, "ready", model)

    def pinned(self, version: str | None = None, label: str | None = None) -> ToyDetector:
        if version is not None or label is not None:
            raise UnknownVersion("a toyproto model has no versions or labels")
        return self

    def model_status(self, version: str | None = None, label: str | None = None) -> dict:
        self.pinned(version, label)
        return {"model_version_status": []}  # a server that names no versions

    def model_metadata(self, version: str | None = None, label: str | None = None) -> dict:
        raise NotFound("a toyproto model declares no metadata")


PROTOCOL = OutboundProtocol(
    name="toyproto",
    fields=Fields({"path": Setting(STRING, "/detect")}),
    client=ToyDetector,
    make_options=toy_options,
    roles=("detector",),
)

# --- the kind (docs/extending.md, "Adding a kind") ------------------------------------------


@dataclass(frozen=True)
class CounterOptions:
    min_score: float  # what the model finds with a lower score is not counted


@dataclass(frozen=True)
class Counts:
    counts: list[int]  # one per image, in order
    facts: Facts = field(default_factory=Facts)


class Counter(Kind):
    """Counts what the model finds on each image, sent whole as one tile: no tiling, no
    boxes back."""

    name = "counter"
    description = "counts the cells the model finds on each image"
    fields = Fields({"min_score": Setting(NUMBER, 0.5, lo=0, hi=1)})
    routes = (":predict", "infer")
    role = "detector"
    outputs = (Output("count", "FP32", (-1,)),)

    def options(self, values: dict[str, Any], where: str) -> CounterOptions:
        return CounterOptions(values["min_score"])

    def public(self, service: ServiceConfig) -> dict[str, Any]:
        return {"min_score": service.options.min_score}

    def infer(
        self,
        service: Any,
        images: Sequence[bytes],
        threshold: float | None,
        *,
        limits: Limits,
        quota: Quota,
        backend: Any = None,
    ) -> Counts:
        cfg = service.config
        cut = cfg.options.min_score if threshold is None else threshold
        facts = Facts(instances=len(images), threshold=cut)
        detector = backend or service.backend
        with reporting(facts):  # what was learnt goes with an error to the usage record
            infos, deadline = admit_images(
                facts, images, limits, quota, detector, cfg.backend.timeout_s
            )
            counts = []
            for data, info in zip(images, infos, strict=True):
                tile = TileInput(0, info.width, info.height, encoded=data)
                found = detector.predict([[tile]], deadline)
                count = int((found.tiles[0].scores >= cut).sum())
                counts.append(count)
                facts.tiles += 1
                facts.detections += count
                facts.backend_ms += found.backend_ms
                facts.backend_model, facts.backend_version = found.model, found.version
        return Counts(counts, facts)

    def rows(self, result: Counts, keys: Sequence[str | None]) -> list[Mapping[str, Any]]:
        return [{"count": n, "key": key} for n, key in zip(result.counts, keys, strict=True)]


KIND = Counter()

# --- the model server toyproto speaks to ----------------------------------------------------

SCORES = (0.9, 0.6, 0.2)  # three cells on every image: two at the counter's min_score of 0.5
SECRET = "tensor 'x' shape [1,7] secret-7f3a"  # a refusal's words: logged, never answered


def toy_boxes() -> list[dict[str, Any]]:
    """Three 12 px boxes apart from each other, in the tile's pixels."""
    return [{"box": [2 + 20 * i, 2, 14 + 20 * i, 14], "score": s} for i, s in enumerate(SCORES)]


class ToyModelServer:
    """A toyproto model server on 127.0.0.1 in threads of this process: ``/refuse`` answers
    400, ``/garbage`` a page that is not JSON, ``/slow`` nothing until :attr:`release`."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[tuple[int, int]], list[bytes]]] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.reply(self, 200, b"{}")

            def do_POST(self) -> None:
                server.answer(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reply(self, h: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def answer(self, h: BaseHTTPRequestHandler) -> None:
        tiles = json.loads(h.rfile.read(int(h.headers["Content-Length"])))["tiles"]
        sizes = [(t["width"], t["height"]) for t in tiles]
        self.seen.append((h.path, sizes, [base64.b64decode(t["image"])[:2] for t in tiles]))
        if h.path.endswith("/refuse"):
            return self.reply(h, 400, f'{{"error": "{SECRET}"}}'.encode())
        if h.path.endswith("/garbage"):
            return self.reply(h, 200, b"<html>upstream proxy error</html>")
        if h.path.endswith("/slow"):
            self.release.wait(60)
        answer = {"detections": [toy_boxes() for _ in sizes]}
        self.reply(h, 200, json.dumps(answer).encode())

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=30)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plugins() -> Iterator[None]:
    """``toyproto`` and ``counter`` known while this module runs, and forgotten after."""
    backends.register_protocol(PROTOCOL, __name__)
    kinds.register(KIND, __name__)
    yield
    backends.unregister_protocol(PROTOCOL.name)
    kinds.unregister(KIND.name)
    assert PROTOCOL.name not in backends.protocol_names()
    assert KIND.name not in kinds.names()


@pytest.fixture(scope="module")
def model_server() -> Iterator[ToyModelServer]:
    server = ToyModelServer()
    yield server
    server.stop()


def gateway_config(url: str) -> dict[str, Any]:
    def toy(path: str = "/detect", **backend: Any) -> dict[str, Any]:
        return {"protocol": "toyproto", "url": url, "path": path, **backend}

    return {
        "services": {
            "boxes": {"kind": "detection", "backend": {"protocol": "toyproto", "url": url + "/m"}},
            "count": {"kind": "counter", "backend": toy()},
            "refused": {"kind": "counter", "backend": toy("/refuse")},
            "garbage": {"kind": "counter", "backend": toy("/garbage")},
            "slow": {"kind": "counter", "backend": toy("/slow", timeout_s=0.5, retries=0)},
            "gone": {
                "kind": "counter",
                "backend": toy(url=f"http://127.0.0.1:{free_port()}", retries=0),
            },
        },
        "auth": {"required": False},
        "usage": {"enabled": False},
    }


@pytest.fixture(scope="module")
def gateway(plugins, model_server):
    """This process's gateway built from a configuration naming the plug-ins (the one
    before it put back after)."""
    before = current_gateway()
    gw = build_gateway(parse_config(gateway_config(model_server.url)))
    set_gateway(gw)
    yield gw
    set_gateway(before)


@pytest.fixture(scope="module")
def client(gateway) -> flask.testing.FlaskClient:
    """Requests through :func:`gateway.rest.app.handle`, as ``main.gateway`` passes them."""
    app = flask.Flask(__name__)

    def entry(path: str = "") -> flask.Response:
        return handle(flask.request)

    app.add_url_rule("/", "root", entry, methods=["GET", "POST"])
    app.add_url_rule("/<path:path>", "any", entry, methods=["GET", "POST"])
    return app.test_client()


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    rng = np.random.default_rng(5)
    return [jpeg(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)) for _ in range(2)]


class Answer:
    """A test client's answer read as :func:`helpers.assert_error` reads a ``requests`` one."""

    def __init__(self, resp: Any) -> None:
        self.status_code, self.headers = resp.status_code, resp.headers
        self.text = resp.get_data(as_text=True)

    def json(self) -> Any:
        return json.loads(self.text)


def predict_body(images: Sequence[bytes]) -> dict[str, Any]:
    return {
        "instances": [
            {"image_bytes": {"b64": b64(img)}, "key": "ab"[i]} for i, img in enumerate(images)
        ]
    }


# --- a request through each ------------------------------------------------------------------


def test_a_detection_service_on_the_protocol_answers_predict(client, model_server, images):
    before = len(model_server.seen)
    resp = client.post("/v1/models/boxes:predict", json=predict_body(images[:1]))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    (row,) = resp.get_json()["predictions"]
    assert row["key"] == "a" and row["num_detections"] == 3
    assert sorted(row["detection_scores"], reverse=True) == list(SCORES)
    assert row["detection_classes_as_text"] == ["eos"] * 3
    assert row["detection_classes"] == [1.0] * 3
    # Boxes in the image's own pixels, normalized as TF Serving writes them: [y0, x0, y1, x1].
    expected = [[2 / 64, (2 + 20 * i) / 96, 14 / 64, (14 + 20 * i) / 96] for i in range(3)]
    np.testing.assert_allclose(sorted(row["detection_boxes"]), expected, atol=1e-6)
    # The protocol's own key: the default path, after the URL's path; JPEG tiles of the image.
    ((path, sizes, magics),) = model_server.seen[before:]
    assert path == "/m/detect" and sizes == [(96, 64)] and magics == [b"\xff\xd8"]


def test_the_kind_answers_predict_with_its_rows(client, model_server, images):
    before = len(model_server.seen)
    resp = client.post("/v1/models/count:predict", json=predict_body(images))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    # The kind's own key: min_score 0.5 by default counts two of the three.
    assert resp.get_json() == {"predictions": [{"count": 2, "key": "a"}, {"count": 2, "key": "b"}]}
    assert [p for p, _, _ in model_server.seen[before:]] == ["/detect", "/detect"]
    # A threshold asked for is the kind's to use.
    resp = client.post("/v1/models/count:predict?threshold=0.1", json=predict_body(images))
    assert [p["count"] for p in resp.get_json()["predictions"]] == [3, 3]


def test_the_kind_answers_infer_of_the_open_inference_protocol(client, images):
    body = {
        "inputs": [
            {
                "name": "image_bytes",
                "datatype": "BYTES",
                "shape": [2],
                "data": [b64(i) for i in images],
            },
            {"name": "key", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
        ],
        "parameters": {"threshold": 0.1},
    }
    resp = client.post("/v2/models/count/infer", json=body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    outputs = {o["name"]: o for o in resp.get_json()["outputs"]}
    assert outputs["count"]["datatype"] == "FP32" and outputs["count"]["shape"] == [2]
    assert outputs["count"]["data"] == [3.0, 3.0]
    assert outputs["key"]["data"] == ["a", "b"]


def test_the_kind_is_listed_with_its_key_and_routes(client):
    resp = client.get("/v1/services/count")
    assert resp.status_code == 200
    doc = resp.get_json()
    assert doc["kind"] == "counter" and doc["protocol"] == "toyproto" and doc["min_score"] == 0.5
    assert "POST /v1/models/count:predict" in doc["routes"]
    assert "POST /v1/services/count:detect" not in doc["routes"]
    assert doc["image_route"] is None  # no command-line view declared


def test_a_route_the_kind_does_not_answer_is_400_naming_those_it_does(client, images):
    resp = client.post("/v1/services/count:detect", data=images[0], content_type="image/jpeg")
    body = assert_error(Answer(resp), 400, "wrong_route")
    assert "a counter service" in body["error"]
    assert "POST /v1/models/count:predict" in body["error"]
    assert "POST /v2/models/count/infer" in body["error"]
    assert ":detect" not in body["error"].split("; use ", 1)[1]


def test_readiness_asks_the_model_server(gateway):
    assert gateway.services.get("count").backend.readiness().ready is True
    gone = gateway.services.get("gone").backend.readiness()
    assert gone.ready is False and "unreachable" in gone.detail
    assert gone.reason == "unreachable"


# --- the protocol's failures in the gateway's words ------------------------------------------


def test_a_refusal_is_502_backend_rejected_without_the_servers_words(client, images, capsys):
    resp = client.post("/v1/models/refused:predict", json=predict_body(images[:1]))
    body = assert_error(Answer(resp), 502, "backend_rejected")
    assert body["error"] == "the model rejected a tile"
    assert "secret-7f3a" not in resp.get_data(as_text=True)
    assert "secret-7f3a" in capsys.readouterr().out  # the model server's words: logged


def test_an_answer_that_is_not_detections_is_502(client, images):
    resp = client.post("/v1/models/garbage:predict", json=predict_body(images[:1]))
    body = assert_error(Answer(resp), 502, "backend_bad_response")
    assert "upstream proxy" not in body["error"]


def test_an_unreachable_model_server_is_503(client, images):
    resp = client.post("/v1/models/gone:predict", json=predict_body(images[:1]))
    assert_error(Answer(resp), 503, "backend_unavailable")


def test_a_model_server_that_does_not_answer_in_time_is_504(client, images):
    resp = client.post("/v1/models/slow:predict", json=predict_body(images[:1]))
    body = assert_error(Answer(resp), 504, "backend_timeout")
    assert "0.5 s" in body["error"]


# --- the configuration ------------------------------------------------------------------------

URL = "http://127.0.0.1:9"


def counter(**service: Any) -> dict[str, Any]:
    backend = {"protocol": "toyproto", "url": URL, **service.pop("backend", {})}
    return {"services": {"c": {"kind": "counter", "backend": backend, **service}}}


def test_the_plugins_keys_have_their_defaults(plugins):
    cfg = parse_config(counter()).services["c"]
    assert cfg.kind == "counter" and cfg.backend.protocol == "toyproto"
    assert cfg.backend.options == ToyOptions("/detect")
    assert cfg.options == CounterOptions(0.5)
    cfg = parse_config(counter(min_score=0.25, backend={"path": "/v1/find"})).services["c"]
    assert cfg.backend.options.path == "/v1/find" and cfg.options.min_score == 0.25


@pytest.mark.parametrize(
    "raw, message",
    [
        (counter(backend={"path": 5}), "services.c.backend.path must be a string, got a number"),
        (counter(backend={"path": "find"}), "services.c.backend.path must start with '/'"),
        (counter(min_score="high"), "services.c.min_score must be a number, got a string"),
        (counter(min_score=2), "services.c.min_score must be between 0 and 1"),
        (counter(backend={"pth": "/x"}), "unknown key 'pth' in services.c.backend"),
        (counter(backend={"url": None}), "services.c.backend.url is required"),
        (
            {"services": {"d": {"min_score": 0.4}}},
            "services.d.min_score does not apply to a service of kind 'detection'",
        ),
        (
            {"services": {"d": {"backend": {"url": URL, "path": "/x"}}}},
            "unknown key 'path' in services.d.backend",
        ),
    ],
)
def test_a_wrong_key_is_a_config_error_naming_it(plugins, raw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(raw)


def test_an_unknown_protocol_is_a_config_error_listing_the_known_ones(plugins):
    with pytest.raises(ConfigError) as exc:
        parse_config(counter(backend={"protocol": "toyprot"}))
    message = str(exc.value)
    assert message.startswith("services.c.backend.protocol must be one of ")
    assert "got 'toyprot'" in message
    listed = message.split("one of ", 1)[1].split(", got")[0].split(", ")
    assert set(listed) == set(backends.protocol_names()) >= {"tfserving", "toyproto"}


def test_a_protocol_that_cannot_play_a_kinds_role_is_refused_at_start(plugins):
    raw = {
        "services": {
            "c": {"kind": "classification", "backend": {"protocol": "toyproto", "url": URL}}
        }
    }
    with pytest.raises(ConfigError, match="protocol 'toyproto' cannot serve a classification"):
        parse_config(raw)


def test_an_unknown_kind_is_a_config_error_listing_the_known_ones(plugins):
    with pytest.raises(ConfigError) as exc:
        parse_config({"services": {"c": {"kind": "countr", "backend": {"url": URL}}}})
    message = str(exc.value)
    assert message.startswith("services.c.kind must be one of ") and "got 'countr'" in message
    listed = message.split("one of ", 1)[1].split(", got")[0].split(", ")
    assert set(listed) == set(kinds.names())
    assert set(listed) >= {"detection", "classification", "passthrough", "counter"}


# --- the guide ----------------------------------------------------------------------------------


def _example(section: str) -> str:
    """The first Python block of a section of the guide: a plug-in's whole module."""
    text = GUIDE.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```python\n(.*?)```", text[start : end if end != -1 else None], re.S)
    assert blocks, f"no Python example under {section!r} in {GUIDE}"
    return blocks[0]


@pytest.mark.parametrize(
    "section, name", [("Adding a protocol", "PROTOCOL"), ("Adding a kind", "KIND")]
)
def test_the_guide_shows_this_code(section, name, monkeypatch):
    """The guide's module runs as written (its imports are whole), and everything after its
    imports is this file's code."""
    source = _example(section)
    module = types.ModuleType(f"guide_{name.lower()}")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look it up
    exec(compile(source, f"{GUIDE}:{section}", "exec"), module.__dict__)
    assert getattr(module, name).name == globals()[name].name
    tree = ast.parse(source)
    first = next(
        n
        for n in tree.body
        if not isinstance(n, (ast.Import, ast.ImportFrom))
        and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
    )
    line = min([first.lineno, *(d.lineno for d in getattr(first, "decorator_list", []))])
    body = "".join(source.splitlines(keepends=True)[line - 1 :])
    assert body in (REPO / "tests" / "test_plugins.py").read_text()
