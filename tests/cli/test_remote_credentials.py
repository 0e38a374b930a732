"""``detect --url`` refused for its credentials says what to do in the CLI's own terms
(``--api-key`` or ``GATEWAY_API_KEY``), and the variable is what the CLI sends."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gateway.cli import detect

KEY = "lab-key-0123456789abcdef"
SERVICE = {"name": "eos", "kind": "detection", "image_route": ":detect"}
COUNTED = {"count": 1, "threshold": 0.3, "image": {"width": 8, "height": 6}, "detections": []}


class KeyedGateway:
    """Answers like a gateway with one API key: 401 without it, a count with it."""

    def __init__(self) -> None:
        self.keys_seen: list[str | None] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self._send(200, SERVICE)

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers.get("X-API-Key")
                fake.keys_seen.append(key)
                if key == KEY:
                    self._send(200, COUNTED)
                else:
                    message = "invalid API key" if key else "missing credentials"
                    self._send(401, {"error": message, "code": "unauthenticated"})

            def _send(self, status: int, doc: dict) -> None:
                data = json.dumps({"request_id": "r1", **doc}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()


@pytest.fixture
def fake() -> Iterator[KeyedGateway]:
    gw = KeyedGateway()
    yield gw
    gw.server.shutdown()
    gw.server.server_close()


@pytest.fixture
def slide(tmp_path: Path) -> Path:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"a")  # the fake gateway decodes nothing
    return path


def test_without_credentials_the_cli_names_its_flag_and_variable(
    fake, slide, monkeypatch, capsys
) -> None:
    monkeypatch.delenv("GATEWAY_API_KEY", raising=False)
    assert detect.main([str(slide), "--url", fake.url, "--json"]) != 0
    out, err = capsys.readouterr()
    error = json.loads(out)["slides"][0]["error"]
    assert "missing credentials" in error
    assert "--api-key" in error and "GATEWAY_API_KEY" in error
    assert fake.keys_seen == [None]


def test_a_refused_key_is_called_refused(fake, slide, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GATEWAY_API_KEY", "not-the-key")
    assert detect.main([str(slide), "--url", fake.url, "--json"]) != 0
    error = json.loads(capsys.readouterr().out)["slides"][0]["error"]
    assert "API key was refused" in error and "GATEWAY_API_KEY" in error


def test_the_variable_is_the_key_sent(fake, slide, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GATEWAY_API_KEY", KEY)
    assert detect.main([str(slide), "--url", fake.url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["slides"][0]["count"] == 1
    assert fake.keys_seen == [KEY]


def test_the_flag_wins_over_the_variable(fake, slide, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GATEWAY_API_KEY", "not-the-key")
    assert detect.main([str(slide), "--url", fake.url, "--api-key", KEY, "--json"]) == 0
    assert fake.keys_seen == [KEY]
