"""What every kind does before a model is called: each image's header read and checked
once, the caller's quota, and errors that name the instance they are about."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.config import ServiceConfig
from gateway.context import RequestContext
from gateway.errors import BadRequest, GatewayError
from gateway.pipeline.images import ImageInfo, probe


class Quota(Protocol):
    """The usage recorder's quota check (``gw.usage``): raises QuotaExceeded."""

    def check_quota(self, ctx: RequestContext, images: int) -> None: ...


def require_kind(service: ServiceConfig, kind: str) -> None:
    """A use case runs only the kind of service it is for (the CLI calls them directly)."""
    if service.kind != kind:
        raise BadRequest(
            f"service {service.name!r} is a {service.kind} service, not a {kind} service",
            code="wrong_route",
        )


def for_instance(exc: GatewayError, index: int, count: int) -> GatewayError:
    """The same error, naming the instance when a request carries several images."""
    if count == 1:
        return exc
    return GatewayError(
        f"instance {index}: {exc.message}", status=exc.status, code=exc.code, headers=exc.headers
    )


def check_images(
    ctx: RequestContext, images: Sequence[bytes], max_pixels: int, quota: Quota
) -> list[ImageInfo]:
    """Header checks of every image before any model work, then the quota."""
    infos = []
    for i, data in enumerate(images):
        try:
            info = probe(data, max_pixels)
        except GatewayError as exc:
            if i == 0:
                ctx.image = {"bytes": len(data), "width": None, "height": None, "format": None}
            raise for_instance(exc, i, len(images)) from exc
        if i == 0:
            ctx.image = {
                "bytes": len(data),
                "width": info.width,
                "height": info.height,
                "format": info.format,
            }
        infos.append(info)
    quota.check_quota(ctx, images=len(images))
    return infos
