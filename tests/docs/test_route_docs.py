"""docs/auth.md and docs/usage.md list every model route: every route the route table
marks ``records_usage`` (credentials checked, quotas counted, usage recorded), in the
form the docs write it, and usage.md beside the ``route`` name its records carry.  A
route added to the table without its line in both pages fails here."""

from __future__ import annotations

import re

import pytest
from helpers import REPO

from gateway.rest.routes import ROUTES, Route

PAGES = ("auth.md", "usage.md")


def written(route: Route) -> list[str]:
    """``METHOD /path/{param}`` for each of the route's methods, as the docs spell it."""
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route.pattern.pattern)
    path = path.removeprefix("^").removesuffix("$").replace("\\", "")
    return [f"{method} {path}" for method in route.methods]


MODEL_ROUTES = [(route, text) for route in ROUTES if route.records_usage for text in written(route)]


def test_the_table_has_model_routes_to_list() -> None:
    texts = [text for _, text in MODEL_ROUTES]
    assert "POST /v1/services/{service}:detect" in texts
    assert "POST /v1/models/{service}/labels/{label}:predict" in texts
    assert "POST /" in texts
    assert "GET /healthz" not in texts


@pytest.mark.parametrize("page", PAGES)
def test_every_model_route_is_listed(page: str) -> None:
    lines = (REPO / "docs" / page).read_text().splitlines()
    missing = []
    for route, text in MODEL_ROUTES:
        listed = [line for line in lines if f"`{text}`" in line]
        if not listed:
            missing.append(text)
        elif page == "usage.md" and not any(f"`{route.name}`" in line for line in listed):
            missing.append(f"{text} with its records' route `{route.name}`")
    assert missing == []
