"""Every outbound HTTP call of the gateway goes through ``gateway.backends.http_pool``: no
module under ``gateway/`` imports another HTTP client library, or google-auth's adapters
on them, at the top or inside a function."""

from __future__ import annotations

import ast
from collections.abc import Iterator

import pytest
from helpers import gateway_modules, modules_loaded_by

OTHER_CLIENTS = ("urllib.request", "urllib3", "requests", "httpx", "aiohttp")
# google-auth's transports on those (and on grpc); its base classes in
# google.auth.transport itself are what gateway.backends.google_transport implements.
GOOGLE_AUTH_ADAPTERS = "google.auth.transport."


def named(tree: ast.AST) -> Iterator[str]:
    """Every module a source could load: ``from a import b`` names ``a`` and ``a.b`` (b may
    be a module), and ``importlib.import_module("x")`` or ``__import__("x")`` names ``x``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in ("import_module", "__import__") and isinstance(first, ast.Constant):
                yield str(first.value)


def foreign(module: str) -> bool:
    return module.startswith(GOOGLE_AUTH_ADAPTERS) or any(
        module == other or module.startswith(other + ".") for other in OTHER_CLIENTS
    )


def test_no_other_http_client_is_imported():
    found = [
        f"{name} imports {module}"
        for name, tree in gateway_modules()
        for module in named(tree)
        if foreign(module)
    ]
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        "import urllib.request",
        "from urllib import request",
        "from urllib.request import urlopen",
        "def f():\n    import urllib3",
        "import requests",
        "import httpx as h",
        "from aiohttp import ClientSession",
        "import google.auth.transport.requests",
        "from google.auth.transport import urllib3",
        "import importlib\nimportlib.import_module('requests')",
    ],
)
def test_each_way_of_importing_a_client_is_seen(source):
    assert any(foreign(m) for m in named(ast.parse(source)))


@pytest.mark.parametrize(
    "source",
    [
        "import urllib.parse",
        "from urllib.parse import urlsplit",
        "import http.client",
        "from google.auth import transport",
        "from gateway.backends import http_pool",
    ],
)
def test_the_standard_library_and_our_client_are_not_foreign(source):
    assert not any(foreign(m) for m in named(ast.parse(source)))


@pytest.mark.process
def test_the_client_loads_nothing_heavy():
    """Every caller imports it, the certificate cache on the first request included: it
    brings the standard library's HTTP client, not numpy, google-auth or another client."""
    loaded = modules_loaded_by("import gateway.backends.http_pool, gateway.auth.certs")
    heavy = {"numpy", "google.auth", *OTHER_CLIENTS} & loaded
    assert heavy == set()
