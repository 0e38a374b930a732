"""Slow and idle connections cost a socket, never a thread.

gunicorn's threaded worker hands every new connection to a thread, which waits up to 5 s
for a first byte and then blocks, with no time limit, until the request head is complete:
eight connections that send half a header held all of a worker's threads, and
``/healthz`` went unanswered.  Here the worker's event loop reads request heads itself,
without a thread, until the blank line that ends them; only then does a thread take the
connection.  A head must be complete within ``HEADER_TIMEOUT_S`` of the connection (or,
on a kept-alive connection, of its first byte), else the connection is closed.

A body of up to ``GATHER_BODY_MAX_BYTES`` is gathered by the loop too: one declared by
``Content-Length``, or a chunked one whose chunks end within that size (the loop follows
the chunk framing and flags what it refuses: the thread answers 400).  The worker's total
counts the bodies' bytes that came, not those declared, up to ``GATHER_TOTAL_MAX_BYTES``.
In the loop a body must arrive within a grace of ``BODY_GRACE_S`` plus its length (or
``GATHER_BODY_MAX_BYTES``) at ``BODY_MIN_RATE`` bytes a second, else the connection is
closed.  A larger body is handed to the thread that serves the request once its first
``PREFETCH_BYTES`` came (or when the worker's total is reached), and is then held to the
minimum rate on the bytes actually received: ``BODY_STALL_S`` plus ``received /
BODY_MIN_RATE`` seconds from the gateway's first read of it (what the gateway does before,
checking credentials, is not the client's time), else a watchdog shuts the socket's read
side, the read in progress ends, and the caller is answered ``408``.  A declared
length is no credit: a 32 MB body that sends nothing holds no thread at all.  The loop
answers ``Expect: 100-continue`` itself, as nginx does.  Nothing is read from a socket
without a deadline, and a malformed body is a JSON 400 (:class:`MalformedBody`).

An answer after which the connection closes says ``Connection: close`` (RFC 9112, 9.6),
and the connection lingers (as nginx's ``lingering_close``): its write side is shut, and
what the client still sends (the rest of a refused body) is read and discarded, up to
``LINGER_MAX_BYTES`` or ``LINGER_S``, so that the client reads the answer instead of a
reset.  gunicorn lingers in its event loop, where a client that neither sends nor closes
stalled every other connection for 2 s; the watchdog's thread does it here.
"""

from __future__ import annotations

import errno
import os
import re
import selectors
import socket
import threading
import time
from functools import partial
from typing import Any

from werkzeug.exceptions import BadRequest, RequestTimeout

from gateway.protocol_errors import wsgi_answer
from gateway.rest.unread_body import CLOSE_CONNECTION


def _env_number(name: str, default: float) -> float:
    """A deployment behind slow links may allow more time (``GATEWAY_*`` variables)."""
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


HEADER_TIMEOUT_S = _env_number("GATEWAY_HEADER_TIMEOUT_S", 10.0)
HEAD_GATHER_MAX_BYTES = 64 * 1024  # beyond this the parser takes over, under the deadline
GATHER_BODY_MAX_BYTES = 4 * 1024 * 1024
GATHER_TOTAL_MAX_BYTES = 64 * 1024 * 1024
_CONTENT_LENGTH = re.compile(rb"\r?\ncontent-length[ \t]*:[ \t]*(\d{1,12})[ \t]*\r?\n", re.I)
_TRANSFER_ENCODING = re.compile(rb"\r?\ntransfer-encoding[ \t]*:([^\r\n]*)", re.I)
_EXPECT = re.compile(rb"\r?\nexpect[ \t]*:", re.I)
_EXPECT_CONTINUE = re.compile(rb"\r\nexpect[ \t]*:[ \t]*100-continue[ \t]*\r\n", re.I)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")
CHUNK_MAX_BYTES = 2**32 - 1  # a larger chunk is refused (400), not waited for
CHUNK_LINE_MAX_BYTES = 4096  # a chunk-size line with its extensions, or a trailer line
BODY_GRACE_S = _env_number("GATEWAY_BODY_GRACE_S", 10.0)
# Bytes a second, on average, once the grace is spent.
BODY_MIN_RATE = _env_number("GATEWAY_BODY_MIN_RATE", 64 * 1024)
# A body too large to gather is handed to a thread once this much of it came (at once
# when the loop holds GATHER_TOTAL_MAX_BYTES already); the thread then allows
# BODY_STALL_S plus the bytes received at BODY_MIN_RATE: a thread-second costs a client
# BODY_MIN_RATE bytes sent.
PREFETCH_BYTES = 256 * 1024
BODY_STALL_S = 2.0
RECV_BYTES = 256 * 1024
WATCHDOG_TICK_S = 0.2
# A refused body the client is still sending is drained this long, at most this much, so
# it reads the answer (the body limit is 32 MB): nginx's lingering_close, bounded in bytes.
LINGER_S = 5.0
LINGER_MAX_BYTES = 64 * 1024 * 1024


class BodyTimeout(RequestTimeout):
    """The body was not sent within its deadline (answered 408 like werkzeug's own)."""


class MalformedBody(BadRequest):
    """A chunked body gunicorn's parser refused (a bad size, a missing CRLF, a forbidden
    trailer) or a body that ended before its length: a 400, not an unhandled error."""

    gateway_message = "the request body is malformed (its chunked framing or its length)"


class Watchdog:
    """Shuts a connection's read side once its deadline passes."""

    def __init__(self) -> None:
        self._deadlines: dict[Any, float] = {}
        self._expired: set[int] = set()
        self._lingering: list[list[Any]] = []  # [socket, deadline, bytes drained]
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        if self._thread is None:  # started in the worker, after the fork
            self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
            self._thread.start()

    def watch(self, conn: Any, deadline: float) -> None:
        with self._lock:
            self._deadlines[conn] = deadline
            self._start()

    def linger(self, sock: socket.socket) -> None:
        """Close after the client has read the answer, without holding a thread."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:
            sock.close()
            return
        with self._lock:
            self._lingering.append([sock, time.monotonic() + LINGER_S, 0])
            self._start()

    def _drain_lingering(self, now: float) -> None:
        """Read what the lingering sockets hold, close those done; register the new ones."""
        with self._lock:
            new, self._lingering = self._lingering, []
        for entry in new:
            try:
                self._selector.register(entry[0], selectors.EVENT_READ, entry)
            except (ValueError, OSError):
                entry[0].close()
        for key in list(self._selector.get_map().values()):
            entry = key.data
            sock, deadline, drained = entry
            done = now >= deadline or drained >= LINGER_MAX_BYTES
            while not done:
                try:
                    data = sock.recv(RECV_BYTES)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    data = b""
                entry[2] += len(data)
                done = not data or entry[2] >= LINGER_MAX_BYTES
            if done:
                self._selector.unregister(sock)
                sock.close()

    def unwatch(self, conn: Any) -> None:
        with self._lock:
            self._deadlines.pop(conn, None)

    def extend(self, conn: Any, deadline: float) -> None:
        """A later deadline for a connection still watched (more of its body came)."""
        with self._lock:
            if conn in self._deadlines and id(conn) not in self._expired:
                self._deadlines[conn] = max(self._deadlines[conn], deadline)

    def expired(self, conn: Any) -> bool:
        with self._lock:
            return id(conn) in self._expired

    def forget(self, conn: Any) -> None:
        with self._lock:
            self._deadlines.pop(conn, None)
            self._expired.discard(id(conn))

    def _run(self) -> None:
        self._selector = selectors.DefaultSelector()
        while True:
            if self._selector.get_map():
                self._selector.select(WATCHDOG_TICK_S)  # a lingering client sent more
            else:
                time.sleep(WATCHDOG_TICK_S)
            now = time.monotonic()
            with self._lock:
                due = [c for c, d in self._deadlines.items() if d <= now]
                for conn in due:
                    del self._deadlines[conn]
                    self._expired.add(id(conn))
            for conn in due:
                try:
                    conn.sock.shutdown(socket.SHUT_RD)  # the blocked read returns at once
                except OSError:
                    pass
            self._drain_lingering(now)


class WatchedBody:
    """A request body read under the minimum rate, unwatched once read to its end.

    ``extend(deadline)`` moves the watchdog's deadline as bytes arrive: the grace plus
    the bytes received at the minimum rate, from when the thread took the body.
    ``closing`` says the connection cannot serve another request (a timeout, a malformed
    body): the answer then says ``Connection: close``.
    """

    def __init__(
        self,
        body: Any,
        length: int | None,
        done: Any,
        timed_out: Any,
        extend: Any,
        watch: Any,
        malformed: bool = False,
    ) -> None:
        self._body = body
        self._malformed = malformed
        self._left = length
        self._done = done
        self._timed_out = timed_out
        self._extend = extend
        self._watch = watch
        self._started: float | None = None
        self._received = 0
        self.finished = False
        self.closing = False

    def _after(self, data: bytes, asked: int | None, exact: bool) -> bytes:
        if self._timed_out():
            self.closing = True
            raise BodyTimeout("the request body was not sent in time")
        if self._left is not None and self._left > 0:
            # gunicorn's read returns what was asked unless the client stopped sending.
            wanted = self._left if asked is None or asked < 0 else min(asked, self._left)
            if len(data) < wanted and (exact or not data):
                self.closing = True
                raise MalformedBody("the body ended before its declared length")
        if self._left is not None:
            self._left -= len(data)
        if not data and asked != 0 or (self._left is not None and self._left <= 0):
            self.finished = True
            self._done()
        elif data:
            self._received += len(data)
            assert self._started is not None
            self._extend(self._started + BODY_STALL_S + self._received / BODY_MIN_RATE)
        return data

    def _read(self, method: Any, size: int | None, exact: bool) -> bytes:
        from gunicorn.http.errors import NoMoreData, ParseException

        if self._started is None and not self.finished:
            # The clock starts at the first read: time the gateway spends before it (auth)
            # is not the client's.  No credit for a declared length, only for bytes that
            # came: a stall, then the minimum rate.
            self._started = time.monotonic()
            self._watch(self._started + BODY_STALL_S)
        try:
            if self._malformed:
                raise ParseException("the chunked framing is malformed")
            data = method(size)
        except (ParseException, NoMoreData) as exc:
            self.closing = True
            if self._timed_out():
                raise BodyTimeout("the request body was not sent in time") from exc
            raise MalformedBody(str(exc)[:200]) from exc
        return self._after(data, size, exact)

    def read(self, size: int | None = None) -> bytes:
        return self._read(self._body.read, size, True)

    def readline(self, size: int | None = None) -> bytes:
        return self._read(self._body.readline, size, False)

    def __iter__(self) -> WatchedBody:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._body, name)


def _bounded_chunk_sizes(body: Any) -> None:
    """A chunk of more than ``CHUNK_MAX_BYTES`` is refused by gunicorn's chunked reader
    (which would otherwise wait for 2**76 bytes until the deadline)."""
    from gunicorn.http.errors import InvalidChunkSize

    reader = getattr(body, "reader", None)
    original = getattr(reader, "parse_chunk_size", None)
    if original is None:
        return

    def parse_chunk_size(unreader: Any, data: Any = None) -> tuple[int, Any]:
        size, rest = original(unreader, data=data)
        if size > CHUNK_MAX_BYTES:
            raise InvalidChunkSize(b"a chunk over 4 GB")
        return size, rest

    reader.parse_chunk_size = parse_chunk_size  # this request's reader only


def _body_length(req: Any) -> tuple[bool, int | None]:
    """(has a body, its declared length or None when chunked)."""
    length, chunked = None, False
    for name, value in req.headers:
        if name == "CONTENT-LENGTH":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == "TRANSFER-ENCODING" and "chunked" in value.lower():
            chunked = True
    if chunked:
        return True, None
    return bool(length), length


_conn_classes: list[type] = []


def _conn_class() -> type:
    """gunicorn's connection, closed by lingering in the watchdog's thread."""
    if not _conn_classes:
        from gunicorn.workers.gthread import TConn

        class LingeringConn(TConn):
            watchdog: Watchdog

            def close(self, graceful: bool = False) -> None:
                release = getattr(self, "gateway_release", None)
                if release is not None:  # closed by gunicorn while still being gathered
                    self.gateway_release = None
                    release()
                if graceful:
                    self.watchdog.linger(self.sock)
                else:
                    super().close()

        _conn_classes.append(LingeringConn)
    return _conn_classes[0]


class SlowClientGuard:
    """Mixed into gunicorn's ``ThreadWorker``: heads gathered by the event loop, bodies
    under a deadline.  Only gunicorn's documented worker methods are overridden."""

    _watchdog: Watchdog | None = None

    @property
    def watchdog(self) -> Watchdog:
        if self._watchdog is None:
            self._watchdog = Watchdog()
        return self._watchdog

    def load_wsgi(self) -> None:
        """The app, wrapped so that an answer after which the connection will close says
        ``Connection: close`` (RFC 9112, 9.6): a keep-alive client then opens a new
        connection for its next request instead of failing on a closed one."""
        super().load_wsgi()  # type: ignore[misc]
        app = self.wsgi  # type: ignore[has-type]

        def closing_app(environ: dict, start_response: Any) -> Any:
            def start(status: str, headers: list, exc_info: Any = None) -> Any:
                body = environ.get("wsgi.input")
                if environ.get(CLOSE_CONNECTION) or getattr(body, "closing", False):
                    # gunicorn writes Connection from its Response's should_close() and
                    # drops the app's own hop-by-hop headers: force_close is its way.
                    start_response.__self__.force_close()
                return start_response(status, headers, exc_info)

            coding = environ.get("HTTP_TRANSFER_ENCODING")
            if coding is not None and coding.strip(" \t").lower() != "chunked":
                # gunicorn passes gzip, deflate and compress through, still coded, for the
                # application to undo; nothing here does (nginx answers 501 too).
                environ[CLOSE_CONNECTION] = True
                status, headers, body = wsgi_answer(
                    501,
                    "unsupported_transfer_coding",
                    "the only transfer coding understood is chunked",
                )
                start(status, headers)
                return [body]
            return app(environ, start)

        self.wsgi = closing_app

    # -- heads, in the event loop ----------------------------------------------------------

    def accept(self, listener: Any) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        self.nr_conns += 1
        conn = _conn_class()(self.cfg, client_sock, client_addr, listener.getsockname())
        conn.watchdog = self.watchdog
        self._gather_head(conn)

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection sends its next request: its head is gathered first."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._gather_head(conn)

    _gathered_bytes = 0  # bodies' bytes held by connections the loop is reading

    def _gather_head(self, conn: Any) -> None:
        conn.gateway_head = bytearray()
        conn.gateway_wants = None  # bytes of head and body to gather, once the head is in
        conn.gateway_chunks = conn.gateway_body_start = None  # a chunked body's progress
        conn.gateway_malformed = False
        conn.gateway_held = conn.gateway_body_at = 0  # body bytes counted in the worker's total
        conn.timeout = time.monotonic() + HEADER_TIMEOUT_S
        conn.sock.setblocking(False)
        self._insert_pending(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_bytes, conn))

    def _on_head_bytes(self, conn: Any, client: Any) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before its request was complete
            self._drop_pending(conn)
            conn.close()
            return
        conn.gateway_head += data
        if getattr(conn, "gateway_release", None) is not None:  # a body being gathered
            conn.gateway_held += len(data)
            self._gathered_bytes += len(data)
            if self._gathered_bytes > GATHER_TOTAL_MAX_BYTES:
                conn.gateway_wants = 0  # the worker holds enough: a thread reads the rest
        if conn.gateway_wants is None:
            conn.gateway_wants = self._bytes_to_gather(conn)
            if conn.gateway_wants is None:
                return  # the head is not complete yet
        elif conn.gateway_wants and getattr(conn, "gateway_chunks", None) is not None:
            wants = self._chunked_wants(conn)
            conn.gateway_wants = len(conn.gateway_head) + 1 if wants is None else wants
        if conn.gateway_wants is None or len(conn.gateway_head) < conn.gateway_wants:
            return
        self._drop_pending(conn, closing=False)
        conn.data_ready = True
        self.enqueue_req(conn)

    def _bytes_to_gather(self, conn: Any) -> int | None:
        """Head and body length to gather in the loop; None while the head is incomplete,
        0 to hand the connection to a thread now."""
        head = conn.gateway_head
        end = head.find(b"\r\n\r\n")
        end = end + 4 if end >= 0 else head.find(b"\n\n") + 2 if b"\n\n" in head else -1
        if end < 0:
            return None if len(head) <= HEAD_GATHER_MAX_BYTES else 0
        if _EXPECT.search(head, 0, end):
            expect = _EXPECT_CONTINUE.search(head, 0, end)
            if expect is None or not head.startswith(b"HTTP/1.1\r\n", head.find(b" HTTP/") + 1):
                return 0  # gunicorn refuses it (417), or ignores it (HTTP/1.0)
            # As nginx: the loop says 100 Continue itself and gathers what follows; the
            # parser no longer sees the expectation, so it does not say it twice.
            del head[expect.start() + 2 : expect.end()]
            end -= expect.end() - expect.start() - 2
            try:
                conn.sock.send(CONTINUE)
            except OSError:
                return 0
        conn.gateway_body_at = end
        te = _TRANSFER_ENCODING.search(head, 0, end)
        if te is not None:
            if te.group(1).strip().lower() != b"chunked" or _CONTENT_LENGTH.search(head, 0, end):
                return 0  # gunicorn's parser refuses or reads it
            if not self._reserve(conn, GATHER_BODY_MAX_BYTES):
                return 0
            conn.gateway_chunks = end  # where the next chunk-size line starts
            wants = self._chunked_wants(conn)
            return len(head) + 1 if wants is None else wants  # None: more to come
        m = _CONTENT_LENGTH.search(head, 0, end)
        length = int(m.group(1)) if m else 0
        have = len(head) - end
        if length <= have:
            return 0
        if length > GATHER_BODY_MAX_BYTES:  # its first bytes, then a thread reads the rest
            length = PREFETCH_BYTES
            if have >= length:
                return 0
        if not self._reserve(conn, length):
            return 0
        return end + length

    def _reserve(self, conn: Any, length: int) -> bool:
        """Gather a body of up to ``length`` bytes, by its deadline.  The worker's total
        counts the bytes that came, not those declared: a body that sends nothing holds
        no room (when the total is reached, a body goes on in a thread)."""
        held = len(conn.gateway_head) - conn.gateway_body_at
        if self._gathered_bytes + held > GATHER_TOTAL_MAX_BYTES:
            return False
        self._gathered_bytes += held  # until the connection leaves the loop
        conn.gateway_held = held
        conn.gateway_release = partial(self._release_gathered, conn)
        conn.timeout = time.monotonic() + BODY_GRACE_S + length / BODY_MIN_RATE
        self._requeue_pending(conn)
        return True

    def _chunked_wants(self, conn: Any) -> int | None:
        """Bytes to gather for a chunked body: its end once it is in, None while it is not,
        0 to hand it to a thread (too large, or framing the parser should judge)."""
        buf, pos = conn.gateway_head, conn.gateway_chunks
        start = getattr(conn, "gateway_body_start", None)
        if start is None:
            start = conn.gateway_body_start = pos
        while True:
            if pos - start > GATHER_BODY_MAX_BYTES:
                return 0
            eol = buf.find(b"\r\n", pos, pos + CHUNK_LINE_MAX_BYTES)
            if eol < 0:
                return None if len(buf) - pos < CHUNK_LINE_MAX_BYTES else self._malformed(conn)
            size = bytes(buf[pos:eol]).split(b";", 1)[0].strip(b" \t")
            if not _CHUNK_SIZE.fullmatch(size) or int(size, 16) > CHUNK_MAX_BYTES:
                return self._malformed(conn)
            n = int(size, 16)
            if n == 0:
                end = self._trailers_end(buf, eol + 2)
                return self._malformed(conn) if end == 0 else end
            if eol + 2 + n + 2 > len(buf):
                return None if eol + 2 + n - start <= GATHER_BODY_MAX_BYTES else 0
            if buf[eol + 2 + n : eol + 4 + n] != b"\r\n":
                return self._malformed(conn)
            pos = conn.gateway_chunks = eol + 4 + n

    @staticmethod
    def _malformed(conn: Any) -> int:
        """Framing no parser should guess at (gunicorn's waits for a size of 19 hex digits):
        the thread answers 400 at the body's first read."""
        conn.gateway_malformed = True
        return 0

    @staticmethod
    def _trailers_end(buf: bytearray, pos: int) -> int | None:
        for _ in range(64):
            eol = buf.find(b"\r\n", pos, pos + CHUNK_LINE_MAX_BYTES)
            if eol < 0:
                return None if len(buf) - pos < CHUNK_LINE_MAX_BYTES else 0
            if eol == pos:
                return eol + 2
            pos = eol + 2
        return 0

    def _requeue_pending(self, conn: Any) -> None:
        self.pending_conns.remove(conn)
        self._insert_pending(conn)

    def _insert_pending(self, conn: Any) -> None:
        """Pending connections stay sorted by deadline: gunicorn closes them from the first
        until one is not due, so a new head's deadline (sooner than a gathered body's)
        must not go behind a later one."""
        at = len(self.pending_conns)
        while at > 0 and self.pending_conns[at - 1].timeout > conn.timeout:
            at -= 1
        self.pending_conns.insert(at, conn)

    def _release_gathered(self, conn: Any) -> None:
        self._gathered_bytes -= conn.gateway_held
        conn.gateway_held = 0

    def _drop_pending(self, conn: Any, closing: bool = True) -> None:
        release = getattr(conn, "gateway_release", None)
        if release is not None:
            conn.gateway_release = None
            release()
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        try:
            self.pending_conns.remove(conn)
        except ValueError:
            pass
        if closing:
            self.nr_conns -= 1

    def _cap_keepalive(self, deadline: float) -> None:
        """Stopping: connections still sending a head get what kept-alive ones get."""
        super()._cap_keepalive(deadline)
        for conn in self.pending_conns:
            conn.timeout = min(conn.timeout, deadline)

    # -- the thread's part -----------------------------------------------------------------

    def handle(self, conn: Any) -> Any:
        head = bytes(getattr(conn, "gateway_head", b""))
        conn.gateway_head = bytearray()
        deadline = time.monotonic() + HEADER_TIMEOUT_S
        if head:
            deadline = conn.timeout  # set when the loop started gathering it
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(head)
        # A head larger than what the loop gathers (or pipelined behind the last request)
        # is parsed here, still on time.
        self.watchdog.watch(conn, deadline)
        try:
            return super().handle(conn)
        finally:
            self.watchdog.forget(conn)

    def handle_request(self, req: Any, conn: Any) -> Any:
        self.watchdog.unwatch(conn)  # the head is in
        has_body, length = _body_length(req)
        body = None
        if has_body and req.body is not None:
            if length is None:
                _bounded_chunk_sizes(req.body)
            req.body = body = WatchedBody(
                req.body,
                length,
                done=partial(self.watchdog.unwatch, conn),
                timed_out=partial(self.watchdog.expired, conn),
                extend=partial(self.watchdog.extend, conn),
                watch=partial(self.watchdog.watch, conn),
                malformed=getattr(conn, "gateway_malformed", False),
            )
        try:
            keep_alive = super().handle_request(req, conn)
        finally:
            self.watchdog.unwatch(conn)
        # A body the answer did not need (a refusal) is not drained: gunicorn would read
        # the rest of it, for up to 5 s of a thread.  The connection closes instead.
        return keep_alive and (body is None or body.finished)
