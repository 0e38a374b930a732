"""Detection (the default kind): slides tiled at the model's scale, boxes merged.

Served on ``:detect`` (the gateway's own API), TF Serving's ``:predict``, the Open
Inference Protocol's ``infer`` and Vertex AI's ``:predict``; the only kind the embedded
detector can run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.codecs import tfserving_api
from gateway.config import ServiceConfig
from gateway.kinds.base import CliView, Kind, Output
from gateway.pipeline.matching import match_boxes
from gateway.pipeline.merge import above
from gateway.pipeline.tiling import TileSize
from gateway.schema import INTEGER, NUMBER, STRING, ConfigError, Fields, ListOf, Setting
from gateway.usecases.detection import Detections, detect


@dataclass(frozen=True)
class DetectionOptions:
    tile: TileSize
    threshold: float
    labels: tuple[str, ...]  # the model's class names
    cell_size_px: float | None  # the embedded detector's cell diameter; None: estimated


class Detection(Kind):
    name = "detection"
    description = "finds cells on a slide: boxes, scores and a count"
    fields = Fields(
        {
            "tile": Fields(
                {
                    "width": Setting(INTEGER, TileSize.width, lo=32),
                    "height": Setting(INTEGER, TileSize.height, lo=32),
                    "overlap": Setting(INTEGER, TileSize.overlap, lo=0),
                }
            ),
            "threshold": Setting(NUMBER, 0.3, lo=0, hi=1),
            "labels": Setting(ListOf(STRING), ["eos"]),
            "cell_size_px": Setting(NUMBER, None, lo=4),
        }
    )
    routes = (":detect", ":predict", "infer", "vertex")
    role = "detector"
    compares = "slides"
    embedded = True
    cli = CliView(
        route=":detect",
        columns=("count", "width", "height", "seconds"),
        csv_fields=("path", "count", "width", "height", "seconds", "threshold", "error", "code"),
        counts=True,
    )
    outputs = (
        Output("detection_boxes", "FP32", (-1, -1, 4)),
        Output("detection_scores", "FP32", (-1, -1)),
        Output("detection_classes", "FP32", (-1, -1)),
        Output("detection_classes_as_text", "BYTES", (-1, -1)),
        Output("num_detections", "FP32", (-1,)),
    )

    def options(self, values: dict[str, Any], where: str) -> DetectionOptions:
        tile = TileSize(**values["tile"])
        if tile.overlap * 2 > min(tile.width, tile.height):
            raise ConfigError(f"{where}.tile.overlap must be at most half the tile's smaller side")
        labels = values["labels"]
        if not labels or not all(labels):
            raise ConfigError(f"{where}.labels must be a non-empty list of strings")
        return DetectionOptions(tile, values["threshold"], tuple(labels), values["cell_size_px"])

    def public(self, service: ServiceConfig) -> dict[str, Any]:
        o: DetectionOptions = service.options
        return {
            "tile": {"width": o.tile.width, "height": o.tile.height, "overlap": o.tile.overlap},
            "threshold": o.threshold,
            "labels": list(o.labels),
            "cell_size_px": o.cell_size_px,
        }

    def infer(self, service, images, threshold, *, limits, quota, backend=None) -> Detections:
        # A tensor protocol's answer cuts nothing unless a threshold is asked for.
        return detect(
            service,
            images,
            threshold,
            limits=limits,
            quota=quota,
            backend=backend,
            uncut=threshold is None,
        )

    def compare(
        self, primary: Detections, shadow: Detections, service: ServiceConfig
    ) -> dict[str, Any]:
        """Per slide: both counts at the service's threshold, the boxes matched one to one
        at IoU >= 0.5, those only one variant found, and the count difference (shadow minus
        primary)."""
        threshold = service.options.threshold
        slides = []
        for a, b in zip(primary.slides, shadow.slides, strict=True):
            kept_a = above(a.slide.detections, threshold)
            kept_b = above(b.slide.detections, threshold)
            found = match_boxes(kept_a.boxes, kept_b.boxes)
            slides.append(
                {
                    "primary_count": len(kept_a),
                    "shadow_count": len(kept_b),
                    "difference": len(kept_b) - len(kept_a),
                    "matched": len(found.pairs),
                    "only_primary": len(found.only_a),
                    "only_shadow": len(found.only_b),
                    "boxes": {
                        "matched": [
                            {
                                "primary": _box(kept_a.boxes[i]),
                                "shadow": _box(kept_b.boxes[j]),
                                "iou": round(iou, 4),
                            }
                            for i, j, iou in found.pairs
                        ],
                        "only_primary": [_box(kept_a.boxes[i]) for i in found.only_a],
                        "only_shadow": [_box(kept_b.boxes[j]) for j in found.only_b],
                    },
                }
            )
        return {"threshold": threshold, "slides": slides}

    def rows(self, result: Detections, keys: Sequence[str | None]) -> list[Mapping[str, Any]]:
        return [
            tfserving_api.prediction(
                s.kept, s.slide.width, s.slide.height, s.slide.labels, s.slide.class_values, key
            )
            for s, key in zip(result.slides, keys, strict=True)
        ]


def _box(box: Any) -> dict[str, float]:
    """A box as a map (Firestore holds no arrays of arrays), in slide pixels."""
    x0, y0, x1, y1 = (round(float(v), 1) for v in box)
    return {"x0": x0, "y0": y0, "x1": x1, "y1": y1}


KIND = Detection()
