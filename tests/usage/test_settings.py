"""The usage section: where records go (Firestore or SQLite, on Google Cloud or not), the
collections' names, and every key checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.catalog import parse_config
from gateway.config import ConfigError
from gateway.usage import NullUsage, build_usage
from gateway.usage.settings import usage_settings, validate_usage_section


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
        "comparisons": "usage_comparisons",
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


def test_a_usage_file_that_cannot_be_written_stops_the_start(tmp_path):
    """Not a quota silently off: records and quotas need their file."""
    from gateway.catalog import parse_config
    from gateway.config import ConfigError
    from gateway.usage import build_usage

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for usage, key in (
        ({"store": "sqlite", "sqlite": {"path": str(blocker / "usage.sqlite3")}}, "sqlite.path"),
        ({"store": "sqlite", "sqlite": {"path": str(tmp_path)}}, "sqlite.path"),  # a folder
        (
            {
                "store": "firestore",
                "firestore": {"project": "p"},
                "spool_path": str(blocker / "deeper" / "spool.sqlite3"),
            },
            "spool_path",
        ),
    ):
        with pytest.raises(ConfigError) as info:
            build_usage(parse_config({"usage": usage}))
        assert f"usage.{key}" in str(info.value) and "cannot be written" in str(info.value)
    fine = tmp_path / "new" / "usage.sqlite3"
    build_usage(parse_config({"usage": {"store": "sqlite", "sqlite": {"path": str(fine)}}}))
    assert not fine.exists()  # checked, not created: the store creates it at first use
    assert build_usage(parse_config({"usage": {"enabled": False, "spool_path": "/proc/x"}}))
