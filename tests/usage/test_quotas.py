"""The quotas section and the policy read from it: daily images and requests per minute, per
principal or by default, every key checked."""

from __future__ import annotations

import pytest

from gateway.catalog import parse_config
from gateway.config import ConfigError
from gateway.usage.quotas import quota_policy, validate_quotas_section


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
