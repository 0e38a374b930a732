"""The route table: method + path pattern -> handler.

Handlers are named, not imported, and imported at their route's first request: the demo
page, the renderer and the ``:detect`` and ``:classify`` codecs stay out of a cold start
that only serves ``:predict``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import MethodNotAllowed, NotFound, shorten

NAME = r"(?P<service>[^/:]{1,200})"  # unknown names get 404 unknown_service
VERSION = r"(?P<version>[^/:]{1,200})"  # digits, checked by the handler (a clear 400)
LABEL = r"(?P<label>[^/:]{1,200})"
PROJECT = r"(?P<project>[^/:]{1,200})"  # a Google Cloud project and location, as sent
LOCATION = r"(?P<location>[^/:]{1,200})"
# Google's API paths (Vertex AI's): every error there, an unknown path's or method's
# included, takes Google's error shape, the only one Google's clients read.
GOOGLE_API_PREFIX = "/v1/projects/"
# A model as TF Serving names it: its latest version, a version, or a labelled version.
PINS = ("", f"/versions/{VERSION}", f"/labels/{LABEL}")

_handlers: dict[str, Callable] = {}


@dataclass(frozen=True)
class Route:
    name: str
    methods: tuple[str, ...]
    pattern: re.Pattern[str]
    target: str  # "module:function" under gateway.handlers
    records_usage: bool = False  # a model route: its caller admitted, its usage recorded
    errors: str = "gateway"  # its error answers' shape: "gateway", or "google" (Google's APIs)

    @property
    def handler(self) -> Callable:
        fn = _handlers.get(self.target)
        if fn is None:
            module, _, attr = self.target.partition(":")
            fn = getattr(importlib.import_module(f"gateway.handlers.{module}"), attr)
            _handlers[self.target] = fn
        return fn


def _model_routes(name: str, methods: tuple[str, ...], suffix: str, target: str, usage=False):
    return [
        Route(name, methods, re.compile(rf"^/v1/models/{NAME}{pin}{suffix}$"), target, usage)
        for pin in PINS
    ]


def _v2_routes(name: str, methods: tuple[str, ...], suffix: str, target: str, usage=False):
    return [
        Route(name, methods, re.compile(rf"^/v2/models/{NAME}{pin}{suffix}$"), target, usage)
        for pin in ("", f"/versions/{VERSION}")
    ]


ROUTES: list[Route] = [
    *_model_routes("predict", ("POST",), ":predict", "predict:handle", True),
    Route("detect", ("POST",), re.compile(rf"^/v1/services/{NAME}:detect$"), "detect:handle", True),
    Route(
        "classify",
        ("POST",),
        re.compile(rf"^/v1/services/{NAME}:classify$"),
        "classify:handle",
        True,
    ),
    *_model_routes("model_status", ("GET",), "", "health:model_status"),
    *_model_routes("model_metadata", ("GET",), "/metadata", "metadata:model_metadata"),
    Route("services", ("GET",), re.compile(r"^/v1/services$"), "services:list_services"),
    Route("service", ("GET",), re.compile(rf"^/v1/services/{NAME}$"), "services:get_service"),
    Route(
        "comparison",
        ("GET",),
        re.compile(rf"^/v1/services/{NAME}/comparison$"),
        "comparison:comparison",
    ),
    # The Open Inference Protocol (KServe V2, Triton): gateway.handlers.v2
    *_v2_routes("v2_infer", ("POST",), "/infer", "v2:infer", True),
    *_v2_routes("v2_model_ready", ("GET",), "/ready", "v2:model_ready"),
    *_v2_routes("v2_model_metadata", ("GET",), "", "v2:model_metadata"),
    Route("v2_server", ("GET",), re.compile(r"^/v2$"), "v2:server_metadata"),
    Route("v2_live", ("GET",), re.compile(r"^/v2/health/live$"), "v2:live"),
    Route("v2_ready", ("GET",), re.compile(r"^/v2/health/ready$"), "v2:ready"),
    # Vertex AI's online prediction (AutoML image models' schemata): gateway.handlers.vertex
    Route(
        "vertex",
        ("POST",),
        re.compile(rf"^/v1/projects/{PROJECT}/locations/{LOCATION}/endpoints/{NAME}:predict$"),
        "vertex:predict",
        True,
        errors="google",
    ),
    Route(
        "vertex_endpoint",
        ("GET",),
        re.compile(rf"^/v1/projects/{PROJECT}/locations/{LOCATION}/endpoints/{NAME}$"),
        "vertex:endpoint",
        errors="google",
    ),
    # The caller's own usage and quotas today: credentialed, not recorded (gateway.handlers.usage)
    Route("usage", ("GET",), re.compile(r"^/v1/usage$"), "usage:today"),
    Route("healthz", ("GET",), re.compile(r"^/healthz$"), "health:healthz"),
    Route("readyz", ("GET",), re.compile(r"^/readyz$"), "health:readyz"),
    Route("demo", ("GET",), re.compile(r"^/$"), "demo:page"),
    Route("predict", ("POST",), re.compile(r"^/$"), "predict:handle", True),
]


def error_shape(path: str, route: Route | None) -> str:
    """The shape of an error answered on ``path``: its route's, or for a path no route
    takes (an unknown method of Google's API) the shape of the API it is under."""
    if route is not None:
        return route.errors
    return "google" if path.startswith(GOOGLE_API_PREFIX) else "gateway"


@dataclass(frozen=True)
class Match:
    route: Route
    params: dict[str, str]


def match(method: str, path: str) -> Match:
    allowed: list[str] = []
    for route in ROUTES:
        m = route.pattern.match(path)
        if m is None:
            continue
        if method in route.methods or (method == "HEAD" and "GET" in route.methods):
            return Match(route, m.groupdict())
        allowed.extend(route.methods)
    if allowed:
        methods = ", ".join(sorted(set(allowed) | {"OPTIONS"}))
        raise MethodNotAllowed(
            f"{shorten(method)} is not allowed on {shorten(path)}; use {methods}",
            headers={"Allow": methods},
        )
    raise NotFound(f"no route for {shorten(path)}")
