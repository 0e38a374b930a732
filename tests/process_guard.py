"""The ``process`` marker: given to every test that starts a process, and enforced.

``pytest -m "not process"`` is the fast loop, so it is only as honest as the marks.  A test
is marked when it asks, directly or through other fixtures, for a fixture made with
:func:`process_fixture` (the gateway under functions-framework, the model servers, the
Firestore emulator, a browser), or when it carries ``@pytest.mark.process`` itself (a test
that runs the CLI or a gateway in its body).  While an unmarked test is set up and run,
every way of starting a process fails it, naming the test and the command, so a
forgotten mark is a failure rather than a slow fast loop.
"""

from __future__ import annotations

import multiprocessing.process
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

MARK = "process"


def process_fixture(func: Callable[..., Any] | None = None, **fixture_args: Any) -> Any:
    """``@pytest.fixture`` for a fixture that starts a process: every test that uses it,
    however indirectly, is marked ``process``.  Takes ``pytest.fixture``'s arguments."""

    def decorate(f: Callable[..., Any]) -> Any:
        f.starts_process = True  # type: ignore[attr-defined]
        return pytest.fixture(**fixture_args)(f)

    return decorate(func) if func is not None else decorate


def _starts_process(defs: Any) -> bool:
    """Whether the fixture this test gets under one name starts a process: the innermost
    definition decides, and an override that asks for the fixture it overrides also
    inherits what that one does."""
    for fixturedef in reversed(defs or ()):
        if getattr(fixturedef.func, "starts_process", False):
            return True
        if fixturedef.argname not in fixturedef.argnames:
            return False
    return False


def uses_process_fixture(item: pytest.Item) -> bool:
    # pytest keeps the definitions each fixture name resolves to for this test only here.
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(_starts_process(info.name2fixturedefs.get(name)) for name in item.fixturenames)


def _refuse(item: pytest.Item, what: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        started = args[0] if args else kwargs.get("args", "")
        if isinstance(started, subprocess.Popen):  # _execute_child(self, args, ...)
            started = args[1] if len(args) > 1 else kwargs.get("args", "")
        pytest.fail(
            f"{item.nodeid} is not marked '{MARK}' but starts a process ({what}: {started!r}); "
            f"mark it @pytest.mark.{MARK} or make its fixture with process_fixture"
        )

    return refuse


# Every way a test could start a process: subprocess and asyncio go through Popen's
# _execute_child, multiprocessing and process pools through BaseProcess.start, the rest
# are the os module's own.
_ROUTES: list[tuple[Any, str]] = [
    (subprocess.Popen, "_execute_child"),
    (multiprocessing.process.BaseProcess, "start"),
    (os, "fork"),
    (os, "forkpty"),
    (os, "posix_spawn"),
    (os, "posix_spawnp"),
    (os, "system"),
]


@contextmanager
def no_processes(item: pytest.Item) -> Iterator[None]:
    """While inside, starting a process fails ``item``."""
    saved = []
    for owner, name in _ROUTES:
        if hasattr(owner, name):
            saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, _refuse(item, name))
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


class ProcessGuard:
    """The pytest plugin: marks at collection, refuses processes to unmarked tests."""

    @pytest.hookimpl(tryfirst=True)  # before -m selects on the marks
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            if item.get_closest_marker(MARK) is None and uses_process_fixture(item):
                item.add_marker(MARK)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        return (yield from self._guarded(item))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        return (yield from self._guarded(item))

    @staticmethod
    def _guarded(item: pytest.Item) -> Iterator[None]:
        if item.get_closest_marker(MARK) is not None:
            return (yield)
        with no_processes(item):
            return (yield)
