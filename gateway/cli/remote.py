"""A deployed gateway, over HTTP: the service's kind, then one slide per request.

A slide goes to the route the service names as its ``image_route`` (``:detect`` answers a
count, ``:classify`` a label); a gateway too old to name it is asked the route of the
service's kind as this CLI knows it.  The image is the raw request body.
Answers worth another try (429, 503, 504, a dropped connection) are retried as
:mod:`gateway.cli.retry` says; a retry is announced through ``notify`` so a person sees
why a batch slowed down.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from gateway import kinds
from gateway.backends.http_pool import ConnectFailed, Disconnected, HostPool, TimedOut
from gateway.cli.halt import Halt
from gateway.cli.retry import RETRY_STATUSES, RetryPolicy, parse_retry_after
from gateway.cli.slides import Classified, Counted, SlideFailed
from gateway.config import DEFAULT_KIND
from gateway.kinds.base import CliView

# The image routes whose answers this CLI reads.
IMAGE_ROUTES = (":detect", ":classify")
CONNECT_TIMEOUT_S = 10.0


class Unusable(Exception):
    """The gateway or service cannot be used at all: a usage error, not a slide's failure."""


def with_scheme(url: str) -> str:
    """``localhost:8080`` as ``http://localhost:8080``: a URL typed without its scheme is
    read as plain HTTP (a local gateway); any scheme given is kept, and checked later."""
    url = url.strip()
    return url if "://" in url else f"http://{url}"


class Remote:
    def __init__(
        self,
        url: str,
        service: str,
        threshold: float | None,
        api_key: str | None,
        id_token: str | None,
        timeout_s: float,
        policy: RetryPolicy | None = None,
        halt: Halt | None = None,
        notify: Callable[[str], None] | None = None,
        pool_size: int = 1,
    ) -> None:
        url = with_scheme(url)
        try:
            # One origin, one connection per job kept alive across slides.
            self.http = HostPool(url, maxsize=max(1, pool_size))
        except ValueError as exc:
            raise Unusable(f"--url: {exc}") from exc
        self.timeout_s = timeout_s
        self.base_path = f"{urlsplit(url).path.rstrip('/')}/v1/services/{quote(service, safe='')}"
        self.service, self.threshold = service, threshold
        self.labels: tuple[str, ...] = ()  # the service's labels, once discover() read them
        self.service_threshold: float | None = None  # the service's default, once read
        self.policy = policy or RetryPolicy()
        self.halt = halt or Halt()
        self.notify = notify or (lambda _text: None)
        self.headers = {"Accept": "application/json", "User-Agent": "eos-gateway-cli"}
        if api_key:
            self.headers["X-API-Key"] = api_key
        elif id_token:
            self.headers["Authorization"] = f"Bearer {id_token}"
        self.kind = DEFAULT_KIND
        self.view: CliView | None = None  # until discover(): slides go to :detect
        # What the service answers, as the gateway lists it (older gateways: :predict).
        self.routes = [f"POST /v1/models/{service}:predict"]

    def discover(self) -> str:
        """Ask the gateway what kind of service this is (a missing ``kind`` is the default
        kind) and where its slides go; ``view`` is None for a kind that takes no slides."""
        # A wrong URL should fail in seconds, not after a slide's whole retry budget.
        quick = RetryPolicy(retries=min(2, self.policy.retries), max_wait_s=10.0)
        try:
            status, doc, _, _ = self._send("GET", self.base_path, None, {}, "the service", quick)
        except SlideFailed as exc:
            raise Unusable(str(exc)) from exc
        if status == 401:
            raise Unusable(f"{_reason(doc, status)}: {self._credentials_hint()}")
        if status == 404:
            raise Unusable(_reason(doc, status) or f"unknown service {self.service!r}")
        if status != 200 or not isinstance(doc, dict):
            raise Unusable(f"cannot read the service: {_reason(doc, status)}")
        kind = doc.get("kind") or DEFAULT_KIND
        known = kinds.get(kind) if isinstance(kind, str) else None
        view: CliView | None
        if "image_route" in doc:  # the gateway says where slides go
            route = doc["image_route"]
            if route is None:
                view = None
            elif known is not None and known.cli is not None and known.cli.route == route:
                view = known.cli
            else:  # a kind unknown here (or changed since) that answers a route known here
                view = _view_of(route)
                if view is None:
                    raise Unusable(unknown_kind(self.service, kind))
        elif known is not None:  # an older gateway: the kind as this CLI knows it
            view = known.cli
        else:
            raise Unusable(unknown_kind(self.service, kind))
        self.kind, self.view = kind, view
        default = doc.get("threshold")
        if isinstance(default, int | float) and not isinstance(default, bool):
            self.service_threshold = float(default)
        labels = doc.get("labels")
        if isinstance(labels, list) and all(isinstance(x, str) for x in labels):
            self.labels = tuple(labels)
        routes = doc.get("routes")
        if isinstance(routes, list) and all(isinstance(r, str) for r in routes):
            self.routes = routes
        return kind

    def count(self, path: Path, data: bytes) -> Counted | Classified:
        content_type = mimetypes.guess_type(path.name)[0] or ""
        if not content_type.startswith("image/"):
            content_type = "application/octet-stream"
        labels_image = self.view is not None and self.view.route == ":classify"
        if labels_image:
            endpoint = f"{self.base_path}:classify"
        else:
            endpoint = f"{self.base_path}:detect"
            if self.threshold is not None:
                endpoint += "?" + urlencode({"threshold": repr(self.threshold)})
        status, doc, retries, retry_after = self._send(
            "POST", endpoint, data, {"Content-Type": content_type}, str(path)
        )
        if status != 200:
            code = (doc.get("code") if isinstance(doc, dict) else None) or f"http_{status}"
            reason = _reason(doc, status)
            if status == 401:
                reason = f"{reason}: {self._credentials_hint()}"
            self.halt.after(reason, code, retry_after)  # said once, by the batch
            raise SlideFailed(reason, code, retries, retry_after)
        if labels_image:
            return _classified(doc, retries)
        if not isinstance(doc, dict) or not isinstance(doc.get("count"), int):
            raise SlideFailed("the gateway answered 200 without a count", "bad_response", retries)
        return Counted(
            count=doc["count"],
            detections=doc.get("detections") or [],
            width=doc["image"]["width"],
            height=doc["image"]["height"],
            threshold=doc["threshold"],
            extra={"request_id": doc.get("request_id")},
            retries=retries,
        )

    def _credentials_hint(self) -> str:
        """What to do about a 401, in the CLI's own terms (its flag and variable)."""
        if "X-API-Key" in self.headers:
            return "the API key was refused; check --api-key or GATEWAY_API_KEY"
        if "Authorization" in self.headers:
            return "the ID token was refused; pass a fresh --id-token, or an API key"
        return "this gateway needs credentials: pass --api-key KEY or set GATEWAY_API_KEY"

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        what: str,
        policy: RetryPolicy | None = None,
    ) -> tuple[int, Any, int, float | None]:
        """(status, JSON answer or None, retries made, its Retry-After in seconds) once the
        answer is final."""
        policy = policy or self.policy
        retries, waited = 0, 0.0
        while True:
            try:
                self.halt.check()
            except SlideFailed as exc:
                exc.retries = retries
                raise
            retry_after: float | None = None
            try:
                r = self.http.request(
                    method,
                    path,
                    body,
                    {**self.headers, **headers},
                    CONNECT_TIMEOUT_S,
                    self.timeout_s,
                )
            except (ConnectFailed, TimedOut, Disconnected) as exc:
                problem, code = f"cannot reach the gateway: {exc}", "unreachable"
                status, doc = 0, None
            else:
                try:
                    doc = json.loads(r.data)
                except ValueError:
                    doc = None
                status = r.status
                if status not in RETRY_STATUSES:
                    return status, doc, retries, None
                retry_after = parse_retry_after(r.headers.get("Retry-After"))
                problem = _reason(doc, status)
                code = (doc.get("code") if isinstance(doc, dict) else None) or f"http_{status}"
            delay = policy.wait(retries, waited, retry_after)
            if delay is None:
                if status:
                    return status, doc, retries, retry_after
                raise SlideFailed(problem, code, retries)
            retries += 1
            waited += delay
            self.notify(
                f"retry: {what}: {problem}; again in {delay:.1f} s "
                f"(retry {retries} of at most {policy.retries})"
            )
            try:
                self.halt.sleep(delay)
            except SlideFailed as exc:
                exc.retries = retries
                raise


def unknown_kind(service: str, kind: Any) -> str:
    return f"service {service!r} is of kind {kind!r}, unknown to this CLI"


def _view_of(route: str) -> CliView | None:
    """The view of a kind known here that sends its slides to ``route``."""
    if route not in IMAGE_ROUTES:
        return None
    for name in kinds.names():
        kind = kinds.get(name)
        if kind is not None and kind.cli is not None and kind.cli.route == route:
            return kind.cli
    return None


def _reason(doc: Any, status: int) -> str:
    if isinstance(doc, dict) and "error" in doc:
        return f"{doc['error']} (HTTP {status}, request {doc.get('request_id')})"
    return f"the gateway answered HTTP {status}"


def _classified(doc: Any, retries: int) -> Classified:
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("label"), str)
        or not isinstance(doc.get("score"), int | float)
    ):
        raise SlideFailed("the gateway answered 200 without a label", "bad_response", retries)
    image = doc.get("image") if isinstance(doc.get("image"), dict) else {}
    return Classified(
        label=doc["label"],
        score=float(doc["score"]),
        scores=doc.get("scores") or [],
        width=image.get("width"),
        height=image.get("height"),
        retries=retries,
    )
