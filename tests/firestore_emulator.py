"""A Firestore emulator (npm ``@firestore-emulator/server``) as its own process, for tests.

It listens on a free loopback port.  ``stop()`` closes the listener and drops every open
connection while the process and its data live on, so a test can take Firestore away from a
running gateway and bring the same database back with ``start()``; ``pause()`` freezes the
process instead (connections hang rather than fail: a slow Firestore).  ``clear()`` deletes
all data.  The package is installed by ``npm ci`` at the repository root.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
from contextlib import contextmanager
from typing import Any
from unittest import mock

from helpers import REPO

PACKAGE = "@firestore-emulator/server"

# Runs inside node.  One gRPC server object serves one shared state for the life of the
# process; commands on stdin unbind/rebind its port so data survives an "outage".
_LAUNCHER = r"""
const { FirestoreServer } = require("@firestore-emulator/server");
const { ServerCredentials } = require("@grpc/grpc-js");
const readline = require("readline");

const fs = new FirestoreServer();
const grpcServer = fs.server;
let port = Number(process.argv[process.argv.length - 1]);
let address = null;

function say(obj) { process.stdout.write(JSON.stringify(obj) + "\n"); }

function listen() {
  grpcServer.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (err, bound) => {
    if (err) { say({ event: "error", message: String(err) }); return; }
    port = bound;
    address = `127.0.0.1:${bound}`;
    say({ event: "listening", port: bound });
  });
}

const commands = {
  start() { if (address) say({ event: "listening", port }); else listen(); },
  stop() {
    if (address) { grpcServer.unbind(address); grpcServer.drain(address, 0); address = null; }
    say({ event: "stopped" });
  },
};

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const cmd = commands[line.trim()];
  if (cmd) cmd(); else say({ event: "error", message: `unknown command ${line}` });
});
process.stdin.on("end", () => process.exit(0));
listen();
"""


class EmulatorError(RuntimeError):
    pass


class FirestoreEmulator:
    """One emulator process; ``host`` stays the same across stop()/start()."""

    def __init__(self, project: str = "demo-gateway", timeout_s: float = 30.0) -> None:
        self.project = project
        self.timeout_s = timeout_s
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._paused = False
        self._lock = threading.Lock()

    # -- process -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def launch(self) -> FirestoreEmulator:
        node = shutil.which("node")
        if node is None:
            raise EmulatorError("node is not installed")
        if not (REPO / "node_modules" / PACKAGE).is_dir():
            raise EmulatorError(f"{PACKAGE} is missing: run `npm ci` in {REPO}")
        self._proc = subprocess.Popen(
            [node, "-e", _LAUNCHER, str(self.port)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        threading.Thread(target=self._read_events, args=(self._proc,), daemon=True).start()
        self.port = self._expect("listening")["port"]
        return self

    def _read_events(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                self._events.put(json.loads(line))
            except ValueError:
                continue
        self._events.put({"event": "exited"})

    def _expect(self, event: str) -> dict[str, Any]:
        while True:
            try:
                got = self._events.get(timeout=self.timeout_s)
            except queue.Empty as exc:
                raise EmulatorError(f"the emulator did not report {event!r} in time") from exc
            if got.get("event") == event:
                return got
            if got.get("event") in ("error", "exited"):
                raise EmulatorError(f"emulator: {got}")

    def _command(self, name: str, reply: str) -> dict[str, Any]:
        with self._lock:
            if not self.running:
                raise EmulatorError("the emulator process is not running")
            if self._paused:
                self.resume()
            assert self._proc is not None and self._proc.stdin is not None
            self._proc.stdin.write(name + "\n")
            self._proc.stdin.flush()
            return self._expect(reply)

    def close(self) -> None:
        """End the process (the data goes with it)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if self._paused:
            os.kill(proc.pid, signal.SIGCONT)
            self._paused = False
        try:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(timeout=5)

    # -- outages -------------------------------------------------------------------------

    def stop(self) -> None:
        """Refuse connections (and cut open ones) on the same port; the data is kept."""
        self._command("stop", "stopped")

    def start(self) -> None:
        """Listen again on the same port (or launch the process if it is not running)."""
        if not self.running:
            self.launch()
            return
        self._command("start", "listening")

    def pause(self) -> None:
        """Freeze the process: connections stay open but nothing answers (a hung server)."""
        if self.running and not self._paused:
            assert self._proc is not None
            os.kill(self._proc.pid, signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        if self._proc is not None and self._paused:
            os.kill(self._proc.pid, signal.SIGCONT)
            self._paused = False

    # -- clients -------------------------------------------------------------------------

    def env(self, project: str | None = None) -> dict[str, str]:
        """What a gateway process needs in its environment to use this emulator."""
        return {
            "FIRESTORE_EMULATOR_HOST": self.host,
            "GOOGLE_CLOUD_PROJECT": project or self.project,
        }

    @contextmanager
    def environment(self, project: str | None = None):
        """Point ``os.environ`` at the emulator for the duration of a ``with`` block."""
        with mock.patch.dict(os.environ, self.env(project)):
            yield

    def client(self, project: str | None = None) -> Any:
        """A new Firestore client talking to this emulator (built like the gateway's own)."""
        from gateway.firestore_client import new_client

        with self.environment(project):
            return new_client(project or self.project)
