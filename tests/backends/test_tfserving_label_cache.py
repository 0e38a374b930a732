"""A request pinned to a label learns the label's version once, not per request."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from gateway.backends import tfserving
from gateway.backends.http_pool import Response
from gateway.backends.tfserving import TFServingBackend
from gateway.catalog import parse_config

STATUS = b'{"model_version_status": [{"version": "7", "state": "AVAILABLE"}]}'


class FakeClient:
    """The model server's answers, and the status calls counted."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(2)
        self.status_calls: list[str] = []

    def probe(self, path, deadline=None):
        self.status_calls.append(path)
        return Response(200, STATUS)

    def send(self, method, path, body, deadline, headers=None, on_status=None):
        return Response(200, b'{"predictions": []}')


def backend() -> tuple[TFServingBackend, FakeClient]:
    cfg = parse_config({"services": {"p": {"kind": "passthrough", "backend": {"url": "http://m"}}}})
    client = FakeClient()
    return TFServingBackend(cfg.services["p"], client), client  # type: ignore[arg-type]


def forward(view: TFServingBackend) -> str | None:
    return view.forward(b"{}", time.monotonic() + 5).version


def test_the_labels_version_is_asked_once_for_many_requests():
    remote, client = backend()
    try:
        versions = [forward(remote.pinned(label="stable")) for _ in range(20)]
        assert versions == ["7"] * 20
        assert client.status_calls == ["/v1/models/p/labels/stable"]
        forward(remote.pinned(label="canary"))  # another label is its own
        assert client.status_calls[-1] == "/v1/models/p/labels/canary"
        assert len(client.status_calls) == 2
    finally:
        client.executor.shutdown()


def test_the_label_is_asked_again_once_its_time_is_up(monkeypatch):
    remote, client = backend()
    try:
        forward(remote.pinned(label="stable"))
        monkeypatch.setattr(tfserving, "LABEL_RECHECK_S", 0.0)
        monkeypatch.setattr(tfserving, "VERSION_RECHECK_S", 0.0)
        forward(remote.pinned(label="stable"))
        assert len(client.status_calls) == 2  # a label can be moved to another version
    finally:
        client.executor.shutdown()


def test_labels_kept_are_bounded(monkeypatch):
    monkeypatch.setattr(tfserving, "MAX_LABELS_KEPT", 3)
    remote, client = backend()
    try:
        for i in range(10):
            forward(remote.pinned(label=f"l{i}"))
        assert len(remote._label_versions) == 3
    finally:
        client.executor.shutdown()
