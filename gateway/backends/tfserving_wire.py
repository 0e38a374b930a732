"""TF Serving's REST API as the gateway speaks it to the hidden model: the outbound half.

Request bodies in the AutoML Vision Edge format (tiles for a detector, whole images for a
classifier), and strict readers of the model's answers, because a backend that answers
garbage must become a 502, not a wrong count or a wrong label.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gateway.backends.base import (
    BAD_RESPONSE,
    MODEL_NOT_AVAILABLE,
    Classification,
    ModelState,
    TileDetections,
    too_many_detections,
)
from gateway.backends.boxes import to_tile_pixels
from gateway.backends.labels import LabelTable
from gateway.errors import BackendBadResponse
from gateway.jsonio import loads


def backend_request(encoded_b64: Sequence[bytes], keys: Sequence[str]) -> bytes:
    """The body for ``:predict``, written directly so megabytes of base64 are not re-escaped."""
    pieces = [b'{"instances":[']
    for i, (b64, key) in enumerate(zip(encoded_b64, keys, strict=True)):
        pieces += [b',{"image_bytes":{"b64":"' if i else b'{"image_bytes":{"b64":"', b64]
        pieces.append(b'"},"key":"' + key.encode() + b'"}')
    pieces.append(b"]}")
    return b"".join(pieces)  # one copy of the payload, not one per nesting level


# Outputs read into the detections themselves, or describing the image rather than its
# detections (image_info: the tile's size, whatever the detection count).
READ_OUTPUTS = frozenset(
    {
        "detection_boxes",
        "detection_scores",
        "detection_classes",
        "detection_classes_as_text",
        "num_detections",
        "key",
        "image_info",
    }
)


def _extra_outputs(p: Mapping[str, Any], count: int, n: int) -> dict[str, np.ndarray]:
    """The model's other outputs with one value per detection (a first dimension of the
    detection count), cut to the real detections; anything else is left out."""
    extras = {}
    for name, value in p.items():
        if name in READ_OUTPUTS or not isinstance(value, list) or len(value) != count:
            continue
        try:
            arr = np.asarray(value)
        except ValueError:  # ragged
            continue
        if arr.dtype.kind in "biuf":
            extras[name] = arr.astype(np.float64 if arr.dtype.kind == "f" else np.int64)[:n]
        elif arr.dtype.kind == "U":
            extras[name] = arr[:n]
    return extras


def _numbers(value: Any, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BackendBadResponse(f"the model answered non-numeric {where}") from exc
    return arr


def _prediction_rows(body: bytes, column: str, expected: int, what: str) -> list[Mapping]:
    """The answer's ``expected`` predictions as rows; a columnar ``outputs`` (its length
    read from ``column``) is turned into rows."""
    try:
        doc = loads(body)
    except Exception as exc:
        raise BackendBadResponse("the model answered with a body that is not JSON") from exc
    preds = doc.get("predictions") if isinstance(doc, Mapping) else None
    if isinstance(doc, Mapping) and preds is None and isinstance(doc.get("outputs"), Mapping):
        out = doc["outputs"]
        if isinstance(out.get(column), list):
            preds = [
                {k: (v[i] if isinstance(v, list) and len(v) > i else None) for k, v in out.items()}
                for i in range(len(out[column]))
            ]
    if not isinstance(preds, list) or len(preds) != expected:
        raise BackendBadResponse(
            f"the model answered {len(preds) if isinstance(preds, list) else 'no'} "
            f"predictions for {expected} {what}"
        )
    for i, p in enumerate(preds):
        if not isinstance(p, Mapping):
            raise BackendBadResponse(f"prediction {i} of the model's answer is not an object")
    return preds


def parse_backend_predictions(
    body: bytes,
    expected: int,
    tile_sizes: Sequence[tuple[int, int]],
    table: LabelTable,
    max_detections: int | None = None,
) -> list[TileDetections]:
    """The model's answer for ``expected`` tiles, boxes converted to tile pixels."""
    result = []
    for i, p in enumerate(_prediction_rows(body, "detection_scores", expected, "tiles")):
        for name in ("detection_boxes", "detection_scores"):
            rows = p.get(name)
            count = len(rows) if isinstance(rows, list) else 0
            refusal = too_many_detections(count, max_detections)
            if refusal is not None:
                raise refusal
        boxes = _numbers(p.get("detection_boxes", []), "detection_boxes")
        scores = _numbers(p.get("detection_scores", []), "detection_scores")
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.ndim != 1:
            raise BackendBadResponse("the model answered detection_boxes of the wrong shape")
        n = min(len(boxes), len(scores))
        num = p.get("num_detections")
        if isinstance(num, (int, float)) and not isinstance(num, bool) and math.isfinite(num):
            n = min(n, max(int(num), 0))
        texts = p.get("detection_classes_as_text")
        values = p.get("detection_classes")
        texts = texts if isinstance(texts, list) else []
        values = values if isinstance(values, list) else []
        classes = np.empty(n, dtype=np.int32)
        for j in range(n):
            text = texts[j] if j < len(texts) and isinstance(texts[j], str) else None
            v = values[j] if j < len(values) else None
            v = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
            if v is not None and not math.isfinite(v):
                v = None
            classes[j] = table.index(text, v)
        w, h = tile_sizes[i]
        px = to_tile_pixels(boxes[:n], "yxyx_normalized", w, h)  # AutoML's layout
        extras = _extra_outputs(p, len(scores), n)
        result.append(TileDetections(boxes=px, scores=scores[:n], classes=classes, extras=extras))
    return result


def parse_classifications(
    body: bytes, expected: int, labels: Sequence[str]
) -> list[Classification]:
    """A classifier's answer for ``expected`` images: ``{"scores": [...], "labels": [...]}``.

    ``labels`` (from the configuration) name the scores of a model that answers scores
    alone; a model that answers its own labels is believed.
    """
    out = []
    for i, p in enumerate(_prediction_rows(body, "scores", expected, "images")):
        scores = _numbers(p.get("scores"), "scores")
        if scores.ndim != 1 or scores.size == 0 or not np.all(np.isfinite(scores)):
            raise BackendBadResponse(f"prediction {i} has no list of finite scores")
        names = p.get("labels")
        if names is None:
            if len(labels) != scores.size:
                raise BackendBadResponse(
                    f"the model answered {scores.size} scores without labels, and "
                    f"{len(labels)} labels are configured"
                )
            names = list(labels)
        if (
            not isinstance(names, list)
            or len(names) != scores.size
            or not all(isinstance(n, (str, int)) and not isinstance(n, bool) for n in names)
        ):
            raise BackendBadResponse(f"prediction {i} has labels that do not match its scores")
        out.append(Classification(tuple(str(n) for n in names), tuple(scores.tolist())))
    return out


def backend_error_message(body: bytes) -> str:
    """TF Serving's ``{"error": "..."}``, shortened, for logs and client messages."""
    try:
        doc = loads(body)
        msg = doc.get("error") if isinstance(doc, Mapping) else None
    except Exception:
        msg = None
    text = msg if isinstance(msg, str) else body[:200].decode("utf-8", "replace")
    return " ".join(text.split())[:300]


def model_status(body: bytes) -> ModelState:
    """(available, version, detail, reason) from ``GET /v1/models/{model}``."""
    try:
        doc = loads(body)
    except Exception:
        return ModelState(False, None, "model status is not JSON", BAD_RESPONSE)
    if isinstance(doc, Mapping) and isinstance(doc.get("ready"), bool):
        # KServe's V1 protocol answers the same route with {"name": ..., "ready": true}.
        if doc["ready"]:
            return ModelState(True, None, "ready")
        return ModelState(False, None, "not ready", MODEL_NOT_AVAILABLE)
    rows = doc.get("model_version_status") if isinstance(doc, Mapping) else None
    if not isinstance(rows, list) or not rows:
        return ModelState(False, None, "model status lists no versions", BAD_RESPONSE)
    available = [
        str(row.get("version", ""))
        for row in rows
        if isinstance(row, Mapping) and row.get("state") == "AVAILABLE"
    ]
    if available:  # TF Serving serves the latest version unless asked for another
        latest = max(available, key=lambda v: (v.isdigit(), int(v) if v.isdigit() else 0))
        return ModelState(True, latest or None, "AVAILABLE")
    states = [str(r.get("state")) for r in rows if isinstance(r, Mapping)]
    detail = f"no AVAILABLE version (states: {', '.join(states) or 'none'})"
    return ModelState(False, None, detail, MODEL_NOT_AVAILABLE)
