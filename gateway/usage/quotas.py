"""Daily image quotas from the ``quotas`` section of the configuration.

No ``quotas`` section means no quotas at all (and no quota reads).  With one, a principal's
limit is, in order: its document in the ``quotas`` collection (``daily_images``; set by an
administrator without a redeploy), ``quotas.principals[principal]``, ``quotas.default``,
else unlimited.  ``daily_images: null`` means unlimited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Config, ConfigError
from gateway.schema import INTEGER, Fields, MapOf

_DAILY = Fields({"daily_images": INTEGER})
CONFIG_SCHEMA = Fields({"default": _DAILY, "principals": MapOf(_DAILY)})  # ``quotas``


def _limit(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where} must be a whole number >= 0 or null, got {value!r}")
    return value


def parse_limit(raw: Any) -> int | None:
    """A ``daily_images`` value read from a quota document; junk counts as unlimited."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw < 0:
        return None
    return int(raw)


def _daily_images(entry: Any, where: str) -> int | None:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a mapping like {{daily_images: 500}}")
    unknown = set(entry) - {"daily_images"}
    if unknown:
        raise ConfigError(f"{where} has unknown keys: {', '.join(sorted(map(str, unknown)))}")
    return _limit(entry.get("daily_images"), f"{where}.daily_images")


@dataclass(frozen=True)
class QuotaPolicy:
    enabled: bool = False
    default_daily_images: int | None = None
    principals: dict[str, int | None] = field(default_factory=dict)

    def configured_limit(self, principal: str) -> int | None:
        if principal in self.principals:
            return self.principals[principal]
        return self.default_daily_images


def quota_policy(config: Config) -> QuotaPolicy:
    raw = config.raw.get("quotas") if config.raw else None
    if raw is None:
        raw = config.quotas or None
    if raw is None:
        return QuotaPolicy(enabled=False)
    if not isinstance(raw, Mapping):
        raise ConfigError("quotas must be a mapping")
    unknown = set(raw) - {"default", "principals"}
    if unknown:
        raise ConfigError(f"quotas has unknown keys: {', '.join(sorted(map(str, unknown)))}")
    default = raw.get("default")
    principals_raw = raw.get("principals") or {}
    if not isinstance(principals_raw, Mapping):
        raise ConfigError("quotas.principals must be a mapping of principal -> {daily_images}")
    principals = {
        str(name): _daily_images(entry, f"quotas.principals.{name}")
        for name, entry in principals_raw.items()
    }
    return QuotaPolicy(
        enabled=True,
        default_daily_images=None if default is None else _daily_images(default, "quotas.default"),
        principals=principals,
    )
