"""Detections as GeoJSON, the way QuPath imports objects (File > Import objects).

Each detection is a ``Feature`` whose geometry is its box as a closed ``Polygon`` in pixel
coordinates of the submitted image (x to the right, y down, origin at the top-left
corner: QuPath's own convention for an image's objects).  Its ``properties`` carry what
QuPath reads back: ``objectType: "detection"`` (a detection object, not an annotation),
``classification`` (the label, with the colour QuPath draws its class in) and
``measurements`` (the score).  ``measurements`` is a map of name to number, as QuPath
writes it since 0.4 and reads it since then (before 0.4 it wrote and read a list of
``{"name", "value"}``).

Pure: dictionaries in, dictionaries out, no image and no HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MEDIA_TYPE = "application/geo+json"
OBJECT_TYPE = "detection"
SCORE = "score"  # the measurement's name, the same word as the JSON answer's field

# Colours of the service's labels in order; the first is the green the rendered pictures
# draw their boxes in, so a slide looks the same in QuPath as in the gateway's JPEG.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 200, 60),
    (230, 25, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (128, 128, 0),
)


def label_colour(label: str, labels: Sequence[str]) -> list[int]:
    """The label's colour: by its place among the service's labels, so every slide of a
    service gives a class the same colour (a label the service does not list, by name)."""
    if label in labels:
        index = list(labels).index(label)
    else:
        index = sum(label.encode("utf-8"))
    return list(PALETTE[index % len(PALETTE)])


def box_polygon(box: Sequence[float]) -> list[list[list[float]]]:
    """``[x0, y0, x1, y1]`` as one closed ring, its first corner repeated at the end.

    The corners go counterclockwise with y pointing up, as RFC 7946 asks of an exterior
    ring; drawn on an image (y down) the same ring runs clockwise, which QuPath ignores.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    return [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]


def feature(detection: Mapping[str, Any], labels: Sequence[str]) -> dict[str, Any]:
    """One ``{"box", "score", "label"}`` of the ``:detect`` answer as a QuPath detection."""
    label = str(detection["label"])
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": box_polygon(detection["box"])},
        "properties": {
            "objectType": OBJECT_TYPE,
            "classification": {"name": label, "color": label_colour(label, labels)},
            "measurements": {SCORE: float(detection["score"])},
        },
    }


def feature_collection(
    detections: Iterable[Mapping[str, Any]],
    labels: Sequence[str],
    about: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every detection as a ``Feature``, in the answer's order (by score, best first).

    ``about`` (the service, count, threshold, image size, ...) goes beside ``features`` as
    RFC 7946's foreign members: readers that know it keep the answer's facts, QuPath and
    other GeoJSON readers skip it.
    """
    doc: dict[str, Any] = {"type": "FeatureCollection"}
    doc.update({k: v for k, v in (about or {}).items() if k not in ("type", "features")})
    doc["features"] = [feature(d, labels) for d in detections]
    return doc
