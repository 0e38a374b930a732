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


# -- a key at the wrong indentation -------------------------------------------------------


@pytest.mark.parametrize(
    "raw,message",
    [
        (
            {"threshold": 0.3},
            "unknown key 'threshold' at the top level: is it indented under a service?",
        ),
        (
            {"max_pixels": 10},
            "unknown key 'max_pixels' at the top level: is it indented under limits?",
        ),
        ({"origins": ["https://a.example"]}, "is it indented under cors?"),
        (
            {"url": URL},
            "unknown key 'url' at the top level: is it indented under a service's backend?",
        ),
        (
            {"services": {"eos": {"url": URL}}},
            "unknown key 'url' in services.eos: is it indented under services.eos.backend?",
        ),
        (
            {"services": {"eos": {"backend": {"threshold": 0.3}}}},
            "unknown key 'threshold' in services.eos.backend: is it indented under services.eos?",
        ),
        (
            {"services": {"eos": {"limits": {"max_pixels": 10}}}},
            "unknown key 'limits' in services.eos: is it meant at the top level, not indented?",
        ),
        (
            {"auth": {"project_id": "p"}},
            "unknown key 'project_id' in auth: is it indented under auth.firebase?",
        ),
        (
            {"quotas": {"daily_images": 3}},
            "is it indented under quotas.default or an entry of quotas.principals?",
        ),
        (
            {"services": {"eos": {}, "threshold": 0.3}},
            "services.threshold cannot be a service: 'threshold' is a service's key; "
            "is it meant to be indented under a service?",
        ),
        (
            {"services": {"eos": {}, "backend": {"url": URL}}},
            "'backend' is a service's key; is it meant to be indented under a service?",
        ),
        (
            {"services": {"eos": {}, "cell_size_px": None}},
            "services.cell_size_px cannot be a service",
        ),
    ],
)
def test_a_dedented_key_is_reported_as_the_indentation_mistake_it_is(raw, message):
    with pytest.raises(ConfigError) as info:
        check(raw)
    assert message in str(info.value), str(info.value)


def test_a_key_known_nowhere_still_lists_the_keys_of_its_place():
    with pytest.raises(ConfigError) as info:
        check({"services": {"eos": {"treshold": 0.3}}})
    assert "(known keys: " in str(info.value) and "threshold" in str(info.value)


def test_a_key_of_another_protocol_names_that_protocol():
    with pytest.raises(ConfigError) as info:
        check({"services": {"eos": {"backend": {"url": URL, "project": "p"}}}})
    assert "it is a key of protocol 'vertex'" in str(info.value)
    assert "usage.firestore" not in str(info.value)  # not sent looking elsewhere


# -- outbound credentials that would be ignored -------------------------------------------

VERTEX = {"protocol": "vertex", "project": "p", "location": "europe-west4", "endpoint": "1"}


@pytest.mark.parametrize(
    "backend,message",
    [
        (
            {**VERTEX, "auth": "google-id-token"},
            "services.x.backend.auth 'google-id-token' does not apply to protocol 'vertex': its "
            "requests carry an OAuth 2.0 access token",
        ),
        (
            {"auth": "google-id-token"},
            "services.x.backend.auth does not apply to the embedded detector",
        ),
        (
            {"credentials_file": "sa.json"},
            "services.x.backend.credentials_file does not apply to the embedded detector",
        ),
        (
            {"url": URL, "credentials_file": "sa.json"},
            "services.x.backend.credentials_file is used only with auth: google-id-token",
        ),
    ],
)
def test_outbound_credentials_that_would_be_ignored_stop_the_start(backend, message):
    with pytest.raises(ConfigError) as info:
        parse_config({"services": {"x": {"backend": backend}}})
    assert str(info.value).startswith(message), str(info.value)


def test_outbound_credentials_where_they_are_used():
    cfg = parse_config(
        {
            "services": {
                "vx": {"backend": {**VERTEX, "credentials_file": "sa.json", "auth": "none"}},
                "run": {
                    "backend": {"url": URL, "auth": "google-id-token", "credentials_file": "k"}
                },
            }
        }
    )
    assert cfg.services["vx"].backend.credentials_file == "sa.json"
    assert cfg.services["vx"].backend.auth is None
    assert cfg.services["run"].backend.auth == "google-id-token"


# -- the file: its syntax errors name the file and the line once ------------------------


def test_a_yaml_error_names_the_file_and_the_line_once(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "services:\n  eos:\n    backend:\n      url: http://127.0.0.1:8501\n     model: eos\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}, line 5, column 6: invalid YAML: ")
    assert message.count(str(path)) == 1 and message.count("line 5") == 1, message
    assert "<unicode string>" not in message and "\n" not in message
    assert "not indented like the block that starts on line 3" in message


def test_a_json_error_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "gateway.json"
    path.write_text('{"services": {\n  "eos": {},\n}}')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}, line 3, column 1: invalid JSON: ")


def test_a_missing_file_is_named_once(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: the GATEWAY_CONFIG file cannot be read: " + (
        "No such file or directory"
    )


# -- the start log's view of a backend ----------------------------------------------------


def test_a_backend_is_shown_by_protocol_and_host_never_its_secrets():
    cfg = parse_config(
        {
            "services": {
                "eos": {},
                "tfs": {"backend": {"url": "https://user:pw@models.example:8443/base?token=t"}},
                "v6": {"backend": {"protocol": "v2", "url": "http://[::1]:8000"}},
                "vx": {"backend": VERTEX},
            }
        }
    )
    shown = {name: svc.backend.address for name, svc in cfg.services.items()}
    assert shown == {
        "eos": "the embedded detector",
        "tfs": "tfserving https://models.example:8443",
        "v6": "v2 http://[::1]:8000",
        "vx": "vertex https://europe-west4-aiplatform.googleapis.com",
    }


# -- the README's complete example -----------------------------------------------------------


def readme_configuration() -> str:
    """The YAML block under the README's "## Configuration", as a reader would paste it."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Configuration\n") :]
    block = section[section.index("```yaml\n") + len("```yaml\n") :]
    return block[: block.index("```")]


def test_the_readmes_complete_example_is_valid_as_pasted(tmp_path, monkeypatch):
    monkeypatch.delenv("K_SERVICE", raising=False)
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    path = tmp_path / "gateway.yaml"
    path.write_text(readme_configuration())
    cfg = load_config(path)
    check_sections(cfg)
    kinds_of = {name: svc.kind for name, svc in cfg.services.items()}
    assert {"detection", "classification", "passthrough"} <= set(kinds_of.values())
    assert cfg.auth and cfg.quotas["principals"] and cfg.services["eos"].allow
