"""The configuration is checked whole: unknown keys and values of the wrong type anywhere
in the file stop the start with a message naming the key and its place."""

from __future__ import annotations

import pytest
from helpers import REPO

from gateway import kinds
from gateway.catalog import load_config, parse_config
from gateway.config import ConfigError
from gateway.runtime import check_sections

URL = "http://127.0.0.1:8501"


def check(raw: dict) -> None:
    check_sections(parse_config(raw))


@pytest.mark.parametrize(
    "raw,named",
    [
        ({"service": {}}, "'service' at the top level"),
        ({"services": {"eos": {"kinds": "detection"}}}, "'kinds' in services.eos"),
        ({"services": {"eos": {"treshold": 0.4}}}, "'treshold' in services.eos"),
        ({"services": {"eos": {"tile": {"widht": 960}}}}, "'widht' in services.eos.tile"),
        ({"services": {"eos": {"backend": {"timeout": 3}}}}, "'timeout' in services.eos.backend"),
        ({"limits": {"max_pixel": 10}}, "'max_pixel' in limits"),
        ({"auth": {"api_key": []}}, "'api_key' in auth"),
        ({"auth": {"firebase": {"project": "p"}}}, "'project' in auth.firebase"),
        ({"auth": {"api_keys": [{"id": "a", "sha": "b"}]}}, "'sha' in auth.api_keys[0]"),
        ({"cors": {"origin": ["https://a.example"]}}, "'origin' in cors"),
        ({"usage": {"firestore": {"projet": "p"}}}, "'projet' in usage.firestore"),
        ({"usage": {"enable": False}}, "'enable' in usage"),
        ({"quotas": {"default": {"daily_image": 3}}}, "'daily_image' in quotas.default"),
        ({"quotas": {"principals": {"key:a": {"daily": 3}}}}, "'daily' in quotas.principals.key:a"),
    ],
)
def test_unknown_keys_are_named_with_their_place(raw, named):
    with pytest.raises(ConfigError) as info:
        check(raw)
    assert f"unknown key {named}" in str(info.value)


@pytest.mark.parametrize(
    "raw,where",
    [
        ({"services": {"eos": {"threshold": "high"}}}, "services.eos.threshold"),
        ({"services": {"eos": {"tile": {"width": "960"}}}}, "services.eos.tile.width"),
        ({"services": {"eos": {"backend": {"timeout_s": "30"}}}}, "services.eos.backend.timeout_s"),
        ({"services": {"eos": {"backend": {"max_batch": 2.5}}}}, "services.eos.backend.max_batch"),
        ({"services": {"eos": {"allow": "key:a"}}}, "services.eos.allow"),
        ({"services": {"eos": {"labels": [1]}}}, "services.eos.labels[0]"),
        ({"services": ["eos"]}, "services"),
        ({"limits": {"max_pixels": True}}, "limits.max_pixels"),
        ({"demo": "yes"}, "demo"),
        ({"auth": {"required": "yes"}}, "auth.required"),
        ({"auth": {"google": {"audiences": "https://a"}}}, "auth.google.audiences"),
        ({"cors": {"origins": "https://a.example"}}, "cors.origins"),
        ({"usage": {"enabled": "no"}}, "usage.enabled"),
        ({"usage": {"firestore": {"write_timeout_s": "2"}}}, "usage.firestore.write_timeout_s"),
        ({"quotas": {"default": {"daily_images": "500"}}}, "quotas.default.daily_images"),
        ({"quotas": {"principals": []}}, "quotas.principals"),
    ],
)
def test_values_of_the_wrong_type_are_named(raw, where):
    with pytest.raises(ConfigError) as info:
        check(raw)
    assert str(info.value).startswith(f"{where} must be"), str(info.value)


def test_kinds():
    cfg = parse_config(
        {
            "services": {
                "eos": {},
                "cls": {
                    "kind": "classification",
                    "backend": {"url": URL},
                    "max_side": 512,
                    "labels": ["a", "b"],
                },
                "any": {"kind": "passthrough", "backend": {"url": URL, "model": "m"}},
            }
        }
    )
    assert [s.kind for s in cfg.services.values()] == ["detection", "classification", "passthrough"]
    assert cfg.services["cls"].options.max_side == 512 and cfg.services["cls"].labels == ("a", "b")
    assert (
        parse_config({"services": {"c": {"kind": "classification", "backend": {"url": URL}}}})
        .services["c"]
        .labels
        == ()
    )
    public = {
        **cfg.services["any"].public(),
        **kinds.get("passthrough").public(cfg.services["any"]),
    }
    assert public["kind"] == "passthrough" and "tile" not in public and public["labels"] == []


@pytest.mark.parametrize(
    "service,message",
    [
        (
            {"kind": "classifier"},
            "services.x.kind must be one of detection, classification, passthrough",
        ),
        ({"kind": "classification"}, "services.x.backend.url is required"),
        ({"kind": "passthrough"}, "services.x.backend.url is required"),
        (
            {"kind": "classification", "backend": {"url": URL}, "tile": {"width": 500}},
            "services.x.tile does not apply to a service of kind 'classification'",
        ),
        (
            {"kind": "passthrough", "backend": {"url": URL}, "threshold": 0.5},
            "services.x.threshold does not apply to a service of kind 'passthrough'",
        ),
        ({"max_side": 512}, "services.x.max_side does not apply to a service of kind 'detection'"),
        (
            {"kind": "classification", "backend": {"url": URL}, "max_side": 8},
            "services.x.max_side must be between",
        ),
    ],
)
def test_kind_errors(service, message):
    with pytest.raises(ConfigError) as info:
        parse_config({"services": {"x": service}})
    assert str(info.value).startswith(message), str(info.value)


def test_null_values_are_left_to_their_owner():
    """YAML writes an empty value as null: a section may be empty, a number may not."""
    check({"cors": None, "usage": {"firestore": None}, "services": {"eos": {"allow": None}}})
    with pytest.raises(ConfigError, match="services.eos.threshold must be a number"):
        check({"services": {"eos": {"threshold": None}}})


@pytest.mark.parametrize("name", ["gateway.yaml", "gateway.compose.yaml"])
def test_the_example_configurations_pass_the_whole_check(name, monkeypatch):
    monkeypatch.delenv("K_SERVICE", raising=False)
    check_sections(load_config(REPO / "deploy" / name))


NUMERIC_KEYS = [
    ("limits", "max_decoded_mb"),
    ("limits", "decode_wait_s"),
    ("services.eos", "threshold"),
    ("services.eos.backend", "timeout_s"),
    ("auth", "clock_skew_s"),
    ("auth", "api_key_cache_s"),
    ("auth", "firestore_timeout_s"),
    ("usage", "quota_cache_s"),
    ("usage", "flush_budget_s"),
    ("usage.firestore", "write_timeout_s"),
    ("usage.firestore", "read_timeout_s"),
    ("usage.firestore", "retry_after_s"),
    ("quotas.default", "daily_images"),
    ("quotas.principals.key:a", "requests_per_minute"),
]


def _nested(path: str, key: str, value: object) -> dict:
    parts = path.split(".")
    if parts[0] == "quotas" and parts[1] == "principals":  # a principal's name has a dot-free ':'
        parts = ["quotas", "principals", ".".join(parts[2:])]
    doc: dict = {key: value}
    for part in reversed(parts):
        doc = {part: doc}
    return doc


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("path,key", NUMERIC_KEYS)
def test_non_finite_numbers_stop_the_start_in_every_section(path, key, value):
    """``threshold: NaN`` passes every comparison: each section refuses it by name."""
    from gateway.auth import build_authenticator
    from gateway.usage.quotas import quota_policy
    from gateway.usage.settings import usage_settings

    raw = _nested(path, key, value)
    with pytest.raises(ConfigError) as info:
        config = parse_config(raw)
        check_sections(config)
        usage_settings(config)
        quota_policy(config)
        build_authenticator(config)
    assert f"{path}.{key} must be" in str(info.value), str(info.value)


def test_the_owned_sections_defaults_are_their_settings():
    from gateway.auth import CONFIG_SCHEMA as AUTH
    from gateway.usage.settings import CONFIG_SCHEMA as USAGE
    from gateway.usage.settings import usage_settings

    settings = usage_settings(parse_config({"usage": {"store": "sqlite"}}))
    assert settings.flush_batch == USAGE.default("flush_batch") == 20
    assert settings.counter_shards == USAGE.default("counter_shards")
    assert AUTH.default("clock_skew_s") == 10.0
