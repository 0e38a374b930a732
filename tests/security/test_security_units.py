"""The pure pieces of the hostile-traffic defences: which address is the caller's, how a
text log line escapes, which status each refusal gets, when a worker may shut the shared
socket."""

from __future__ import annotations

import os
import socket

import pytest
from gunicorn.http import errors as gunicorn_errors
from werkzeug.exceptions import NotFound, RequestEntityTooLarge

from gateway.catalog import parse_config
from gateway.config import ConfigError
from gateway.logs import escape_controls
from gateway.protocol_errors import refusal
from gateway.rest.client_address import caller_address, masked, trusted_proxies
from gateway.rest.http_errors import from_http_exception
from gateway.serving import instance_stopping


@pytest.mark.parametrize(
    "forwarded,peer,hops,expected",
    [
        ("6.6.6.6, 203.0.113.7", "169.254.1.1", 1, "203.0.113.7"),  # the client wrote 6.6.6.6
        ("6.6.6.6, 203.0.113.7, 130.211.0.1", "10.0.0.2", 2, "203.0.113.7"),  # behind an LB
        ("203.0.113.7", "10.0.0.2", 2, "203.0.113.7"),  # fewer entries than proxies
        ("6.6.6.6", "192.0.2.9", 0, "192.0.2.9"),  # no proxies: the peer, whatever is written
        ("", "192.0.2.9", 1, "192.0.2.9"),
        ("not-an-address", None, 1, None),
        ("6.6.6.6, 2001:db8:1:2::5", None, 1, "2001:db8:1:2::5"),
    ],
)
def test_the_caller_is_the_outermost_trusted_proxys_entry(forwarded, peer, hops, expected):
    assert caller_address(forwarded, peer, hops) == expected


def test_addresses_are_logged_without_the_host_part():
    assert masked("203.0.113.77") == "203.0.113.0"
    assert masked("2001:db8:1:2::5") == "2001:db8:1::"
    assert masked(None) is None


def test_trusted_proxies_default_and_checks(monkeypatch):
    monkeypatch.delenv("K_SERVICE", raising=False)
    assert trusted_proxies(parse_config({})) == 0
    monkeypatch.setenv("K_SERVICE", "eos-gateway")
    assert trusted_proxies(parse_config({})) == 1
    assert trusted_proxies(parse_config({"trusted_proxies": 2})) == 2
    for bad in (-1, 11, "1", True, 1.5):
        with pytest.raises(ConfigError):
            trusted_proxies(parse_config({"trusted_proxies": bad}))


def test_control_characters_are_escaped():
    assert escape_controls("/a\nINFO forged") == "/a\\nINFO forged"
    assert escape_controls("x\r\x1b[31m\x00\u2028y") == "x\\r\\x1b[31m\\x00\\u2028y"
    assert escape_controls("café ünïcode") == "café ünïcode"


def test_werkzeug_refusals_get_the_gateways_codes():
    too_large = from_http_exception(RequestEntityTooLarge())
    assert (too_large.status, too_large.code) == (413, "payload_too_large")
    assert "1,000 parts" in too_large.message
    missing = from_http_exception(NotFound())
    assert (missing.status, missing.code) == (404, "not_found")


def test_gunicorn_refusals_get_statuses():
    assert refusal(gunicorn_errors.LimitRequestHeaders("too big"))[:2] == (
        431,
        "headers_too_large",
    )
    assert refusal(gunicorn_errors.InvalidRequestLine("GARBAGE"))[:2] == (400, "bad_request")
    assert refusal(RuntimeError("a bug")) is None  # left to gunicorn: a 500


class _Listener:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock


@pytest.mark.process
def test_a_worker_shuts_the_shared_socket_only_once_the_arbiter_has_closed_it():
    """A forked child plays the worker, this process the arbiter."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    answers_r, answers_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        try:
            os.write(answers_w, b"1" if instance_stopping([_Listener(listener)]) else b"0")
            os.read(go_r, 1)
            os.write(answers_w, b"1" if instance_stopping([_Listener(listener)]) else b"0")
        finally:
            os._exit(0)
    try:
        while_held = os.read(answers_r, 1)
        listener.close()  # what the arbiter does first when the instance stops
        os.write(go_w, b"x")
        after_close = os.read(answers_r, 1)
    finally:
        os.waitpid(pid, 0)
        for fd in (answers_r, answers_w, go_r, go_w):
            os.close(fd)
    assert (while_held, after_close) == (b"0", b"1")
