"""A TF Serving-compatible stub model for benchmarks: answers ``:predict`` after a set delay.

It does no image work, so what is measured is the gateway, not a model.  Calls are
served concurrently (one thread per connection, HTTP/1.1 keep-alive), like TF Serving
with batching off.  Each instance gets the same small set of boxes, enough to exercise the
gateway's answer parsing and merge.

    .venv/bin/python -m bench.stub_backend --port 8601 --delay-ms 200
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DETECTIONS_PER_TILE = 12


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
        if self.path.startswith("/v1/models/"):
            body = {"model_version_status": [{"version": "1", "state": "AVAILABLE"}]}
            self._send(200, json.dumps(body).encode())
        else:
            self._send(404, b'{"error": "not found"}')

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        if not self.path.endswith(":predict"):
            self._send(404, b'{"error": "not found"}')
            return
        n = data.count(b'"b64"')
        if self.delay_s:
            time.sleep(self.delay_s)
        preds = [_prediction(f"tile-{i}") for i in range(n)]
        self._send(200, json.dumps({"predictions": preds}).encode())


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
