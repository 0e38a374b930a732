"""A model server that is not one: a bare TCP server answering every connection with the
same bytes, for backends that answer garbage, errors or something that is not HTTP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


def raw_server(reply: bytes) -> tuple[int, threading.Event]:
    """A TCP server on a loopback port that answers every connection with ``reply`` and
    closes it; (its port, the event that stops it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(1 << 20)
                    conn.sendall(reply)
                except OSError:
                    pass
        sock.close()

    threading.Thread(target=serve, daemon=True).start()
    return sock.getsockname()[1], stop


def scripted_server(
    script: Callable[[socket.socket], None],
) -> tuple[int, threading.Event, list[str]]:
    """A TCP server on a loopback port that reads a request's head and hands the connection
    to ``script`` (which writes what it likes, as slowly as it likes); (its port, the event
    that stops it, what happened to each connection: ``"done"`` when the script ran to its
    end, ``"closed"`` when the client closed or reset the connection meanwhile)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    stop = threading.Event()
    outcomes: list[str] = []

    def one(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                head = b""
                while b"\r\n\r\n" not in head:
                    data = conn.recv(65536)
                    if not data:
                        return
                    head += data
                script(conn)
                outcomes.append("done")
                # Closing with the request's body unread would reset the connection, and
                # with it the answer not yet read: wait for the client to close first.
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):
                    pass
            except OSError:
                outcomes.append("closed")

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            threading.Thread(target=one, args=(conn,), daemon=True).start()
        sock.close()

    threading.Thread(target=serve, daemon=True).start()
    return sock.getsockname()[1], stop, outcomes
