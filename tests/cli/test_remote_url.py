"""``--url`` as a deployment names it: a Cloud Functions URL has the function's name as its
path, which every request keeps; a URL without a scheme is plain HTTP (a local gateway);
any other scheme than http(s) is a usage error."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fake_gateway import FakeGateway

from gateway.cli import detect


def test_the_urls_path_prefixes_every_request(tmp_path, capsys):
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._send({"name": "eos", "kind": "detection"})

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            doc = {"count": 2, "detections": [], "image": {"width": 8, "height": 6}}
            self._send({**doc, "threshold": 0.5})

        def _send(self, doc: dict) -> None:
            seen.append(f"{self.command} {self.path}")
            data = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        slide = tmp_path / "a.jpg"
        slide.write_bytes(b"a")
        url = f"http://127.0.0.1:{server.server_address[1]}/eos-gateway/"
        assert detect.main([str(slide), "--url", url, "--json"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert json.loads(capsys.readouterr().out)["slides"][0]["count"] == 2
    assert seen == [
        "GET /eos-gateway/v1/services/eos",
        "POST /eos-gateway/v1/services/eos:detect",
    ]


def test_a_url_that_is_not_http_is_a_usage_error(tmp_path, capsys):
    slide = tmp_path / "a.jpg"
    slide.write_bytes(b"a")
    assert detect.main([str(slide), "--url", "ftp://example.org/gateway"]) == 2
    assert "not an http(s) URL" in capsys.readouterr().err


def test_a_url_without_a_scheme_is_plain_http(tmp_path, capsys):
    def answer(request: str, n: int):
        doc = {"count": 1, "detections": [], "image": {"width": 8, "height": 6}}
        return 200, {**doc, "threshold": 0.3}, {}

    fake = FakeGateway({"name": "eos"}, answer)
    try:
        slide = tmp_path / "a.jpg"
        slide.write_bytes(b"a")
        bare = fake.url.removeprefix("http://")
        assert detect.main([str(slide), "--url", bare, "--json"]) == 0
    finally:
        fake.close()
    doc = json.loads(capsys.readouterr().out)
    assert doc["url"] == fake.url and doc["slides"][0]["count"] == 1
    assert fake.posts == ["/v1/services/eos:detect"]
