"""``detect --url`` refused for its credentials says what to do in the CLI's own terms
(``--api-key`` or ``GATEWAY_API_KEY``), and the variable is what the CLI sends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_gateway import Answer, FakeGateway

from gateway.cli import detect

KEY = "lab-key-0123456789abcdef"
SERVICE = {"name": "eos", "kind": "detection", "image_route": ":detect"}
COUNTED = {"count": 1, "threshold": 0.3, "image": {"width": 8, "height": 6}, "detections": []}


class KeyedGateway(FakeGateway):
    """Answers like a gateway with one API key: 401 without it, a count with it."""

    def __init__(self) -> None:
        super().__init__(SERVICE, self.keyed)

    def keyed(self, request: str, n: int) -> Answer:
        key = self.keys_seen[n - 1]
        if key == KEY:
            return 200, COUNTED, {}
        message = "invalid API key" if key else "missing credentials"
        return 401, {"error": message, "code": "unauthenticated"}, {}


@pytest.fixture
def fake() -> Iterator[KeyedGateway]:
    gateway = KeyedGateway()
    yield gateway
    gateway.close()


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
