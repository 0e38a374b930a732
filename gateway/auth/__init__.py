"""Inbound authentication and per-service authorization.

Interface used by the REST layer (kept stable): ``build_authenticator(config)`` returns an
object with ``authenticate(request, ctx)`` (sets ``ctx.principal`` and
``ctx.auth_method`` or raises :class:`~gateway.errors.Unauthenticated`) and
``authorize(ctx, service)`` (raises :class:`~gateway.errors.Forbidden`).
"""

from __future__ import annotations

from typing import Any

from gateway.config import Config, ServiceConfig
from gateway.context import RequestContext


class OpenAuthenticator:
    """No ``auth`` section: every caller is ``anonymous`` (the local embedded default)."""

    open = True

    def authenticate(self, request: Any, ctx: RequestContext) -> None:
        ctx.principal, ctx.auth_method = "anonymous", "none"

    def authorize(self, ctx: RequestContext, service: ServiceConfig) -> None:
        return None


def build_authenticator(config: Config) -> OpenAuthenticator:
    return OpenAuthenticator()
