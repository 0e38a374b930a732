"""What the CLI knows about one slide: its outcome, whichever way it was counted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class SlideFailed(Exception):
    """One slide could not be counted; the message says why, for a person."""

    def __init__(
        self,
        message: str,
        code: str | None = None,
        retries: int = 0,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retries = retries
        self.retry_after_s = retry_after_s  # the refusal's Retry-After, when it had one


@dataclass
class Counted:
    """What a runner found on one slide: the same fields whichever way it was counted."""

    count: int
    detections: list[dict[str, Any]]
    width: int
    height: int
    threshold: float
    extra: dict[str, Any] = field(default_factory=dict)
    retries: int = 0


@dataclass
class Classified:
    """A classifier's answer for one slide (a service whose slides go to ``:classify``)."""

    label: str
    score: float
    scores: list[Any]
    width: int | None = None
    height: int | None = None
    retries: int = 0


@dataclass
class Slide:
    path: str
    count: int | None = None
    detections: list[dict[str, Any]] | None = None
    width: int | None = None
    height: int | None = None
    seconds: float | None = None
    threshold: float | None = None
    error: str | None = None
    code: str | None = None
    render: str | None = None
    geojson: str | None = None
    label: str | None = None
    score: float | None = None
    scores: list[Any] | None = None
    retries: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None
