"""Detection: slides tiled, the tiles streamed to the model, the boxes merged per slide."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from gateway.backends.base import Backend, Detector
from gateway.config import Limits
from gateway.context import Facts
from gateway.errors import PayloadTooLarge, UndecodableImage, UnsupportedImage
from gateway.pipeline import decode_budget
from gateway.pipeline import merge as merging
from gateway.pipeline.images import ImageInfo
from gateway.pipeline.slide import SlideResult, detect_slide
from gateway.usecases.checks import Quota, admit_images, for_instance, reporting


@dataclass(frozen=True)
class DetectedSlide:
    slide: SlideResult  # every detection of the model, merged
    kept: merging.Merged  # those at or above the threshold
    info: ImageInfo  # the header, read once


@dataclass(frozen=True)
class Detections:
    threshold: float  # 0 for an uncut answer
    slides: list[DetectedSlide]  # one per image, in order
    facts: Facts = field(default_factory=Facts)


def detect(
    service: Any,
    images: Sequence[bytes],
    threshold: float | None,
    *,
    limits: Limits,
    quota: Quota,
    backend: Backend | None = None,
    uncut: bool = False,
    rendered: bool = False,
) -> Detections:
    """Each slide checked, then decoded at most once, tiled, sent and merged; one deadline.

    ``service`` is a registry service of the detection kind; ``threshold`` None is its own;
    ``uncut`` answers every detection at any score (TF Serving's and V2's answer without a
    threshold): raw detections, which the facts keep apart from a count at a threshold.
    ``backend`` is the service's unless a version or label of its model was asked for
    (:meth:`Backend.pinned`); ``rendered``: the answer will be the slide drawn, whose
    memory (:data:`decode_budget.RENDER_COPIES`) is checked before the model is called."""
    cfg = service.config
    opts = cfg.options
    threshold = 0.0 if uncut else opts.threshold if threshold is None else threshold
    facts = Facts(instances=len(images), threshold=None if uncut else threshold, uncut=uncut)
    detector = cast(Detector, backend or service.backend)
    with reporting(facts):
        infos, deadline = admit_images(
            facts,
            images,
            limits,
            quota,
            detector,
            cfg.backend.timeout_s,
            copies=decode_budget.RENDER_COPIES if rendered else 1,
        )
        slides = []
        for i, (data, info) in enumerate(zip(images, infos, strict=True)):
            try:
                with decode_budget.decoding(limits, info, until=deadline):  # waits, or 503
                    result = detect_slide(
                        data, info, opts.tile, detector, deadline, limits.max_pixels
                    )
            except (PayloadTooLarge, UnsupportedImage, UndecodableImage) as exc:
                raise for_instance(exc, i, len(images)) from exc  # the image's fault
            kept = merging.above(result.detections, threshold)
            facts.tiles += len(result.tiles)
            facts.backend_ms += result.backend_ms
            facts.detections += len(kept)
            facts.backend_model, facts.backend_version = result.model, result.version
            slides.append(DetectedSlide(result, kept, info))
    return Detections(threshold, slides, facts)
