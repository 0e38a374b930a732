"""Shared pytest fixtures."""

from __future__ import annotations

import uuid

import pytest
from certserver import GoogleStandIn, KeyPair
from firestore_emulator import EmulatorError, FirestoreEmulator
from hypothesis import HealthCheck, settings
from process_guard import ProcessGuard, process_fixture
from procs import start_gateway

from gateway import logs

# pytester: tests/test_process_guard.py runs the guard on a suite of its own.
pytest_plugins = ["pytester"]

# No property test depends on how fast this machine is: no per-example deadline, and no
# health check failing because generating examples was slow while other work ran.
settings.register_profile("gateway", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("gateway")


def pytest_configure(config: pytest.Config) -> None:
    """Tests that start processes are marked ``process`` and only they may start one."""
    config.pluginmanager.register(ProcessGuard(), "process_guard")


@process_fixture(scope="session")
def firestore_emulator():
    """One Firestore emulator process for the whole run (npm ``@firestore-emulator/server``).

    ``.host`` ("127.0.0.1:PORT"), ``.project``, ``.env()`` (FIRESTORE_EMULATOR_HOST and
    GOOGLE_CLOUD_PROJECT for a gateway process), ``.client()``, ``.stop()`` / ``.start()``
    (an outage that keeps the data) and ``.pause()`` / ``.resume()`` (a hung server).  A
    test that stops it must start it again.
    """
    emulator = FirestoreEmulator()
    try:
        emulator.launch()
    except EmulatorError as exc:
        pytest.fail(f"cannot start the Firestore emulator: {exc}")
    yield emulator
    emulator.close()


@pytest.fixture
def firestore_project(firestore_emulator, monkeypatch) -> str:
    """A fresh, empty project on the shared emulator for one test, set in this process's env.

    Data of other tests lives in other projects, so nothing needs wiping; pass
    ``firestore_emulator.env(firestore_project)`` to gateway processes.
    """
    project = f"test-{uuid.uuid4().hex[:12]}"
    for name, value in firestore_emulator.env(project).items():
        monkeypatch.setenv(name, value)
    from gateway import firestore_client

    firestore_client.reset_clients()
    yield project
    if not firestore_emulator.running:
        return
    firestore_emulator.resume()
    firestore_emulator.start()  # a test that stopped it must not break the next one
    firestore_client.reset_clients()


@process_fixture(scope="module")
def embedded():
    """A gateway process on the embedded defaults: one service, ``eos``, on the embedded
    detector, usage in SQLite, no auth."""
    proc = start_gateway(None)
    yield proc
    proc.stop()


@process_fixture(params=["embedded", "proxied"])
def gateway(request):
    """Each test twice: on the embedded gateway and on the module's own ``proxied`` one (a
    module that asks for this fixture defines ``proxied``; others define ``gateway``)."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def keys() -> dict[str, KeyPair]:
    """RSA signing keys: ``fb-1`` Firebase's, ``g-1`` Google's, ``rogue`` nobody's."""
    return {name: KeyPair.generate(name) for name in ("fb-1", "g-1", "rogue")}


@pytest.fixture(scope="module")
def standin(keys):
    """The local stand-in for Google's certificate endpoints, serving ``fb-1`` as
    Firebase's certificate and ``g-1`` as Google's."""
    server = GoogleStandIn()
    server.state.certs = {"firebase": [keys["fb-1"]], "google": [keys["g-1"]]}
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _logs_as_at_start():
    """Each test sees the gateway's logs as a process starts them (stdout, every level):
    the command line run in-process sends them to stderr at WARNING, for its own output."""
    yield
    logs.configure()

