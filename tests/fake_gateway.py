"""A small HTTP server that answers as a gateway would, for the command line's tests: the
service from a dict, each POST from a function of the test's, every POST path kept so a
test can assert exactly what a batch sent.  A thread of the test's process, not a process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Answer = tuple[int, dict, dict[str, str]]


class FakeGateway:
    """Serves ``GET /v1/services/{s}`` from ``service`` and POSTs from ``answer``."""

    def __init__(self, service: dict, answer: Callable[[str, int], Answer]) -> None:
        self.service, self.answer = service, answer
        self.posts: list[str] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path == f"/v1/services/{fake.service['name']}":
                    self._send(200, fake.service, {})
                else:
                    self._send(404, {"error": "unknown service", "code": "unknown_service"}, {})

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with fake.lock:
                    fake.posts.append(self.path)
                    n = len(fake.posts)
                self._send(*fake.answer(self.path + " " + body.decode(), n))

            def _send(self, status: int, doc: dict, headers: dict[str, str]) -> None:
                data = json.dumps({"request_id": "r1", **doc}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll: close() waits for serve_forever to notice.
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
