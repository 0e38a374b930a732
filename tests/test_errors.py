"""Caller values quoted in messages and log lines are cut short: a path, a name or a header
may be megabytes, and Cloud Logging drops an entry over 256 KB."""

from __future__ import annotations

import io
import json

from gateway import logs
from gateway.context import RequestContext
from gateway.errors import ECHO_MAX_CHARS, MESSAGE_MAX_CHARS, BadRequest, echo, shorten


def test_echo_quotes_at_most_the_limit_and_says_it_cut():
    assert echo("eos") == "'eos'"
    long = echo("x" * 100_000)
    assert long.endswith("\u2026") and len(long) <= ECHO_MAX_CHARS + 3
    assert shorten("abc", 2) == "ab\u2026" and shorten("abc", 3) == "abc"
    assert len(echo(["y" * 10_000])) <= ECHO_MAX_CHARS + 1


def test_an_error_message_is_bounded_whatever_it_quotes():
    err = BadRequest("unknown thing " + "z" * 1_000_000)
    assert len(err.message) <= MESSAGE_MAX_CHARS + 1 and str(err) == err.message


def test_a_log_line_stays_far_below_cloud_loggings_limit(monkeypatch):
    monkeypatch.setenv("LOG_FORMAT", "json")
    out = io.StringIO()
    logs.configure(stream=out)
    try:
        ctx = RequestContext(method="GET", path="/" + "p" * 1_000_000)
        ctx.user_agent = "u" * 100_000
        ctx.status = 404
        ctx.error_message = "e" * 1_000_000
        logs.access(ctx, "127.0.0.1")
        logs.emit("WARNING", "m" * 1_000_000, detail="d" * 1_000_000, stack_trace="s" * 10**6)
    finally:
        logs.configure()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert max(len(line) for line in lines) < 160_000
    access = json.loads(lines[0])
    assert len(access["httpRequest"]["requestUrl"]) <= logs.URL_MAX_CHARS + 1
    assert len(access["message"]) < 300
