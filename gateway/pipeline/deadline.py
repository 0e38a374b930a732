"""The request's one deadline, checked between the steps that turn images into model input.

A service's ``timeout_s`` bounds the whole request once its images are admitted: waiting
for room in the decode budget, decoding, cutting tiles and the model's answers.  A single
decode or cut cannot be interrupted, so each is bounded by the image limits instead
(pixels, decoded size, scans and segments: :mod:`gateway.pipeline.structure`), and the
deadline is checked before each one starts and between bands of tiles.
"""

from __future__ import annotations

import time

from gateway.errors import BackendTimeout


def time_left(deadline: float, before: str) -> float:
    """Seconds left; 504 ``backend_timeout`` when none are, naming the step not started."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise BackendTimeout(
            f"the request's time (the service's timeout_s) ran out before {before}"
        )
    return left
