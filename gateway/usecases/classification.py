"""Classification: each image checked as for detection, then sent whole, once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from gateway.backends.base import Backend, Classifier, ImageInput
from gateway.config import Limits
from gateway.context import Facts
from gateway.errors import PayloadTooLarge, UndecodableImage, UnsupportedImage
from gateway.pipeline import decode_budget
from gateway.pipeline.deadline import time_left
from gateway.pipeline.images import ImageInfo
from gateway.pipeline.whole import whole_image
from gateway.usecases.checks import Quota, admit_images, for_instance, reporting


@dataclass(frozen=True)
class ClassifiedImage:
    info: ImageInfo  # the submitted image, oriented
    labels: tuple[str, ...]  # the model's order
    scores: tuple[float, ...]

    def best(self) -> tuple[str, float]:
        i = max(range(len(self.scores)), key=lambda j: self.scores[j])
        return self.labels[i], self.scores[i]


@dataclass(frozen=True)
class Classifications:
    images: list[ClassifiedImage]  # one per image, in order
    model: str
    version: str | None
    facts: Facts = field(default_factory=Facts)


def classify(
    service: Any,
    images: Sequence[bytes],
    *,
    limits: Limits,
    quota: Quota,
    backend: Backend | None = None,
) -> Classifications:
    """``service`` is a registry service of the classification kind."""
    cfg = service.config
    facts = Facts(instances=len(images))
    classifier = cast(Classifier, backend or service.backend)
    with reporting(facts):
        infos, deadline = admit_images(
            facts, images, limits, quota, classifier, cfg.backend.timeout_s
        )
        inputs = []
        for i, (data, info) in enumerate(zip(images, infos, strict=True)):
            try:
                time_left(deadline, "reading the image")
                with decode_budget.decoding(limits, info, until=deadline):
                    encoded = whole_image(data, info, cfg.options.max_side, limits.max_pixels)
                inputs.append(ImageInput(encoded))
            except (PayloadTooLarge, UnsupportedImage, UndecodableImage) as exc:
                raise for_instance(exc, i, len(images)) from exc
        result = classifier.classify(inputs, deadline)
        facts.backend_ms += result.backend_ms
        facts.backend_model, facts.backend_version = result.model, result.version
    out = [
        ClassifiedImage(info, c.labels, c.scores)
        for info, c in zip(infos, result.predictions, strict=True)
    ]
    return Classifications(out, result.model, result.version, facts)
