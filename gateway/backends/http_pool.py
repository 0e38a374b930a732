"""A small keep-alive HTTP/1.1 client for one model server, on ``http.client``.

The gateway talks to a single host, so pooling is a list of idle connections.
``http.client`` is already loaded by the web framework, where urllib3 cost ~15 ms of
import on the first request (most of a cold start's margin) and a few hundred
microseconds of bookkeeping per call.  Failures come out as three kinds the backend maps
to its errors: :class:`ConnectFailed` (nothing was sent: refused, unreachable, unknown
host), :class:`TimedOut` and :class:`Disconnected` (the connection broke mid-exchange).
"""

from __future__ import annotations

import http.client
import select
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit


class ConnectFailed(OSError):
    """No connection could be made; the request was not sent."""


class TimedOut(OSError):
    def __init__(self, message: str, connecting: bool) -> None:
        super().__init__(message)
        self.connecting = connecting


class Disconnected(OSError):
    """The connection broke while the request was sent or the answer read."""


@dataclass(frozen=True)
class Response:
    status: int
    data: bytes


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
    ) -> Response:
        conn = self._take()
        if conn is None:
            conn = self._new(connect_timeout)
            try:
                conn.connect()
            except TimeoutError as exc:
                conn.close()
                raise TimedOut("connecting to the model server timed out", True) from exc
            except OSError as exc:
                conn.close()
                raise ConnectFailed(str(exc)) from exc
        try:
            conn.sock.settimeout(read_timeout)
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except TimeoutError as exc:
            conn.close()
            raise TimedOut("the model server did not answer in time", False) from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise Disconnected(f"{type(exc).__name__}: {exc}") from exc
        if resp.will_close:
            conn.close()
        else:
            self._give_back(conn)
        return Response(resp.status, data)
