"""An image's own fault is answered before the model server's state.

While the model server is known to be down, requests are answered 503 after one TCP
probe, before their slides are decoded (``Backend.ensure_reachable``).  A truncated image
passes the header checks, so it too got the 503, and its 422 only once the model was back:
the caller retried an image that could never succeed.  On that path the images are now
decoded once, under the decode budget, before the 503: a broken one gets its 422 (or 413)
instead.  Nothing is decoded twice: the request ends there either way.
"""

from __future__ import annotations

from gateway.config import Limits
from gateway.pipeline import decode_budget
from gateway.pipeline.images import ImageInfo, decode_image


def check_decodable(limits: Limits, data: bytes, info: ImageInfo) -> None:
    """Decode the image once and drop it; raises its own 413/415/422 error."""
    with decode_budget.decoding(limits, info):
        decode_image(data, limits.max_pixels)
