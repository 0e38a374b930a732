"""Usage building blocks: ids, days, configuration, quotas policy, report arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import REPO

from gateway.config import ConfigError, parse_config
from gateway.context import RequestContext
from gateway.usage import NullUsage, build_usage
from gateway.usage.quotas import quota_policy, validate_quotas_section
from gateway.usage.records import (
    UsageRecord,
    daily_doc_id,
    escape_id_part,
    ledger_id,
    quota_doc_id,
    record_from_context,
    seconds_until_utc_day_end,
)
from gateway.usage.report import percentile, summarize
from gateway.usage.settings import usage_settings, validate_usage_section


@pytest.mark.parametrize(
    "principal",
    ["anonymous", "key:lab-script", "firebase:Ab12Cd", "google:svc@proj.iam.gserviceaccount.com"],
)
def test_ordinary_principals_are_readable_in_doc_ids(principal):
    assert daily_doc_id(principal, "eos", "2025-03-01") == f"{principal}__eos__2025-03-01"


@pytest.mark.parametrize(
    "principal",
    ["google:a/b@x.com", "key:__x__", "firebase:u_1", "key:%2F", "key:ü/é", "__", ".", ".."],
)
def test_escaped_doc_ids_are_valid_and_unambiguous(principal):
    doc_id = daily_doc_id(principal, "my_service", "2025-03-01")
    assert "/" not in doc_id
    assert doc_id.count("__") == 2  # only the two separators
    assert doc_id not in (".", "..")
    assert not (doc_id.startswith("__") and doc_id.endswith("__"))
    assert len(doc_id.encode()) <= 1500


def test_escaping_is_injective_on_tricky_pairs():
    pairs = [("a_", "a%5F"), ("a/b", "a%2Fb"), ("a__b", "a_%5Fb")]
    for left, right in pairs:
        assert escape_id_part(left) != escape_id_part(right)


def test_very_long_principals_get_a_hashed_id():
    doc_id = daily_doc_id("key:" + "x" * 2000, "eos", "2025-03-01")
    assert doc_id.startswith("sha256-") and doc_id.endswith("__2025-03-01")
    assert len(doc_id) < 100


def test_retry_after_counts_to_the_next_utc_midnight():
    assert seconds_until_utc_day_end(datetime(2025, 3, 1, 23, 59, 30, tzinfo=UTC)) == 30
    assert seconds_until_utc_day_end(datetime(2025, 3, 1, 0, 0, 0, tzinfo=UTC)) == 86400
    assert seconds_until_utc_day_end(datetime(2025, 3, 1, 23, 59, 59, 900000, tzinfo=UTC)) == 1


def test_record_from_a_failed_request_keeps_what_was_known():
    ctx = RequestContext(method="POST", path="/v1/services/eos:detect")
    ctx.route, ctx.service, ctx.principal, ctx.auth_method = "detect", "eos", "key:a", "api_key"
    ctx.instances, ctx.image = 2, {"bytes": 10, "width": None, "height": None, "format": None}
    ctx.status, ctx.error_code = 422, "undecodable_image"
    rec = record_from_context(ctx, now=datetime(2025, 3, 1, 12, tzinfo=UTC))
    assert rec.day == "2025-03-01"
    assert rec.daily_id == "key:a__eos__2025-03-01"
    assert rec.fields["status"] == 422 and rec.fields["error_code"] == "undecodable_image"
    assert rec.fields["image"] == {"bytes": 10, "width": None, "height": None, "format": None}
    assert rec.fields["instances"] == 2 and rec.fields["images"] == 0
    assert rec.increments == {"requests": 1, "errors": 1, "images": 0, "tiles": 0, "detections": 0}
    assert UsageRecord.from_json(rec.to_json()) == rec


def test_unknown_service_and_principal_fall_back_to_placeholders():
    ctx = RequestContext(method="POST", path="/x")
    ctx.principal, ctx.service, ctx.status = "", None, 401
    rec = record_from_context(ctx)
    assert (rec.principal, rec.service) == ("anonymous", "-")


def test_quota_policy_parsing():
    assert not quota_policy(parse_config({})).enabled
    policy = quota_policy(
        parse_config(
            {
                "quotas": {
                    "default": {"daily_images": 500},
                    "principals": {"key:lab-script": {"daily_images": 5000}, "key:free": {}},
                }
            }
        )
    )
    assert policy.enabled
    assert policy.configured_limit("key:lab-script") == 5000
    assert policy.configured_limit("key:free") is None
    assert policy.configured_limit("anonymous") == 500
    assert quota_policy(parse_config({"quotas": {}})).configured_limit("x") is None
    for bad in (
        {"default": {"daily_images": -1}},
        {"default": {"images": 3}},
        {"principals": {"k": 5}},
        {"weekly": {}},
    ):
        with pytest.raises(ConfigError):
            quota_policy(parse_config({"quotas": bad}))


def test_usage_settings(monkeypatch):
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    monkeypatch.delenv("K_SERVICE", raising=False)
    s = usage_settings(parse_config({}))
    assert s.firestore is None
    assert s.sqlite_path == Path(".gateway/usage.sqlite3")
    assert s.collections == {
        "usage": "usage",
        "usage_daily": "usage_daily",
        "quotas": "quotas",
        "allowances": "usage_allowances",
    }
    assert s.counter_shards == 10
    s = usage_settings(
        parse_config({"usage": {"collection_prefix": "lab_", "firestore": {"project": "p"}}})
    )
    assert s.firestore == ("p", "(default)")
    assert s.collections["usage_daily"] == "lab_usage_daily"
    monkeypatch.setenv("K_SERVICE", "gateway")
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("GCLOUD_PROJECT", raising=False)
    s = usage_settings(parse_config({}))
    assert str(s.spool_path).startswith("/tmp/") and str(s.sqlite_path).startswith("/tmp/")
    # On Google Cloud usage goes to the project's Firestore unless the config says otherwise
    assert s.firestore == ("", "(default)") and not s.per_instance_on_cloud
    s = usage_settings(parse_config({"usage": {"store": "sqlite"}}))
    assert s.firestore is None and s.per_instance_on_cloud
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:1")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "emu")
    assert usage_settings(parse_config({})).firestore == ("emu", "(default)")
    for bad in ({"collection_prefix": "a/b"}, {"firestore": {"write_timeout_s": 0}}):
        with pytest.raises(ConfigError):
            usage_settings(parse_config({"usage": bad}))
    monkeypatch.delenv("K_SERVICE")
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST")
    with pytest.raises(ConfigError, match="usage.store is firestore"):
        usage_settings(parse_config({"usage": {"store": "firestore"}}))
    assert isinstance(build_usage(parse_config({"usage": {"enabled": False}})), NullUsage)


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ({"counter_shard": 4}, "'counter_shard' in usage"),
        ({"firestore": {"projet": "p"}}, "'projet' in usage.firestore"),
        ({"sqlite": {"file": "x"}}, "'file' in usage.sqlite"),
        ({"counter_shards": 0}, "usage.counter_shards"),
        ({"counter_shards": "10"}, "usage.counter_shards"),
        ({"store": "redis"}, "usage.store"),
        ({"enabled": "yes"}, "usage.enabled"),
        ({"firestore": {"project": 5}}, "usage.firestore.project"),
        ({"spool_path": 3}, "usage.spool_path"),
        ({"flush_batch": 0}, "usage.flush_batch"),
        ({"firestore": []}, "usage.firestore"),
    ],
)
def test_usage_section_is_strict(section, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        validate_usage_section(section)


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ({"weekly": {}}, "'weekly' in quotas"),
        ({"default": {"images": 3}}, "'images' in quotas.default"),
        ({"principals": {"key:a": {"requests_per_minute": -1}}}, "quotas.principals.key:a"),
        ({"principals": {"key:a": {"requests_per_minute": 1.5}}}, "requests_per_minute"),
        ({"principals": ["key:a"]}, "quotas.principals"),
        ([], "quotas"),
    ],
)
def test_quotas_section_is_strict(section, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        validate_quotas_section(section)


def test_request_rates_per_principal():
    policy = validate_quotas_section(
        {
            "default": {"daily_images": 500, "requests_per_minute": 60},
            "principals": {"key:batch": {"requests_per_minute": 600}, "key:free": {}},
        }
    )
    assert policy.requests_per_minute("anonymous") == 60
    assert policy.requests_per_minute("key:batch") == 600
    assert policy.configured_limit("key:batch") is None  # an entry replaces the default
    assert policy.requests_per_minute("key:free") is None


def test_long_principals_keep_one_key_for_records_and_quotas():
    principal = "google:" + "x" * 5000 + "@example.com"
    ctx = RequestContext(method="POST", path="/")
    ctx.principal, ctx.service = principal, "eos"
    rec = record_from_context(ctx)
    assert rec.principal == principal and rec.fields["principal"] == principal
    for doc_id in (rec.daily_id, quota_doc_id(principal), ledger_id(principal, "images", "d")):
        assert len(doc_id.encode()) <= 1500
    assert quota_doc_id(principal) != quota_doc_id(principal + "y")
    assert ledger_id(principal, "images", "d") != ledger_id(principal + "y", "images", "d")


def test_percentile_and_summary():
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    rows = summarize(
        [
            {"day": "d", "principal": "p", "service": "s", "status": 200, "images": 2,
             "detections": 7, "latency_ms": {"total": 10.0}},
            {"day": "d", "principal": "p", "service": "s", "status": 503, "images": 0,
             "detections": 0, "latency_ms": {"total": 30.0}},
        ]
    )  # fmt: skip
    assert rows == [
        {"day": "d", "principal": "p", "service": "s", "requests": 2, "images": 2,
         "detections": 7, "errors": 1, "p50_ms": 10.0, "p95_ms": 30.0}
    ]  # fmt: skip


def test_importing_the_gateway_does_not_import_firestore(tmp_path):
    """Cold start: the Firestore client library is loaded only when Firestore is used."""
    code = (
        "import sys, main, gateway.usage, gateway.rest.app\n"
        "from gateway.config import parse_config\n"
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
