"""The ``auth`` section together with the sections that name callers: what would run
silently wrong stops the start instead (an allow list nobody is checked against, a quota
for a key that does not exist, an ``auth`` section that admits no one)."""

from __future__ import annotations

import pytest
from helpers import sha

from gateway.catalog import parse_config
from gateway.config import ConfigError
from gateway.runtime import check_sections

KEYS = {"api_keys": [{"id": "lab-script", "sha256": sha("k1")}, {"id": "cam", "sha256": sha("k2")}]}


@pytest.fixture(autouse=True)
def no_firestore(monkeypatch):
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    monkeypatch.delenv("K_SERVICE", raising=False)


def check(raw: dict) -> None:
    check_sections(parse_config(raw))


def refused(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        check(raw)
    return str(info.value)


@pytest.mark.parametrize(
    "raw,message",
    [
        (
            {"services": {"eos": {"allow": ["key:lab-script"]}}},
            "services.eos.allow has no effect without an auth section: every caller is anonymous",
        ),
        (
            {"services": {"eos": {"allow": []}}},
            "services.eos.allow has no effect without an auth section",
        ),
        (
            {"quotas": {"principals": {"key:lab-script": {"daily_images": 5}}}},
            "quotas.principals has no effect without an auth section",
        ),
    ],
)
def test_naming_callers_without_an_auth_section_stops_the_start(raw, message):
    assert refused(raw).startswith(message)


def test_quotas_for_everyone_need_no_auth_section():
    check({"quotas": {"default": {"daily_images": 5}, "principals": {}}})


@pytest.mark.parametrize(
    "auth,message",
    [
        ({}, "auth is empty: set auth.firebase, auth.google or auth.api_keys"),
        ({"required": True}, "auth names no way to authenticate callers"),
        ({"clock_skew_s": 5}, "auth names no way to authenticate callers"),
        (
            {"api_keys_firestore": True},
            "auth.api_keys_firestore is true but no Firestore is configured",
        ),
    ],
)
def test_an_auth_section_that_admits_no_one_stops_the_start(auth, message):
    assert refused({"auth": auth}).startswith(message)


@pytest.mark.parametrize(
    "auth",
    [
        {"required": False},
        {"firebase": {"project_id": "p"}},
        {"google": {"audiences": ["https://gw.example"]}},
        KEYS,
    ],
)
def test_an_auth_section_with_a_way_in_starts(auth):
    check({"auth": auth})


def test_keys_kept_in_firestore_only_say_so():
    check({"auth": {"api_keys_firestore": True}, "usage": {"firestore": {"project": "p"}}})
    check({"auth": {"api_keys": []}, "usage": {"firestore": {"project": "p"}}})


@pytest.mark.parametrize(
    "raw,message",
    [
        (
            {"services": {"eos": {"allow": ["key:lab-scrpt"]}}},
            "services.eos.allow names 'key:lab-scrpt', but no API key has that id "
            "(auth.api_keys: lab-script, cam); did you mean 'key:lab-script'?",
        ),
        (
            {"quotas": {"principals": {"key:scanner": {"daily_images": 5}}}},
            "quotas.principals names 'key:scanner', but no API key has that id",
        ),
        (
            {"services": {"eos": {"allow": ["key:robot-*"]}}},
            "services.eos.allow names 'key:robot-*', but no API key matches it",
        ),
        (
            {"services": {"eos": {"allow": ["lab-script"]}}},
            "services.eos.allow entry 'lab-script' names no caller: principals are key:<id>, "
            "firebase:<uid>, google:<email> or anonymous; did you mean 'key:lab-script'?",
        ),
        (
            {"quotas": {"principals": {"key:lab-*": {"daily_images": 5}}}},
            "quotas.principals entry 'key:lab-*': quotas name exact principals",
        ),
    ],
)
def test_a_principal_no_key_or_caller_can_be_stops_the_start(raw, message):
    assert refused({**raw, "auth": KEYS}).startswith(message)


def test_principals_that_exist_or_match_start():
    check(
        {
            "auth": {**KEYS, "firebase": {"project_id": "p"}},
            "services": {
                "eos": {"allow": ["key:lab-script", "key:c*", "firebase:*", "google:*", "*"]},
                "open": {"allow": ["anonymous", "key:*"]},
            },
            "quotas": {"principals": {"key:cam": {"daily_images": 5}, "firebase:uid1": {}}},
        }
    )


def test_key_ids_that_may_be_in_firestore_are_a_warning_not_an_error(capsys):
    check(
        {
            "auth": KEYS,
            "usage": {"firestore": {"project": "p"}},
            "services": {"eos": {"allow": ["key:kept-in-firestore"]}},
        }
    )
    out = capsys.readouterr().out
    assert "WARNING" in out and "key:kept-in-firestore" in out and "api_keys collection" in out
