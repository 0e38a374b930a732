"""The fast loop stays honest: a test that starts a process without the ``process`` mark
fails, and a test that uses a process fixture, however indirectly, is marked."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
from collections.abc import Callable

import pytest


def _noop() -> None:
    pass


STARTS: dict[str, Callable[[], object]] = {
    "subprocess.run": lambda: subprocess.run(["true"], check=False),
    "subprocess.Popen": lambda: subprocess.Popen(["true"]).wait(),
    "os.system": lambda: os.system("true"),
    "os.posix_spawn": lambda: os.waitpid(os.posix_spawn("/bin/true", ["true"], {}), 0),
    "multiprocessing": lambda: multiprocessing.get_context("spawn").Process(target=_noop).start(),
}


@pytest.mark.parametrize("start", list(STARTS))
def test_an_unmarked_test_cannot_start_a_process(start: str) -> None:
    with pytest.raises(pytest.fail.Exception, match="is not marked 'process' but starts"):
        STARTS[start]()


CONFTEST = """
import pytest
from process_guard import ProcessGuard, process_fixture


def pytest_configure(config):
    config.pluginmanager.register(ProcessGuard(), "process_guard")


@process_fixture(scope="module")
def server():
    yield "a server"


@process_fixture
def service():
    return "a process"


@process_fixture
def wrapped():
    return "a process"
"""

TESTS = """
import subprocess

import pytest


@pytest.fixture
def client(server):
    return server


@pytest.fixture
def service():
    return "in this process"


@pytest.fixture
def wrapped(wrapped):
    return wrapped


@pytest.fixture(scope="module")
def sneaky():
    subprocess.run(["true"])


def test_plain():
    pass


def test_through_another_fixture(client):
    pass


def test_an_override_that_starts_nothing(service):
    pass


def test_an_override_of_a_process_fixture_that_uses_it(wrapped):
    pass


@pytest.mark.process
def test_marked():
    pass


def test_starts_one_unmarked():
    subprocess.run(["true"])


def test_uses_a_fixture_that_starts_one_unmarked(sneaky):
    pass
"""


def test_process_fixtures_mark_their_users_and_unmarked_starts_fail(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    process: starts processes\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner=TESTS)
    result = pytester.runpytest_inprocess("-m", "not process", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1, errors=1, deselected=3)
    out = result.stdout.str()
    assert "test_inner.py::test_starts_one_unmarked is not marked 'process'" in out
    assert "test_uses_a_fixture_that_starts_one_unmarked is not marked 'process'" in out
    assert "['true']" in out
