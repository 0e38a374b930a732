"""A local stand-in for one Vertex AI endpoint, on 127.0.0.1 in the test process.

It answers, over a real socket, as Vertex's online prediction API does:

* ``POST /v1/projects/{p}/locations/{l}/endpoints/{e}:predict``: AutoML image instances
  (``content`` base64, ``mimeType``) and ``parameters`` (``confidenceThreshold``,
  ``maxPredictions``); each image is decoded and run through the embedded detector
  (:func:`gateway.detector.detect`, at a fixed cell size as a real model has one scale), and
  its detections answered best first as ``ids``, ``displayNames``, ``confidences`` and
  ``bboxes`` ``[xMin, xMax, yMin, yMax]`` normalized, beside ``deployedModelId`` and
  ``modelVersionId``; a classifier answers labels and confidences;
* ``GET /v1/projects/{p}/locations/{l}/endpoints/{e}``: the endpoint resource with its
  ``deployedModels``;
* errors in Google's shape (``{"error": {"code", "message", "status"}}``): 401 without a
  valid Bearer access token, 404 for another endpoint, 400 for a body over the 1.5 MB
  online request limit or an image it cannot decode, and whatever statuses a test queues.

A Bearer token is valid when ``valid_token`` says so (the access tokens the Google stand-in
of ``tests/certserver.py`` issued).  Every predict request is recorded (its size, instance
count and parameters, the token it carried).
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image

from gateway.detector import detect

PROJECT, LOCATION, ENDPOINT = "my-project", "europe-west4", "1234567890"
DEPLOYED_MODEL_ID = "5566778899"
MODEL_VERSION_ID = "3"
LIMIT_BYTES = 1_500_000
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


@dataclass
class Predicted:
    """One predict request as the endpoint received it."""

    size: int
    instances: int
    parameters: dict[str, Any]
    authorization: str


@dataclass
class EndpointState:
    valid_token: Callable[[str], bool]
    cell_px: float | None = None
    kind: str = "detection"  # or "classification"
    label: str = "eos"
    deployed: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"id": DEPLOYED_MODEL_ID, "model": "projects/p/models/m", "modelVersionId": "3"}
        ]
    )
    failures: list[int] = field(default_factory=list)  # statuses for the next predicts
    delay_s: float = 0.0  # before each predict answer
    requests: list[Predicted] = field(default_factory=list)
    resource_gets: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def google_error(status: int, message: str) -> bytes:
    name = STATUS_NAMES.get(status, "UNKNOWN")
    return json.dumps({"error": {"code": status, "message": message, "status": name}}).encode()


def detections_of(image: bytes, state: EndpointState, threshold: float, most: int) -> dict:
    rgb = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))
    h, w = rgb.shape[:2]
    found = detect(rgb, state.cell_px)
    order = [i for i in np.argsort(-found.scores, kind="stable") if found.scores[i] >= threshold]
    order = order[:most]
    boxes = []
    for i in order:
        x0, y0, x1, y1 = (float(v) for v in found.boxes[i])
        boxes.append([x0 / w, x1 / w, y0 / h, y1 / h])
    return {
        "ids": ["1"] * len(order),
        "displayNames": [state.label] * len(order),
        "confidences": [float(found.scores[i]) for i in order],
        "bboxes": boxes,
    }


def classification_of(image: bytes) -> dict:
    rgb = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"), dtype=np.float64)
    red = float(np.clip(rgb[..., 0].mean() / 255.0, 0.0, 1.0))
    pairs = sorted([("inflamed", red), ("normal", 1.0 - red)], key=lambda p: -p[1])
    return {
        "ids": ["2" if name == "inflamed" else "1" for name, _ in pairs],
        "displayNames": [name for name, _ in pairs],
        "confidences": [score for _, score in pairs],
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as Google's front ends

    def log_message(self, *args: Any) -> None:
        return None

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the gateway gave up waiting
            self.close_connection = True

    def _error(self, status: int, message: str) -> None:
        self._send(status, google_error(status, message))

    def _authorized(self) -> bool:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme != "Bearer" or not self.server.state.valid_token(token):
            self._error(401, "Request had invalid authentication credentials.")
            return False
        return True

    def do_GET(self) -> None:
        state = self.server.state
        if not self._authorized():
            return
        if self.path != "/v1/" + self.server.resource:
            self._error(404, f"Endpoint `{self.path}` not found.")
            return
        with state.lock:
            state.resource_gets += 1
            doc = {"name": self.server.resource, "displayName": "eos"}
            if state.deployed:
                doc["deployedModels"] = list(state.deployed)
        self._send(200, json.dumps(doc).encode())

    def do_POST(self) -> None:
        state = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self._authorized():
            return
        if self.path != "/v1/" + self.server.resource + ":predict":
            self._error(404, f"Endpoint `{self.path}` not found.")
            return
        with state.lock:
            failure = state.failures.pop(0) if state.failures else None
        if state.delay_s:
            time.sleep(state.delay_s)
        if failure is not None:
            self._error(failure, f"stand-in failure {failure}")
            return
        if len(body) > LIMIT_BYTES:
            self._error(400, "Request payload size exceeds the limit: 1572864 bytes.")
            return
        try:
            doc = json.loads(body)
            instances = doc["instances"]
            params = doc.get("parameters") or {}
            images = [base64.b64decode(i["content"], validate=True) for i in instances]
        except (ValueError, KeyError, TypeError) as exc:
            self._error(400, f"Invalid JSON payload received. {exc}")
            return
        with state.lock:
            state.requests.append(
                Predicted(len(body), len(images), params, self.headers.get("Authorization", ""))
            )
        threshold = float(params.get("confidenceThreshold", 0.5))
        most = int(params.get("maxPredictions", 100))
        try:
            if state.kind == "classification":
                preds = [classification_of(image) for image in images]
            else:
                preds = [detections_of(image, state, threshold, most) for image in images]
        except OSError as exc:
            self._error(400, f"Unable to decode image: {exc}")
            return
        answer = {
            "predictions": preds,
            "deployedModelId": DEPLOYED_MODEL_ID,
            "model": f"projects/{PROJECT}/locations/{LOCATION}/models/987",
            "modelDisplayName": "eos",
            "modelVersionId": MODEL_VERSION_ID,
        }
        self._send(200, json.dumps(answer).encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: EndpointState
    resource: str


class VertexStandIn:
    """Start with ``VertexStandIn(valid_token)``; ``.url``, ``.state``; ``.stop()`` at the end."""

    def __init__(self, valid_token: Callable[[str], bool], **state: Any) -> None:
        self.state = EndpointState(valid_token=valid_token, **state)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self._server.resource = f"projects/{PROJECT}/locations/{LOCATION}/endpoints/{ENDPOINT}"
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
