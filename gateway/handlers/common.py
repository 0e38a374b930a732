"""Steps shared by the model routes: reading a body, or one image in any of its forms."""

from __future__ import annotations

from typing import Any

from gateway.context import RequestContext
from gateway.errors import BadRequest, PayloadTooLarge
from gateway.runtime import Gateway


def read_body(request: Any, ctx: RequestContext, max_bytes: int) -> bytes:
    """The raw body, refused as 413 before reading when it is declared too large."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        ctx.body_bytes = declared
        raise PayloadTooLarge(f"the body is {declared:,} bytes; the limit is {max_bytes:,}")
    data = request.stream.read(max_bytes + 1)
    ctx.body_bytes = len(data)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the body is larger than the limit of {max_bytes:,} bytes")
    if not data:
        raise BadRequest("the request body is empty")
    return data


def read_image_request(gw: Gateway, request: Any, ctx: RequestContext, codec: Any) -> Any:
    """One image as JSON, a multipart upload or a raw ``image/*`` body, parsed by ``codec``
    (:mod:`gateway.codecs.detect` or :mod:`gateway.codecs.classify`)."""
    content_type = (request.mimetype or "").lower()
    limit = gw.config.limits.max_body_bytes
    if content_type == "multipart/form-data":
        declared = request.content_length
        ctx.body_bytes = declared or 0
        if declared is None or declared > limit:
            raise PayloadTooLarge(
                f"multipart uploads need a Content-Length of at most {limit:,} bytes"
            )
        return codec.parse_form(request.files, request.form, request.args)
    body = read_body(request, ctx, limit)
    if content_type in ("application/json", "") or content_type.endswith("+json"):
        return codec.parse_json(body, request.args)
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        return codec.parse_raw(body, request.args)
    from gateway.codecs.detect import unsupported_content_type  # off :predict's cold start

    raise unsupported_content_type(content_type)
