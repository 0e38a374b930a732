"""How gunicorn (started by functions-framework) stops the gateway.

Cloud Run and Cloud Functions send SIGTERM and kill the instance 10 s later.  gunicorn's
threaded worker finishes the requests in flight, but it keeps the listening socket open
until it exits: connections made meanwhile sit in the kernel's backlog and are reset only
when the process is gone, so their clients hang for the whole grace period.  The worker
here stops listening at SIGTERM, so new connections are refused at once (and retried
elsewhere), and gunicorn's grace period (30 s by default) is cut to fit the platform's.
Once the requests in flight are answered, what is left of the grace (at most 4 s) sends the
usage records spooled while Firestore was unreachable, which would otherwise go with the
instance's ``/tmp`` (they are in the logs too: ``python -m gateway replay-usage``).

functions-framework takes no gunicorn options, so :func:`configure_gunicorn` adds them to
its application class; ``gateway.function.entry`` calls it at import, before the server is built.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import time

from gunicorn.workers.gthread import ThreadWorker

from gateway.errors import shorten
from gateway.protocol_errors import cors_configured, refusal, response_bytes
from gateway.slow_clients import SlowClientGuard

GRACEFUL_TIMEOUT_S = 8  # below the platform's 10 s, so the process exits on its own
SPOOL_DRAIN_MAX_S = 4.0  # at most this much of the grace goes to sending spooled records
MAX_HEADER_BYTES = 32768
# functions-framework sets no limit (0): a request line of megabytes was scanned with
# quadratic CPU and written to the logs.  gunicorn's largest, nginx's default buffer: 8 KB.
MAX_REQUEST_LINE_BYTES = 8190

# glibc malloc: M_TOP_PAD, M_MMAP_THRESHOLD and M_ARENA_MAX (mallopt parameter numbers).
_M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -2, -3, -8
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
TOP_PAD_BYTES = 32 * 1024 * 1024
ARENA_MAX = 4


class GatewayWorker(SlowClientGuard, ThreadWorker):
    """gunicorn's threaded worker that stops listening as soon as the instance stops,
    sends spooled usage records before it exits, reads request heads without a thread
    (:mod:`gateway.slow_clients`) and refuses unparsable requests in JSON."""

    _listening_shut = False
    _exit_asked_at: float | None = None

    def init_process(self) -> None:
        from gateway.runtime import reload_if_changed

        reload_if_changed()  # a reload's (SIGHUP) new workers serve the file as it is now
        super().init_process()  # runs the worker; it does not return

    def handle_exit(self, sig, frame) -> None:
        if self.alive:
            self._exit_asked_at = time.monotonic()
            if instance_stopping(self.sockets):
                self._stop_listening()
            else:  # a reload (SIGHUP) or this worker alone: the others keep the socket
                self._listening_shut = True
                self.set_accept_enabled(False)
        super().handle_exit(sig, frame)

    def handle_error(self, req, client, addr, exc) -> None:
        """gunicorn's refusals (400, 414, 431) in the gateway's JSON, with CORS headers."""
        answer = refusal(exc)
        if answer is None:
            super().handle_error(req, client, addr, exc)
            return
        status, code, message = answer
        data, request_id = response_bytes(status, code, message, cors_configured())
        try:
            from gunicorn import util

            util.write_nonblock(client, data)
        except OSError:
            pass
        from gateway import logs

        logs.emit(
            "WARNING",
            f"refused before routing: {status}",
            request_id=request_id,
            error_code=code,
            error=shorten(f"{message}: {exc}", 500),
        )

    def run(self) -> None:
        try:
            super().run()  # returns once the requests in flight are answered
        finally:
            self._drain_usage_spool()

    def _drain_usage_spool(self) -> None:
        """Records spooled while Firestore was away would go with the instance's /tmp."""
        asked = self._exit_asked_at if self._exit_asked_at is not None else time.monotonic()
        left_s = asked + GRACEFUL_TIMEOUT_S - time.monotonic()
        try:
            from gateway.runtime import current_gateway

            gw = current_gateway()
            drain = getattr(gw.usage, "drain_spool", None) if gw is not None else None
            if drain is None:
                return
            # A commit started within the budget may take its whole deadline.
            budget = min(SPOOL_DRAIN_MAX_S, left_s - gw.usage.settings.write_timeout_s - 0.5)
            if budget <= 0:
                return
            sent, left = drain(budget)
            if sent or left:
                from gateway.usage.recorder import log_event

                log_event(
                    "INFO" if not left else "WARNING",
                    "usage: spool sent at shutdown"
                    if not left
                    else "usage: records left in the spool at shutdown (logged when spooled; "
                    "python -m gateway replay-usage stores them from the logs)",
                    sent=sent,
                    left=left,
                )
        except Exception:  # exiting must not fail; the records are in the logs
            pass

    def _stop_listening(self) -> None:
        self._listening_shut = True
        self.set_accept_enabled(False)
        for listener in self.sockets:
            try:
                # On the shared socket, not just this process's descriptor: every worker
                # and the arbiter stop listening, and queued connections are reset now.
                listener.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled and not self._listening_shut)

    def accept(self, listener) -> None:
        try:
            super().accept(listener)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # Another worker shut the shared socket down first: this one is stopping too.
            self._listening_shut = True
            self.set_accept_enabled(False)


def instance_stopping(listeners) -> bool:
    """Whether the arbiter has closed its listening sockets: the whole instance stops.

    gunicorn's arbiter closes its own copies of the listening sockets before it sends
    SIGTERM to the workers when it stops; on a reload (SIGHUP) or when one worker alone is
    told to stop, it keeps them.  Only in the first case may a worker shut the shared
    socket down (which refuses queued connections for every process at once).  Off Linux
    (no /proc) the answer is no: connections then wait for the next worker.
    """
    try:
        inodes = {os.fstat(listener.sock.fileno()).st_ino for listener in listeners}
        fd_dir = f"/proc/{os.getppid()}/fd"
        held = set()
        for fd in os.listdir(fd_dir):
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                held.add(int(target[8:-1]))
    except (OSError, ValueError, AttributeError):
        return False
    return not (inodes & held)


def limit_heap_growth() -> bool:
    """Give decoded slides' memory back to the system when a request ends.

    A slide is decoded into tens of megabytes of arrays.  glibc raises its mmap threshold
    after such a block is freed, so the next ones come from the heap and, with one arena
    per busy thread, idle memory climbs by hundreds of megabytes over a day of traffic.  A
    fixed threshold keeps big blocks in mmap (returned on free) and caps the arenas.
    Each arena keeps a fixed pad of freed memory instead of returning every page at once:
    libjpeg's working buffers for a slide (megabytes in blocks below the threshold) would
    otherwise be faulted in afresh on every request, a large part of the cost of cutting
    a slide into tiles (BENCHMARKS.md has the figures).  The pad holds what two slides' cuts need at
    once: threads share arenas (there are more threads than ``ARENA_MAX``), and a pad
    smaller than two cuts' buffers trimmed and faulted them in again on every request
    whenever the two threads cutting one slide drew the same arena.  Idle memory stays
    bounded: at most ``ARENA_MAX`` pads, and an idle worker trims them
    (:mod:`gateway.memory`).  Returns False where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")  # glibc's name; ctypes.util is slow to import
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok = mallopt(_M_TOP_PAD, TOP_PAD_BYTES) == 1 and ok
    return mallopt(_M_ARENA_MAX, ARENA_MAX) == 1 and ok


def reload_in_master(arbiter) -> None:
    """SIGHUP: the master rebuilds its gateway before it forks the new workers, so a worker
    respawned later (after a crash) serves the newest good file, never the one the master
    started with; a bad file leaves the master's gateway as it was (ERROR line)."""
    from gateway.runtime import reload_if_changed

    try:
        reload_if_changed()
    except BaseException:  # the arbiter must outlive any configuration
        pass


def announce_listening(server) -> None:
    """gunicorn's ``when_ready``: the start log names the address the gateway listens on
    (and how to reach it from this machine), once the socket is bound."""
    from gateway import logs

    for listener in getattr(server, "LISTENERS", ()):
        address = str(listener)
        message = f"listening on {address}"
        scheme, _, rest = address.partition("://")
        host, _, port = rest.rpartition(":")
        if scheme in ("http", "https") and host in ("0.0.0.0", "[::]", "127.0.0.1", "[::1]"):
            message += f" (on this machine: {scheme}://localhost:{port}/)"
        logs.emit("INFO", message, address=address)


def configure_gunicorn() -> None:
    """Make functions-framework's gunicorn use :class:`GatewayWorker` and a short grace."""
    try:
        from functions_framework._http import gunicorn as ff_gunicorn
    except ImportError:  # functions-framework without gunicorn: nothing to configure
        return
    app_class = ff_gunicorn.GunicornApplication
    if getattr(app_class, "_gateway_configured", False):
        return
    original = app_class.load_config

    def load_config(self) -> None:
        original(self)
        if "worker_class" not in self.options:
            # Also with THREADS=1, where gunicorn would pick its sync worker: one thread
            # then serves while the event loop holds slow and idle connections.
            self.cfg.set("worker_class", GatewayWorker)
        self.cfg.set("graceful_timeout", GRACEFUL_TIMEOUT_S)
        # Room for long bearer tokens, so an oversized one reaches the gateway and gets
        # its JSON 401 instead of gunicorn's HTML 431.
        self.cfg.set("limit_request_field_size", MAX_HEADER_BYTES)
        self.cfg.set("limit_request_line", MAX_REQUEST_LINE_BYTES)  # 414 beyond
        # No gunicornc control socket: nothing here uses it, and its default place under
        # $HOME is read-only on Cloud Functions (an error line at every start).
        self.cfg.set("control_socket_disable", True)
        self.cfg.set("on_reload", reload_in_master)
        self.cfg.set("when_ready", announce_listening)

    app_class.load_config = load_config
    app_class._gateway_configured = True
