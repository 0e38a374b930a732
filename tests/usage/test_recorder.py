"""The usage recorder as the gateway builds it: the Firestore library loaded only when used,
the spool flushed within a request's budget, records spooled when Firestore cannot be
reached, and a warning when Google Cloud is asked for per-instance SQLite."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import REPO

from gateway.catalog import parse_config
from gateway.context import RequestContext
from gateway.usage import build_usage
from gateway.usage.records import UsageRecord, record_from_context


@pytest.mark.process
def test_importing_the_gateway_does_not_import_firestore(tmp_path):
    """Cold start: the Firestore client library is loaded only when Firestore is used."""
    code = (
        "import sys, main, gateway.usage, gateway.rest.app\n"
        "from gateway.catalog import parse_config\n"
        "from gateway.context import RequestContext\n"
        "from gateway.usage import build_usage\n"
        "u = build_usage(parse_config({'quotas': {'default': {'daily_images': 5}}}))\n"
        "ctx = RequestContext(method='POST', path='/')\n"
        "u.begin(ctx); u.check_quota(ctx, 1); u.finish(ctx)\n"
        "assert 'google.cloud.firestore' not in sys.modules, 'imported firestore'\n"
        "print('ok')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
    assert (tmp_path / ".gateway" / "usage.sqlite3").exists()


class SlowStore:
    """A Firestore stand-in whose every commit takes ``delay_s``."""

    name, where = "slow", "slow:"

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.committed: list[str] = []

    def warm(self) -> None:
        pass

    def commit(self, record: UsageRecord, *, spooled: bool = False) -> bool:
        import time

        time.sleep(self.delay_s)
        self.committed.append(record.request_id)
        return True


def test_a_request_flushes_only_what_fits_its_budget(tmp_path):
    """The request that flushes the spool waits for it, so it sends what fits in
    ``usage.flush_budget_s`` (here 0.1 s, commits of 0.05 s: at most three start) and the
    next requests send the rest, each record once."""
    raw = {
        "usage": {
            "firestore": {"project": "p"},
            "spool_path": str(tmp_path / "spool.sqlite3"),
            "flush_budget_s": 0.1,
        }
    }
    recorder = build_usage(parse_config(raw))
    assert recorder.settings.flush_budget_s == 0.1 and recorder.settings.flush_batch == 20
    store = SlowStore(0.05)
    recorder.delivery.store = store
    ids = []
    for _ in range(12):
        ctx = RequestContext(method="POST", path="/v1/services/eos:detect")
        ctx.principal, ctx.service, ctx.status = "key:lab", "eos", 200
        recorder.spool.add(record_from_context(ctx))
        ids.append(ctx.request_id)
    sent = []
    while recorder.spool.pending():
        before = len(store.committed)
        recorder.delivery.warm_and_flush()  # what each request's begin() starts
        sent.append(len(store.committed) - before)
        assert len(sent) <= 12
    assert all(1 <= n <= 3 for n in sent), sent
    assert sorted(store.committed) == sorted(ids)


def test_on_google_cloud_without_credentials_requests_are_served_and_spooled(
    tmp_path, monkeypatch, capsys
):
    """Firestore is the default there; when the runtime has no usable credentials the
    store is unavailable: requests are served, quotas fail open, records are spooled."""
    from usage_helpers import serve

    monkeypatch.setenv("K_SERVICE", "gateway")
    for name in ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "FIRESTORE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    raw = {
        "usage": {"spool_path": str(tmp_path / "spool.sqlite3")},
        "quotas": {"default": {"daily_images": 5, "requests_per_minute": 10}},
    }
    recorder = build_usage(parse_config(raw))
    assert recorder.store.name == "Firestore"
    assert [serve(recorder, principal="key:x").status for _ in range(3)] == [200, 200, 200]
    assert recorder.spool.pending() == 3
    assert "usage: record not written to Firestore; spooled" in capsys.readouterr().out


def test_sqlite_asked_for_on_google_cloud_is_a_warning_at_start(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("K_SERVICE", "gateway")
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    raw = {"usage": {"store": "sqlite", "sqlite": {"path": str(tmp_path / "u.sqlite3")}}}
    recorder = build_usage(parse_config(raw))
    assert recorder.store.name == "SQLite"
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [x["severity"] for x in lines] == ["WARNING"]
    assert "kept per instance" in lines[0]["message"]
    build_usage(parse_config({"usage": {"sqlite": {"path": str(tmp_path / "v.sqlite3")}}}))
    monkeypatch.delenv("K_SERVICE")
    build_usage(parse_config(raw))
    assert capsys.readouterr().out == ""  # Firestore on Cloud, or SQLite off Cloud: no warning
