"""Vertex AI online prediction as the gateway speaks it to an endpoint: the outbound half.

Request bodies for ``POST .../endpoints/{endpoint}:predict`` in the AutoML image schema
(``{"instances": [{"content": <base64>, "mimeType"}], "parameters": {...}}``), the packing of
tiles into requests under Vertex's online request limit, and strict readers of the answers
and of the endpoint resource: an endpoint that answers garbage must become a 502, never a
wrong count or a wrong label.

Vertex answers boxes as ``[xMin, xMax, yMin, yMax]`` normalized to the image sent, an order
none of the other model servers use; they are turned into tile pixels here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

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
from gateway.backends.tfserving_wire import LabelTable
from gateway.errors import BackendBadResponse
from gateway.jsonio import b64encode, dumps, loads

# Vertex refuses online prediction requests over 1.5 MB.
MAX_REQUEST_BYTES = 1_500_000
# Class ids small enough to stand for themselves as a float (TF's detection_classes);
# Vertex's own ids are int64 numbers written as strings, which do not.
_EXACT_ID = 2**53

T = TypeVar("T")

_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


def mime_type(data: bytes) -> str:
    """The image type of encoded bytes, from their signature (Vertex decodes by it)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for signature, mime in _SIGNATURES:
        if data.startswith(signature):
            return mime
    return "application/octet-stream"


def instance(image: bytes) -> bytes:
    """One instance of a request body, JSON as it will be sent: written directly so the
    base64 is made once and never re-escaped."""
    return b'{"content":"%s","mimeType":"%s"}' % (b64encode(image), mime_type(image).encode())


def predict_body(
    instances: Sequence[bytes], *, confidence_threshold: float, max_predictions: int
) -> bytes:
    """The ``:predict`` body for ``instances`` made by :func:`instance`."""
    parameters = dumps(
        {"confidenceThreshold": confidence_threshold, "maxPredictions": max_predictions}
    )
    return b"".join([b'{"instances":[', b",".join(instances), b'],"parameters":', parameters, b"}"])


def body_overhead(*, confidence_threshold: float, max_predictions: int) -> int:
    """The bytes of a body besides its instances (and the commas between them)."""
    return len(
        predict_body([], confidence_threshold=confidence_threshold, max_predictions=max_predictions)
    )


def pack(
    items: Iterable[tuple[bytes, T]],
    *,
    max_count: int,
    max_bytes: int = MAX_REQUEST_BYTES,
    overhead: int = 0,
) -> Iterator[list[tuple[bytes, T]]]:
    """``items`` (an instance and what goes with it) in batches, in order, each of at most
    ``max_count`` instances whose body (``overhead`` plus the instances and their commas)
    stays within ``max_bytes``; an instance too large for any body goes alone (the
    endpoint says whether it takes it)."""
    batch: list[tuple[bytes, T]] = []
    size = overhead
    for item in items:
        added = len(item[0]) + (1 if batch else 0)
        if batch and (len(batch) >= max_count or size + added > max_bytes):
            yield batch
            batch, size, added = [], overhead, len(item[0])
        batch.append(item)
        size += added
    if batch:
        yield batch


# -- reading answers -----------------------------------------------------------------------


def _bad(message: str) -> BackendBadResponse:
    return BackendBadResponse(f"the endpoint answered {message}")


def _document(body: bytes) -> Mapping[str, Any]:
    try:
        doc = loads(body)
    except Exception as exc:
        raise _bad("with a body that is not JSON") from exc
    if not isinstance(doc, Mapping):
        raise _bad("with a body that is not a JSON object")
    return doc


def _predictions(doc: Mapping[str, Any], expected: int, what: str) -> list[Mapping[str, Any]]:
    preds = doc.get("predictions")
    if not isinstance(preds, list) or len(preds) != expected:
        got = len(preds) if isinstance(preds, list) else "no"
        raise _bad(f"{got} predictions for {expected} {what}")
    for i, p in enumerate(preds):
        if not isinstance(p, Mapping):
            raise _bad(f"prediction {i} that is not an object")
    return preds


def answer_version(doc: Mapping[str, Any]) -> str | None:
    """The model version that answered: its ``modelVersionId``, else the deployed model's
    id (an endpoint may split its traffic between several)."""
    for key in ("modelVersionId", "deployedModelId"):
        value = doc.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _list(p: Mapping[str, Any], key: str, i: int, required: bool) -> list | None:
    value = p.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, list):
        raise _bad(f"prediction {i} without a list of {key}")
    return value


def _scores(p: Mapping[str, Any], i: int) -> np.ndarray:
    values = _list(p, "confidences", i, True)
    assert values is not None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise _bad(f"prediction {i} with confidences that are not numbers")
    scores = np.asarray(values, dtype=np.float64).reshape(len(values))
    if not np.all(np.isfinite(scores)):
        raise _bad(f"prediction {i} with non-finite confidences")
    return scores


def _classes(p: Mapping[str, Any], i: int, n: int) -> list[tuple[str | None, float | None]]:
    """(text, value) per detection from ``displayNames`` and ``ids`` (numbers or strings)."""
    names = _list(p, "displayNames", i, False)
    ids = _list(p, "ids", i, False)
    if names is None and ids is None:
        raise _bad(f"prediction {i} with neither displayNames nor ids")
    for key, values in (("displayNames", names), ("ids", ids)):
        if values is not None and len(values) != n:
            raise _bad(f"prediction {i} with {len(values)} {key} for {n} confidences")
    if names is not None and not all(isinstance(v, str) for v in names):
        raise _bad(f"prediction {i} with displayNames that are not text")
    out = []
    for j in range(n):
        value = None
        text = names[j] if names is not None else None
        if ids is not None:
            raw = ids[j]
            if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
                raise _bad(f"prediction {i} with an id that is neither a number nor text")
            number = _whole(raw)
            if number is not None and abs(number) < _EXACT_ID:
                value = float(number)
            elif text is None:
                text = str(raw)
        out.append((text, value))
    return out


def _whole(raw: str | int | float) -> int | None:
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            return None
    if isinstance(raw, float) and not (math.isfinite(raw) and raw == int(raw)):
        return None
    return int(raw)


def _boxes(p: Mapping[str, Any], i: int, n: int) -> np.ndarray:
    values = _list(p, "bboxes", i, True)
    assert values is not None
    if len(values) != n:
        raise _bad(f"prediction {i} with {len(values)} bboxes for {n} confidences")
    if not all(
        isinstance(b, list)
        and len(b) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)
        for b in values
    ):
        raise _bad(f"prediction {i} with bboxes that are not [xMin, xMax, yMin, yMax]")
    boxes = np.asarray(values, dtype=np.float64).reshape(n, 4)
    if not np.all(np.isfinite(boxes)):
        raise _bad(f"prediction {i} with non-finite bboxes")
    return boxes


def parse_detections(
    body: bytes,
    expected: int,
    tile_sizes: Sequence[tuple[int, int]],
    table: LabelTable,
    max_detections: int | None = None,
) -> tuple[list[TileDetections], str | None]:
    """An object detector's answer for ``expected`` tiles, boxes in tile pixels, and the
    model version that answered."""
    if len(tile_sizes) != expected:
        raise ValueError(f"{len(tile_sizes)} tile sizes for {expected} tiles")
    doc = _document(body)
    result = []
    for i, p in enumerate(_predictions(doc, expected, "tiles")):
        confidences = p.get("confidences")
        refusal = too_many_detections(
            len(confidences) if isinstance(confidences, list) else 0, max_detections
        )
        if refusal is not None:
            raise refusal
        scores = _scores(p, i)
        n = len(scores)
        boxes = _boxes(p, i, n)
        classes = np.array([table.index(t, v) for t, v in _classes(p, i, n)], dtype=np.int32)
        xyxy = boxes[:, [0, 2, 1, 3]]  # [xMin, xMax, yMin, yMax] -> [x0, y0, x1, y1]
        w, h = tile_sizes[i]
        result.append(
            TileDetections(
                boxes=to_tile_pixels(xyxy, "xyxy_normalized", w, h),
                scores=scores,
                classes=classes.reshape(n),
            )
        )
    return result, answer_version(doc)


def parse_classifications(body: bytes, expected: int) -> tuple[list[Classification], str | None]:
    """An image classifier's answer for ``expected`` images (its labels best first, as
    Vertex orders them), and the model version that answered."""
    doc = _document(body)
    result = []
    for i, p in enumerate(_predictions(doc, expected, "images")):
        scores = _scores(p, i)
        if scores.size == 0:
            raise _bad(f"prediction {i} without confidences")
        labels = []
        for text, value in _classes(p, i, len(scores)):
            labels.append(text if text is not None else f"{value:g}")
        result.append(Classification(tuple(labels), tuple(scores.tolist())))
    return result, answer_version(doc)


# -- errors, readiness ---------------------------------------------------------------------


def error_message(body: bytes) -> str:
    """A refusal's text from Google's ``{"error": {"code", "message", "status"}}``,
    shortened, for logs and passthrough answers."""
    try:
        doc = loads(body)
    except Exception:
        doc = None
    error = doc.get("error") if isinstance(doc, Mapping) else None
    text = None
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        status = error.get("status")
        text = f"{status}: {error['message']}" if isinstance(status, str) else error["message"]
    elif isinstance(error, str):
        text = error
    if text is None:
        text = body[:200].decode("utf-8", "replace")
    return " ".join(text.split())[:300]


def endpoint_state(body: bytes) -> ModelState:
    """(ready, version, detail, reason) from ``GET .../endpoints/{endpoint}``: ready when
    the endpoint has a deployed model; the version is that model's when there is only one."""
    try:
        doc = loads(body)
    except Exception:
        return ModelState(False, None, "the endpoint resource is not JSON", BAD_RESPONSE)
    if not isinstance(doc, Mapping):
        return ModelState(False, None, "the endpoint resource is not an object", BAD_RESPONSE)
    deployed = doc.get("deployedModels") or []
    if not isinstance(deployed, list) or not all(isinstance(d, Mapping) for d in deployed):
        detail = "the endpoint resource has deployedModels that are not a list"
        return ModelState(False, None, detail, BAD_RESPONSE)
    if not deployed:
        return ModelState(False, None, "the endpoint has no deployed model", MODEL_NOT_AVAILABLE)
    version = None
    if len(deployed) == 1:
        only = deployed[0]
        version = answer_version(
            {"modelVersionId": only.get("modelVersionId"), "deployedModelId": only.get("id")}
        )
    return ModelState(True, version, f"{len(deployed)} deployed model(s)")
