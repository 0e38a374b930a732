"""Imports point down only: every ``gateway`` import goes from a higher layer to a lower
one (or stays in its own layer), as the README's layout table names them, and nothing
below the handlers knows about Flask."""

from __future__ import annotations

from helpers import REPO, gateway_modules, imported

# The README's layout table, top to bottom.
LAYERS = [
    [
        "main",
        "gateway.__main__",
        "gateway.cli",
        "gateway.function",
        "gateway.serving",
        "gateway.slow_clients",
        "gateway.protocol_errors",
    ],
    ["gateway.rest"],
    ["gateway.handlers"],
    ["gateway.runtime"],
    ["gateway.kinds", "gateway.catalog", "gateway.registry"],
    ["gateway.usecases", "gateway.auth", "gateway.usage"],
    ["gateway.codecs", "gateway.render"],
    ["gateway.pipeline"],
    ["gateway.backends", "gateway.firestore_client"],
    ["gateway.detector"],
    [
        "gateway.config",
        "gateway.schema",
        "gateway.context",
        "gateway.errors",
        "gateway.logs",
        "gateway.jsonio",
        "gateway.memory",
    ],
]


def layer(module: str) -> int:
    found = [
        (len(prefix), i)
        for i, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert found, f"{module} is in no layer"
    return max(found)[1]


def test_imports_point_down():
    upward = []
    for name, tree in gateway_modules():
        for target in imported(tree):
            if target.startswith("gateway.") and layer(target) < layer(name):
                upward.append(f"{name} -> {target}")
    assert upward == []


def test_nothing_below_the_handlers_imports_flask():
    handlers = layer("gateway.handlers")
    below = [
        name
        for name, tree in gateway_modules()
        if layer(name) > handlers
        and any(t.split(".")[0] in ("flask", "werkzeug") for t in imported(tree))
    ]
    assert below == []


def test_the_readme_names_every_layer():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Layout") :]
    for prefixes in LAYERS:
        for prefix in prefixes:
            path = prefix.replace(".", "/")
            assert f"`{path}" in table, f"{path} is not in the README's layout table"
