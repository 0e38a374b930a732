"""Detection: slides tiled, the tiles streamed to the model, the boxes merged per slide."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from gateway.backends.base import Backend, Detector
from gateway.config import DETECTION, Limits
from gateway.context import RequestContext
from gateway.errors import PayloadTooLarge, UndecodableImage, UnsupportedImage
from gateway.pipeline import decode_budget
from gateway.pipeline import merge as merging
from gateway.pipeline.slide import SlideResult, detect_slide
from gateway.registry import Service
from gateway.usecases.checks import Quota, admit_images, for_instance, require_kind


@dataclass(frozen=True)
class DetectedSlide:
    slide: SlideResult  # every detection of the model, merged
    kept: merging.Merged  # those at or above the threshold


@dataclass(frozen=True)
class Detections:
    threshold: float
    slides: list[DetectedSlide]  # one per image, in order


def detect(
    service: Service,
    images: Sequence[bytes],
    threshold: float | None,
    *,
    ctx: RequestContext,
    limits: Limits,
    quota: Quota,
    backend: Backend | None = None,
) -> Detections:
    """Each slide checked, then decoded at most once, tiled, sent and merged; one deadline.

    ``threshold`` None is the service's own; ``backend`` is the service's unless a version
    or label of its model was asked for (:meth:`Backend.pinned`)."""
    cfg = service.config
    require_kind(cfg, DETECTION)
    threshold = cfg.threshold if threshold is None else threshold
    ctx.instances, ctx.threshold = len(images), threshold
    backend = cast(Detector, backend or service.backend)
    infos, deadline = admit_images(ctx, images, limits, quota, backend, cfg.backend.timeout_s)
    slides = []
    for i, (data, info) in enumerate(zip(images, infos, strict=True)):
        try:
            with decode_budget.decoding(limits, info):  # waits for memory, or 503
                result = detect_slide(data, info, cfg, backend, deadline, limits.max_pixels)
        except (PayloadTooLarge, UnsupportedImage, UndecodableImage) as exc:
            raise for_instance(exc, i, len(images)) from exc  # the image's fault, not the model's
        kept = merging.above(result.detections, threshold)
        ctx.tiles += len(result.tiles)
        ctx.backend_ms += result.backend_ms
        ctx.detections += len(kept)
        ctx.backend_model, ctx.backend_version = result.model, result.version
        slides.append(DetectedSlide(result, kept))
    return Detections(threshold, slides)
