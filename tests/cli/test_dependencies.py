"""The command line's map of third-party modules to what installs them agrees with the
code (every third-party import of the gateway is in it) and with requirements.txt (every
distribution it names is pinned there), and a missing one is said in one line."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator

import pytest
from helpers import REPO, gateway_modules

from gateway.__main__ import COMMANDS, main
from gateway.cli import dependencies
from gateway.cli.dependencies import DISTRIBUTIONS, distribution, install_hint

# Imported where present, with a fallback where not (the lossless cut, SIMD base64).
OPTIONAL = {"turbojpeg"}


def _requirements() -> set[str]:
    names = set()
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(line.split("==")[0].split("[")[0].strip().lower())
    return names


def _absolute_imports(tree: ast.AST) -> Iterator[str]:
    """Every absolute import, ``from a.b import c`` as ``a.b.c`` (c may be a module)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield from (f"{node.module}.{a.name}" for a in node.names)


def test_every_third_party_import_has_its_distribution() -> None:
    unknown = set()
    for _, tree in gateway_modules():
        for target in _absolute_imports(tree):
            top = target.split(".")[0]
            if top in sys.stdlib_module_names or top in ("gateway", "main") or top in OPTIONAL:
                continue
            if distribution(target) is None:
                unknown.add(target)
    assert unknown == set()


def test_every_distribution_is_in_requirements_txt() -> None:
    assert {d.lower() for d in DISTRIBUTIONS.values()} <= _requirements()


def test_what_each_command_needs_has_its_distribution() -> None:
    needs = [m for _, _, modules in COMMANDS.values() for m in modules]
    assert needs and all(m in DISTRIBUTIONS for m in needs)


def test_the_hint_is_one_line_naming_the_distribution() -> None:
    hint = install_hint("PIL.Image")
    assert "\n" not in hint
    assert hint.startswith("eos-gateway needs Pillow, which ")
    assert "pip install Pillow" in hint and sys.executable in hint


def test_a_command_missing_a_module_stops_before_it_starts(monkeypatch, capsys) -> None:
    monkeypatch.setattr(dependencies, "_present", lambda module: module != "PIL")
    assert main(["detect", "nowhere.jpg"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err == install_hint("PIL") + "\n"


def test_a_module_missing_inside_a_command_is_said_the_same_way(monkeypatch, capsys) -> None:
    """One the command imports only for some settings (Firestore for usage records)."""

    def run(argv: list[str]) -> int:
        raise ModuleNotFoundError(
            "No module named 'google.cloud.firestore'", name="google.cloud.firestore"
        )

    monkeypatch.setattr("gateway.usage.report.main", run)
    assert main(["usage"]) == 2
    assert capsys.readouterr().err.startswith("eos-gateway needs google-cloud-firestore")


def test_a_missing_module_of_no_known_distribution_is_not_hidden(monkeypatch) -> None:
    def run(argv: list[str]) -> int:
        raise ModuleNotFoundError("No module named 'nothing_we_use'", name="nothing_we_use")

    monkeypatch.setattr("gateway.usage.report.main", run)
    with pytest.raises(ModuleNotFoundError):
        main(["usage"])
