"""The request's bookkeeping: which routes a service's kind answers."""

from __future__ import annotations

import pytest

from gateway.backends.local import LocalBackend
from gateway.catalog import parse_config
from gateway.errors import BadRequest
from gateway.handlers.bookkeeping import require_route
from gateway.kinds import get as kind_of
from gateway.registry import Service


def test_a_route_runs_only_the_kinds_that_serve_it():
    cfg = parse_config({}).services["eos"]
    detector = Service(cfg, LocalBackend(cfg), kind_of("detection"))
    with pytest.raises(BadRequest) as info:
        require_route(detector, ":classify")
    assert info.value.code == "wrong_route"
    assert "POST /v1/services/eos:detect" in info.value.message
