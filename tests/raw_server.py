"""A model server that is not one: a bare TCP server answering every connection with the
same bytes, for backends that answer garbage, errors or something that is not HTTP."""

from __future__ import annotations

import socket
import threading


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
