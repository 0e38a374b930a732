"""Routing a caller to a variant: shares within statistical bounds, stickiness, minimal
movement when a variant is skipped, pinned callers, the shadow's share."""

from __future__ import annotations

import math

import pytest

from gateway.catalog import parse_config
from gateway.config import BackendConfig, ConfigError, ShadowConfig, VariantConfig
from gateway.variants import route, shadow_due, unit_hash

PRINCIPALS = [f"firebase:user-{i}" for i in range(4000)]


def variants(**weights: float) -> tuple[VariantConfig, ...]:
    return tuple(VariantConfig(n, BackendConfig(), w) for n, w in weights.items())


def within(observed: int, n: int, p: float) -> bool:
    """Inside 4.5 standard deviations of a binomial(n, p): false about once in 150,000."""
    return abs(observed - n * p) <= 4.5 * math.sqrt(n * p * (1 - p))


def test_shares_follow_the_weights():
    vs = variants(current=90, candidate=10)
    chosen = [route("eos", vs, p, "r") for p in PRINCIPALS]
    assert within(chosen.count("candidate"), len(PRINCIPALS), 0.1)
    vs3 = variants(a=1, b=2, c=1)
    chosen = [route("eos", vs3, p, "r") for p in PRINCIPALS]
    assert within(chosen.count("b"), len(PRINCIPALS), 0.5)
    assert within(chosen.count("a"), len(PRINCIPALS), 0.25)


def test_the_same_caller_keeps_its_variant_while_the_weights_stay():
    vs = variants(current=50, candidate=50)
    first = {p: route("eos", vs, p, "r1") for p in PRINCIPALS[:500]}
    again = {p: route("eos", vs, p, f"r{i}") for i, p in enumerate(PRINCIPALS[:500])}
    assert first == again
    # each service routes its callers on its own
    other = {p: route("tissue", vs, p, "r1") for p in PRINCIPALS[:500]}
    assert other != first


def test_a_skipped_variant_moves_only_its_own_callers():
    vs = variants(a=1, b=1, c=1)
    before = {p: route("eos", vs, p, "r") for p in PRINCIPALS}
    after = {p: route("eos", vs, p, "r", ready=lambda n: n != "c") for p in PRINCIPALS}
    assert all(after[p] == before[p] for p in PRINCIPALS if before[p] != "c")
    assert {after[p] for p in PRINCIPALS if before[p] == "c"} == {"a", "b"}


def test_raising_a_weight_only_moves_callers_towards_it():
    before = {p: route("eos", variants(current=95, candidate=5), p, "r") for p in PRINCIPALS}
    after = {p: route("eos", variants(current=80, candidate=20), p, "r") for p in PRINCIPALS}
    assert all(after[p] == "candidate" for p in PRINCIPALS if before[p] == "candidate")


def test_without_an_identity_requests_are_routed_one_by_one():
    vs = variants(current=50, candidate=50)
    chosen = [route("eos", vs, None, f"request-{i}") for i in range(2000)]
    assert within(chosen.count("candidate"), 2000, 0.5)


def test_allow_pins_named_callers():
    vs = (
        VariantConfig("current", BackendConfig(), 1.0),
        VariantConfig("candidate", BackendConfig(), 0.0, allow=("key:validation-*",)),
    )
    assert route("eos", vs, "key:validation-team", "r") == "candidate"
    assert {route("eos", vs, p, "r") for p in PRINCIPALS[:200]} == {"current"}


def test_the_shadow_sees_its_share_and_never_its_own_requests():
    shadow = ShadowConfig("candidate", share=0.25)
    due = [shadow_due(shadow, "current", f"request-{i}") for i in range(4000)]
    assert within(sum(due), 4000, 0.25)
    assert not any(shadow_due(shadow, "candidate", f"request-{i}") for i in range(100))
    assert 0 < unit_hash("x") < 1


def test_variants_are_read_from_the_configuration():
    raw = {
        "services": {
            "eos": {
                "backend": {"url": "http://models:8501", "model": "eos", "timeout_s": 12},
                "variants": {
                    "stable": {"label": "stable", "weight": 9},
                    "canary": {"version": 2, "weight": 1, "allow": ["key:lab"]},
                    "v2server": {
                        "protocol": "v2",
                        "url": "http://triton:8000",
                        "model": "cells",
                        "weight": 0,
                    },
                },
                "shadow": {"variant": "v2server", "share": 0.5, "max_wait_ms": 800},
            }
        }
    }
    svc = parse_config(raw).services["eos"]
    stable, canary, v2 = svc.variants
    assert (stable.label, stable.weight, stable.backend.timeout_s) == ("stable", 9.0, 12.0)
    assert (canary.version, canary.allow, canary.backend.url) == ("2", ("key:lab",), "http://models:8501")
    assert (v2.backend.protocol, v2.backend.model, v2.backend.timeout_s) == ("v2", "cells", 30.0)
    assert svc.shadow == ShadowConfig("v2server", 0.5, 800)
    assert svc.public()["variants"][0]["share"] == 0.9


def test_without_weights_the_first_variant_serves():
    raw = {"services": {"eos": {"variants": {"a": {}, "b": {"cell_size_px": 1}}}}}
    with pytest.raises(ConfigError, match=r"unknown key 'cell_size_px' in services.eos.variants.b"):
        parse_config(raw)
    raw = {"services": {"eos": {"variants": {"a": {}, "b": {"model": "other"}}}}}
    a, b = parse_config(raw).services["eos"].variants
    assert (a.weight, b.weight) == (1.0, 0.0)


@pytest.mark.parametrize(
    ("eos", "message"),
    [
        ({"variants": {"a": {"weight": 0}}}, "at least one variant needs a weight above 0"),
        ({"variants": {"a": {}}, "shadow": {"variant": "b"}}, "shadow.variant must name one"),
        ({"shadow": {"variant": "b"}}, "the service lists no variants"),
        ({"variants": {"a": {"version": 1, "label": "x"}}}, "a version or a label, not both"),
        ({"variants": {"a": {}}, "shadow": {"variant": "a", "share": 2}}, "between 0 and 1"),
    ],
)
def test_mistakes_stop_the_start(eos, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"services": {"eos": eos}})
