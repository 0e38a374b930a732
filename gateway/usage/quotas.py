"""Quotas from the ``quotas`` section of the configuration.

No ``quotas`` section means no quotas at all (and no quota reads).  With one, a principal
has two limits:

- ``daily_images``: images per UTC day over all services.  In order: its document in the
  ``quotas`` collection (set by an administrator without a redeploy),
  ``quotas.principals[principal]``, ``quotas.default``, else unlimited.
- ``requests_per_minute``: admitted requests per UTC minute, failed ones included (a
  caller cannot send undecodable images for free).  ``quotas.principals[principal]``, else
  ``quotas.default``, else unlimited.

``null`` means unlimited.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Config, ConfigError
from gateway.schema import INTEGER, Fields, MapOf, Setting

ENTRY_KEYS = ("daily_images", "requests_per_minute")
# One entry; null (the default) is unlimited.  Whole numbers only: ``NaN`` and ``.inf`` are
# not, so they are refused with the rest.
_ENTRY = Fields({key: Setting(INTEGER, None, lo=0) for key in ENTRY_KEYS})
CONFIG_SCHEMA = Fields({"default": _ENTRY, "principals": MapOf(_ENTRY)})  # ``quotas``


def parse_limit(raw: Any) -> int | None:
    """A ``daily_images`` value read from a quota document; junk counts as unlimited
    (``NaN`` and infinities included: a document is not checked at start-up)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    if not math.isfinite(raw) or raw < 0:
        return None
    return int(raw)


@dataclass(frozen=True)
class Limits:
    """One entry: ``{daily_images: 500, requests_per_minute: 60}``."""

    daily_images: int | None = None
    requests_per_minute: int | None = None


def _entry(entry: Any, where: str) -> Limits:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a mapping like {{daily_images: 500}}")
    return Limits(**_ENTRY.read(entry, where))


@dataclass(frozen=True)
class QuotaPolicy:
    enabled: bool = False
    default: Limits = field(default_factory=Limits)
    principals: dict[str, Limits] = field(default_factory=dict)

    def configured_limit(self, principal: str) -> int | None:
        """Images per day from the configuration (a ``quotas`` document overrides it)."""
        return self.principals.get(principal, self.default).daily_images

    def requests_per_minute(self, principal: str) -> int | None:
        return self.principals.get(principal, self.default).requests_per_minute


def validate_quotas_section(raw: Any) -> QuotaPolicy:
    """The policy of a ``quotas`` section; ConfigError naming the key and place otherwise."""
    if raw is None:
        return QuotaPolicy(enabled=False)
    CONFIG_SCHEMA.check(raw, "quotas")
    default = raw.get("default")
    principals_raw = raw.get("principals") or {}
    if not isinstance(principals_raw, Mapping):
        raise ConfigError("quotas.principals must be a mapping of principal -> {daily_images}")
    return QuotaPolicy(
        enabled=True,
        default=Limits() if default is None else _entry(default, "quotas.default"),
        principals={
            str(name): _entry(entry, f"quotas.principals.{name}")
            for name, entry in principals_raw.items()
        },
    )


def quota_policy(config: Config) -> QuotaPolicy:
    raw = config.raw.get("quotas") if config.raw else None
    if raw is None:
        raw = config.quotas or None
    return validate_quotas_section(raw)
