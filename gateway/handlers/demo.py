"""``GET /``: a small self-contained page to try the detector in a browser.

It is on by default locally and off on Google Cloud (``demo`` in the configuration
overrides both), because a public page that spends model time is a choice, not a default.
The page is one HTML file with inline CSS and JavaScript: no build step, nothing fetched
from other origins, so it works offline and under a strict Content-Security-Policy.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from flask import Response

from gateway.config import Config, on_google_cloud
from gateway.context import RequestContext
from gateway.errors import NotFound
from gateway.runtime import Gateway

PAGE = Path(__file__).resolve().parent.parent / "static" / "demo.html"

# Everything the page needs is inline or same-origin; nothing else may load.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def demo_enabled(config: Config) -> bool:
    return (not on_google_cloud()) if config.demo is None else config.demo


@cache
def page_bytes() -> bytes:
    return PAGE.read_bytes()


def page(gw: Gateway, request: Any, ctx: RequestContext) -> Response:
    if not demo_enabled(gw.config):
        raise NotFound("no route for /; the demo page is turned off (set demo: true to serve it)")
    return Response(
        page_bytes(),
        status=200,
        mimetype="text/html",
        headers={
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )
