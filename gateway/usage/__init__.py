"""Usage records and quotas.

Interface used by the REST layer (kept stable): ``build_usage(config)`` returns a recorder
with ``begin(ctx)`` (called once the caller is known, before the backend is called),
``check_quota(ctx, images)`` (raises :class:`~gateway.errors.QuotaExceeded`) and
``finish(ctx)`` (called for every request, failed ones too, before the response is
returned; it must never raise).
"""

from __future__ import annotations

from gateway.config import Config
from gateway.context import RequestContext


class NullUsage:
    def begin(self, ctx: RequestContext) -> None:
        return None

    def check_quota(self, ctx: RequestContext, images: int) -> None:
        return None

    def finish(self, ctx: RequestContext) -> None:
        return None


def build_usage(config: Config) -> NullUsage:
    return NullUsage()
