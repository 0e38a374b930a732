"""Usage records and quotas.

Interface used by the REST layer (kept stable): ``build_usage(config)`` returns a recorder
with ``begin(ctx)`` (called once the caller is known, before the backend is called),
``check_quota(ctx, images)`` (raises :class:`~gateway.errors.QuotaExceeded`) and
``finish(ctx)`` (called for every request, failed ones too, before the response is
returned; it must never raise).  Records go to Firestore when it is configured, else to an
embedded SQLite file; see docs/usage.md.
"""

from __future__ import annotations

from gateway.config import Config
from gateway.context import RequestContext
from gateway.usage.quotas import quota_policy
from gateway.usage.recorder import UsageRecorder
from gateway.usage.settings import usage_settings


class NullUsage:
    """``usage.enabled: false``: no records, no quotas."""

    def begin(self, ctx: RequestContext) -> None:
        return None

    def check_quota(self, ctx: RequestContext, images: int) -> None:
        return None

    def finish(self, ctx: RequestContext) -> None:
        return None


def build_usage(config: Config) -> UsageRecorder | NullUsage:
    """The recorder for this configuration; raises ConfigError for a bad usage/quotas section."""
    settings = usage_settings(config)
    policy = quota_policy(config)
    if not settings.enabled:
        return NullUsage()
    return UsageRecorder(config, settings, policy)


__all__ = ["NullUsage", "UsageRecorder", "build_usage"]
