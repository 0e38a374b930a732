"""The gateway's one HTTP/1.1 client, on ``http.client``: every outbound call goes through it.

A model server is a single host, so pooling is a list of idle connections
(:class:`HostPool`).  ``http.client`` is already loaded by the web framework, where urllib3
cost ~15 ms of import on the first request (most of a cold start's margin) and a few
hundred microseconds of bookkeeping per call.  Callers that talk to several hosts (Google's
token endpoints and metadata server) keep a pool per origin (:class:`OriginPools`); a call
made once in a long while (signing certificates) is a one-shot :func:`request` on a
connection of its own.  Failures come out as three kinds each caller maps to its errors:
:class:`ConnectFailed` (nothing was sent: refused, unreachable, unknown host),
:class:`TimedOut` and :class:`Disconnected` (the connection broke mid-exchange); an answer
longer than a caller accepts is :class:`TooLarge`.

A socket timeout bounds each read, not an exchange: a server that sends a byte now and
then would hold the caller for ever.  Given an absolute ``deadline``, an exchange is
watched by one thread for the whole process (:class:`DeadlineReaper`), which shuts the
socket down when the deadline passes, so the blocked connect, send or read returns at
once and the caller gets :class:`TimedOut`.  A server's interim answer (1xx) leaves the
real one in the socket: that connection is never reused.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class ConnectFailed(OSError):
    """No connection could be made; the request was not sent."""


class TimedOut(OSError):
    def __init__(self, message: str, connecting: bool) -> None:
        super().__init__(message)
        self.connecting = connecting


class Disconnected(OSError):
    """The connection broke while the request was sent or the answer read."""


class TooLarge(OSError):
    """The answer's body is longer than the caller's ``max_bytes``; the connection is closed."""


class DeadlineReaper:
    """Shuts sockets down when their exchange's deadline passes, from one thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[list] = []  # [deadline, seq, socket or None, fired]
        self._seq = itertools.count()
        self._pid: int | None = None  # the thread does not survive a fork

    def watch(self, sock: socket.socket, deadline: float) -> list:
        """A ticket for :meth:`unwatch`; the socket is shut down at ``deadline``."""
        entry = [deadline, next(self._seq), sock, False]
        with self._cond:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="backend-deadlines", daemon=True).start()
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._cond.notify()
        return entry

    def unwatch(self, entry: list) -> bool:
        """Stop watching; whether the deadline had passed (the socket was shut down)."""
        with self._cond:
            entry[2] = None
            return entry[3]

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2] is None:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                entry = heapq.heappop(self._heap)
                entry[3] = True
                try:
                    entry[2].shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                entry[2] = None


REAPER = DeadlineReaper()


@dataclass(frozen=True)
class Response:
    status: int
    data: bytes
    # As http.client parsed them: ``get`` ignores case, repeated headers are kept.
    headers: http.client.HTTPMessage = field(default_factory=http.client.HTTPMessage)


class HostPool:
    """Keep-alive connections to one ``http``/``https`` origin, used by many threads."""

    def __init__(self, url: str, maxsize: int) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.maxsize = maxsize
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._ssl_context = None

    def _new(self, connect_timeout: float) -> http.client.HTTPConnection:
        if self.https:
            if self._ssl_context is None:
                import ssl

                self._ssl_context = ssl.create_default_context()
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=connect_timeout, context=self._ssl_context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=connect_timeout)

    def _take(self) -> http.client.HTTPConnection | None:
        """An idle connection the server has not closed meanwhile, if there is one."""
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            sock = conn.sock
            try:
                readable = sock is None or bool(select.select([sock], [], [], 0)[0])
            except (OSError, ValueError):
                readable = True
            if not readable:  # an idle keep-alive socket has nothing to read unless closed
                return conn
            conn.close()

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.maxsize:
                self._idle.append(conn)
                return
        conn.close()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        connect_timeout: float,
        read_timeout: float,
        *,
        max_bytes: int | None = None,
        deadline: float | None = None,
    ) -> Response:
        """One exchange.  ``deadline`` (``time.monotonic()``) bounds it whole once connected;
        ``max_bytes`` the answer's body, read no further (:class:`TooLarge`)."""
        conn = self._take()
        if conn is None:
            conn = self._new(connect_timeout)
            try:
                conn.connect()
            except TimeoutError as exc:
                conn.close()
                raise TimedOut(f"connecting to {self.host}:{self.port} timed out", True) from exc
            except OSError as exc:
                conn.close()
                raise ConnectFailed(str(exc)) from exc
        ticket = REAPER.watch(conn.sock, deadline) if deadline is not None else None
        try:
            try:
                conn.sock.settimeout(read_timeout)
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                if max_bytes is not None and resp.length is not None and resp.length > max_bytes:
                    data = None  # declared too long: not read at all
                else:
                    data = resp.read() if max_bytes is None else resp.read(max_bytes + 1)
            finally:
                late = ticket is not None and REAPER.unwatch(ticket)
        except TimeoutError as exc:
            conn.close()
            raise TimedOut(f"{self.host}:{self.port} did not answer in time", False) from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            if late:
                raise TimedOut(f"{self.host}:{self.port} did not answer in time", False) from exc
            raise Disconnected(f"{type(exc).__name__}: {exc}") from exc
        if late:  # what was read before the cut may look complete: it is not
            conn.close()
            raise TimedOut(f"{self.host}:{self.port} did not answer in time", False)
        if data is None or max_bytes is not None and len(data) > max_bytes:
            conn.close()
            raise TooLarge(f"the answer is longer than {max_bytes} bytes")
        if resp.will_close or resp.status < 200:  # an interim answer: the real one follows
            conn.close()
        else:
            self._give_back(conn)
        return Response(resp.status, data, resp.msg)


def _origin_and_path(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}", path


class OriginPools:
    """A :class:`HostPool` per ``scheme://host:port``, made on first use; for callers that
    reach several hosts by full URL.  Safe to share between threads."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._pools: dict[str, HostPool] = {}
        self._lock = threading.Lock()

    def pool(self, url: str) -> HostPool:
        """The pool of ``url``'s origin; ValueError for anything but an http(s) URL."""
        origin, _ = _origin_and_path(url)
        found = self._pools.get(origin)
        if found is None:
            made = HostPool(origin, self.maxsize)
            with self._lock:
                found = self._pools.setdefault(origin, made)
        return found

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_bytes: int | None = None,
    ) -> Response:
        _, path = _origin_and_path(url)
        return self.pool(url).request(
            method,
            path,
            body,
            headers or {},
            connect_timeout,
            read_timeout,
            max_bytes=max_bytes,
            # A server that trickles is cut too: the connect and one read's time, at most.
            deadline=time.monotonic() + connect_timeout + read_timeout,
        )


def request(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
    *,
    max_bytes: int | None = None,
) -> Response:
    """One exchange on a connection of its own, closed afterwards.

    For calls so rare that a kept connection would only be closed by the server meanwhile.
    ``timeout`` bounds the connect and each read, and twice ``timeout`` the whole call
    (a server that trickles its answer is cut).  Any status comes back as a
    :class:`Response`; redirects are not followed.
    """
    origin, path = _origin_and_path(url)
    return HostPool(origin, maxsize=0).request(
        method,
        path,
        body,
        headers or {},
        timeout,
        timeout,
        max_bytes=max_bytes,
        deadline=time.monotonic() + 2 * timeout,
    )
