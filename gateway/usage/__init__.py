"""Usage records and quotas.

Interface used by the REST layer (kept stable): ``build_usage(config)`` returns a recorder
with ``begin(ctx)`` (called once the caller is admitted, before the body is read; raises
:class:`~gateway.errors.QuotaExceeded` past ``requests_per_minute``),
``check_quota(ctx, images)`` (raises :class:`~gateway.errors.QuotaExceeded`) and
``finish(ctx)`` (called for every request, failed ones too, before the response is
returned; it must never raise); ``rate_limit_headers(ctx)`` (the answer's ``RateLimit``
fields, called just before ``finish``; never raises).  ``validate_usage_section`` and
``validate_quotas_section`` check those configuration sections alone.  Records go to
Firestore when it is configured (and on Google Cloud), else to an embedded SQLite file;
see docs/usage.md.
"""

from __future__ import annotations

from gateway.config import Config
from gateway.context import RequestContext
from gateway.usage.delivery import log_event
from gateway.usage.quotas import quota_policy, validate_quotas_section
from gateway.usage.recorder import UsageRecorder
from gateway.usage.settings import check_writable, usage_settings, validate_usage_section


class NullUsage:
    """``usage.enabled: false``: no records, no quotas."""

    def begin(self, ctx: RequestContext) -> None:
        return None

    def check_quota(self, ctx: RequestContext, images: int) -> None:
        return None

    def finish(self, ctx: RequestContext) -> None:
        return None

    def rate_limit_headers(self, ctx: RequestContext) -> dict[str, str]:
        return {}


def build_usage(config: Config) -> UsageRecorder | NullUsage:
    """The recorder for this configuration; raises ConfigError for a bad usage/quotas section."""
    settings = usage_settings(config)
    policy = quota_policy(config)
    if not settings.enabled:
        return NullUsage()
    check_writable(settings)
    if settings.per_instance_on_cloud:
        log_event(
            "WARNING",
            "usage: records and quotas are kept per instance (SQLite in /tmp on Google Cloud, "
            "usage.store: sqlite): each instance counts alone and its records go with it; "
            "remove usage.store to use the project's Firestore",
            sqlite_path=str(settings.sqlite_path),
        )
    return UsageRecorder(config, settings, policy)


__all__ = [
    "NullUsage",
    "UsageRecorder",
    "build_usage",
    "validate_quotas_section",
    "validate_usage_section",
]
