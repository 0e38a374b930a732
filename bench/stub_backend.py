"""A stub model server for benchmarks: answers TF Serving's ``:predict``, the Open
Inference Protocol's (V2) ``infer`` and a Vertex AI endpoint's ``:predict`` after a set delay.

It does no image work, so what is measured is the gateway, not a model.  Calls are
served concurrently (one thread per connection, HTTP/1.1 keep-alive), like TF Serving
with batching off.  Each tile gets the same small set of boxes, enough to exercise the
gateway's answer parsing and merge, and both protocols answer the same detections: V2 as
flat row-major tensors (as Triton writes them), only the outputs the request names.  Of a
V2 request it reads just enough to answer: the image count and the outputs asked for,
from the JSON header of a binary request or around the base64 strings of a JSON one.
Vertex is answered in its own box order (``[xMin, xMax, yMin, yMax]``), with the endpoint
resource for readiness and ``POST /token`` as the OAuth token endpoint a service-account
key file's ``token_uri`` names; a Vertex call must carry that token.

    .venv/bin/python -m bench.stub_backend --port 8601 --delay-ms 200
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DETECTIONS_PER_TILE = 12
V2_HEADER_LENGTH = "Inference-Header-Content-Length"
_V2_SHAPE = re.compile(rb'"shape"\s*:\s*\[\s*(\d+)')
_V2_ID = re.compile(rb'"id"\s*:\s*"([^"\\]*)"')
_V2_OUTPUTS = b',"outputs":'  # the gateway writes the outputs asked for after the inputs
VERTEX_PREFIX = "/v1/projects/"
VERTEX_TOKEN = "bench"


def _prediction(key: str) -> dict:
    boxes, scores = [], []
    for i in range(DETECTIONS_PER_TILE):
        y = 0.1 + 0.06 * i
        x = 0.2 + 0.05 * (i % 5)
        boxes.append([y, x, y + 0.05, x + 0.04])
        scores.append(round(0.95 - 0.05 * i, 3))
    return {
        "detection_boxes": boxes,
        "detection_scores": scores,
        "detection_classes": [1.0] * DETECTIONS_PER_TILE,
        "detection_classes_as_text": ["eos"] * DETECTIONS_PER_TILE,
        "num_detections": float(DETECTIONS_PER_TILE),
        "key": key,
    }


def v2_request(data: bytes, header_length: str | None) -> tuple[int, list[str] | None, str]:
    """(images, outputs asked for or None for all, request id) of an infer body, without
    reading its image data."""
    if header_length is not None:
        doc = json.loads(data[: int(header_length)])
        wanted = doc.get("outputs")
        names = [o["name"] for o in wanted] if wanted else None
        return int(doc["inputs"][0]["shape"][0]), names, str(doc.get("id", ""))
    head = data[:4096]
    shape = _V2_SHAPE.search(head)
    if shape is None:
        raise ValueError("no input shape")
    found = _V2_ID.search(head)
    at = data.rfind(_V2_OUTPUTS, max(len(data) - 4096, 0))
    names = None
    if at >= 0:
        names = [o["name"] for o in json.loads(data[at + len(_V2_OUTPUTS) : -1])]
    return int(shape.group(1)), names, found.group(1).decode() if found else ""


def v2_answer(n: int, names: list[str] | None, request_id: str) -> bytes:
    """The infer answer for ``n`` tiles: the detections of ``_prediction`` as V2 tensors."""
    rows = [_prediction(f"tile-{i}") for i in range(n)]
    k = DETECTIONS_PER_TILE
    tensors = {
        "detection_boxes": (
            "FP32",
            [n, k, 4],
            [v for r in rows for b in r["detection_boxes"] for v in b],
        ),
        "detection_scores": ("FP32", [n, k], [s for r in rows for s in r["detection_scores"]]),
        "detection_classes": ("FP32", [n, k], [c for r in rows for c in r["detection_classes"]]),
        "detection_classes_as_text": (
            "BYTES",
            [n, k],
            [t for r in rows for t in r["detection_classes_as_text"]],
        ),
        "num_detections": ("FP32", [n], [r["num_detections"] for r in rows]),
    }
    unknown = [name for name in names or () if name not in tensors]
    if unknown:
        raise KeyError(f"unknown output {unknown[0]!r}")
    outputs = [
        {
            "name": name,
            "datatype": tensors[name][0],
            "shape": tensors[name][1],
            "data": tensors[name][2],
        }
        for name in (names or tensors)
    ]
    doc = {"id": request_id, "model_name": "eos", "model_version": "1", "outputs": outputs}
    return json.dumps(doc).encode()


def vertex_answer(n: int) -> bytes:
    """A Vertex endpoint's answer for ``n`` images: the detections of ``_prediction``."""
    preds = []
    for i in range(n):
        row = _prediction(f"tile-{i}")
        preds.append(
            {
                "ids": ["1"] * DETECTIONS_PER_TILE,
                "displayNames": row["detection_classes_as_text"],
                "confidences": row["detection_scores"],
                "bboxes": [[x0, x1, y0, y1] for y0, x0, y1, x1 in row["detection_boxes"]],
            }
        )
    doc = {"predictions": preds, "deployedModelId": "1", "modelVersionId": "1"}
    return json.dumps(doc).encode()


VERTEX_ENDPOINT = {"deployedModels": [{"id": "1", "model": "eos", "modelVersionId": "1"}]}
TOKEN_ANSWER = {"access_token": VERTEX_TOKEN, "expires_in": 3600, "token_type": "Bearer"}


V2_METADATA = {
    "name": "eos",
    "versions": ["1"],
    "platform": "stub",
    "inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [-1]}],
    "outputs": [
        {"name": "detection_boxes", "datatype": "FP32", "shape": [-1, DETECTIONS_PER_TILE, 4]},
        {"name": "detection_scores", "datatype": "FP32", "shape": [-1, DETECTIONS_PER_TILE]},
        {"name": "detection_classes", "datatype": "FP32", "shape": [-1, DETECTIONS_PER_TILE]},
        {
            "name": "detection_classes_as_text",
            "datatype": "BYTES",
            "shape": [-1, DETECTIONS_PER_TILE],
        },
        {"name": "num_detections", "datatype": "FP32", "shape": [-1]},
    ],
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    delay_s = 0.0

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        return None

    def setup(self) -> None:
        super().setup()
        # Without it, a response written in two segments waits for the client's delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self._headers_buffer.append(b"\r\n" + body)  # headers and body in one write
        self.flush_headers()

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if self.path.startswith(VERTEX_PREFIX):
            self._send(200, json.dumps(VERTEX_ENDPOINT).encode())
        elif self.path.startswith("/v1/models/"):
            body = {"model_version_status": [{"version": "1", "state": "AVAILABLE"}]}
            self._send(200, json.dumps(body).encode())
        elif self.path.startswith("/v2/models/") and self.path.endswith("/ready"):
            self._send(200, b"")
        elif self.path.startswith("/v2/models/"):
            self._send(200, json.dumps(V2_METADATA).encode())
        else:
            self._send(404, b'{"error": "not found"}')

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        if self.path == "/token":
            self._send(200, json.dumps(TOKEN_ANSWER).encode())
        elif self.path.startswith(VERTEX_PREFIX) and self.path.endswith(":predict"):
            if self.headers.get("Authorization") != "Bearer " + VERTEX_TOKEN:
                self._send(401, b'{"error": {"code": 401, "status": "UNAUTHENTICATED"}}')
                return
            answer = vertex_answer(data.count(b'"content"'))
            if self.delay_s:
                time.sleep(self.delay_s)
            self._send(200, answer)
        elif self.path.endswith(":predict"):
            n = data.count(b'"b64"')
            if self.delay_s:
                time.sleep(self.delay_s)
            preds = [_prediction(f"tile-{i}") for i in range(n)]
            self._send(200, json.dumps({"predictions": preds}).encode())
        elif self.path.startswith("/v2/models/") and self.path.endswith("/infer"):
            try:
                n, names, request_id = v2_request(data, self.headers.get(V2_HEADER_LENGTH))
                answer = v2_answer(n, names, request_id)
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                self._send(400, json.dumps({"error": str(exc)}).encode())
                return
            if self.delay_s:
                time.sleep(self.delay_s)
            self._send(200, answer)
        else:
            self._send(404, b'{"error": "not found"}')


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    args = ap.parse_args(argv)
    handler = type("Handler", (_Handler,), {"delay_s": args.delay_ms / 1000.0})
    server = _Server(("127.0.0.1", args.port), handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
