"""The gateway's HTTP client against small keep-alive servers on loopback: answers with
their headers, a pool per origin whose connections are reused, one-shot calls on a
connection of their own, size limits, https, and the failures callers map to their errors."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from certserver import private_pem, self_signed_certificate
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.backends.http_pool import (
    ConnectFailed,
    HostPool,
    OriginPools,
    Response,
    TimedOut,
    TooLarge,
    request,
)


class Server:
    """HTTP/1.1 with keep-alive; answers ``name path body`` and counts its connections."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with owner.lock:
                    owner.connections += 1

            def _answer(self, body: bytes) -> None:
                status = 503 if self.path.startswith("/busy") else 200
                data = f"{owner.name} {self.path} ".encode() + body
                if self.path.startswith("/big"):
                    data = b"x" * 100
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "public, max-age=60")
                self.send_header("Retry-After", "7")
                self.send_header("X-Repeated", "one")
                self.send_header("X-Repeated", "two")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self._answer(b"")

            def do_POST(self) -> None:  # noqa: N802
                self._answer(self.rfile.read(int(self.headers["Content-Length"])))

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[tuple[Server, Server]]:
    pair = Server("a"), Server("b")
    yield pair
    for server in pair:
        server.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_answer_carries_its_headers(servers):
    a, _ = servers
    answer = HostPool(a.url, maxsize=1).request("GET", "/x", None, {}, 5, 5)
    assert (answer.status, answer.data) == (200, b"a /x ")
    assert answer.headers.get("retry-after") == "7"  # any case
    assert answer.headers.get("CACHE-CONTROL") == "public, max-age=60"
    assert answer.headers.get_all("X-Repeated") == ["one", "two"]


def test_a_response_made_without_headers_has_none():
    answer = Response(200, b"{}")
    assert answer.headers.get("Retry-After") is None and list(answer.headers.items()) == []


def test_origin_pools_send_each_url_to_its_host_and_keep_connections(servers):
    a, b = servers
    pools = OriginPools(maxsize=2)
    answers = [
        pools.request(
            "POST", f"{server.url}/p?q=1", f"{i}".encode(), connect_timeout=5, read_timeout=5
        ).data
        for i in range(3)
        for server in (a, b)
    ]
    assert answers == [f"{host} /p?q=1 {i}".encode() for i in range(3) for host in "ab"]
    assert pools.pool(a.url + "/other") is pools.pool(a.url)
    assert pools.pool(a.url) is not pools.pool(b.url)
    assert (a.connections, b.connections) == (1, 1)  # kept alive across calls


def test_origin_pools_refuse_what_is_not_http(servers):
    with pytest.raises(ValueError, match="not an http"):
        OriginPools(maxsize=1).request(
            "GET", "ftp://example.org/x", connect_timeout=1, read_timeout=1
        )


def test_a_one_shot_request_has_a_connection_of_its_own(servers):
    a, _ = servers
    first = request("GET", f"{a.url}/busy", timeout=5)
    second = request("POST", f"{a.url}/x", b"body", {"Content-Type": "text/plain"}, timeout=5)
    assert (first.status, first.headers.get("Retry-After")) == (503, "7")  # any status answers
    assert (second.status, second.data) == (200, b"a /x body")
    assert a.connections == 2


def test_an_answer_longer_than_max_bytes_is_refused(servers):
    a, _ = servers
    assert len(request("GET", f"{a.url}/big", max_bytes=100).data) == 100
    with pytest.raises(TooLarge):
        request("GET", f"{a.url}/big", max_bytes=99)


def test_failures_are_the_pools_own():
    with pytest.raises(ConnectFailed):
        request("GET", f"http://127.0.0.1:{closed_port()}/", timeout=5)
    with socket.socket() as silent:  # connects, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        with pytest.raises(TimedOut) as info:
            request("GET", f"http://127.0.0.1:{silent.getsockname()[1]}/", timeout=0.3)
    assert info.value.connecting is False


def self_signed(tmp_path) -> tuple[str, str]:
    """(certificate, key) files for 127.0.0.1, the certificate its own authority."""
    key = ec.generate_private_key(ec.SECP256R1())
    loopback = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = self_signed_certificate(
        key,
        "127.0.0.1",
        days=1,
        extensions=[(x509.BasicConstraints(ca=True, path_length=None), True), (loopback, False)],
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(private_pem(key))
    return str(cert_file), str(key_file)


def test_https_verifies_the_server(servers, tmp_path, monkeypatch):
    a, _ = servers
    cert_file, key_file = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    a.httpd.socket = context.wrap_socket(a.httpd.socket, server_side=True)
    url = a.url.replace("http://", "https://")
    with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
        request("GET", f"{url}/x", timeout=5)  # an authority the system does not know
    monkeypatch.setenv("SSL_CERT_FILE", cert_file)  # read by ssl.create_default_context
    answer = request("GET", f"{url}/x", timeout=5)
    assert (answer.status, answer.data) == (200, b"a /x ")
