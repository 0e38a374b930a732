"""The TF Serving REST / AutoML Vision Edge wire format, both directions.

Inbound: the web app's ``{"instances": [{"image_bytes": {"b64": ...}, "key": "eos"}]}``
(and the columnar ``{"inputs": ...}`` form), answered exactly as TF Serving answers an
AutoML object detector.  Outbound: the same format for tiles sent to the hidden model,
and a strict reader of its answers, because a backend that answers garbage must become a
502, not a wrong count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.codecs.jsonio import b64decode_strict, loads, loads_decoding
from gateway.errors import BackendBadResponse, BadRequest, PayloadTooLarge
from gateway.pipeline.merge import Merged, TileDetections

SIGNATURES = (None, "serving_default", "")


@dataclass(frozen=True)
class Instance:
    image: bytes
    key: str


@dataclass(frozen=True)
class PredictRequest:
    instances: list[Instance]
    threshold: float | None
    columnar: bool  # answer with {"outputs": ...} as TF Serving does for "inputs"


def parse_threshold(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise BadRequest(f"{where} must be a number between 0 and 1") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise BadRequest(f"{where} must be a number between 0 and 1")
    if not 0.0 <= value <= 1.0:
        raise BadRequest(f"{where} must be between 0 and 1, got {value}")
    return float(value)


def _image_of(value: Any, where: str) -> bytes:
    """``{"b64": "..."}`` -> bytes; the only way TF Serving's REST API carries binary."""
    if not isinstance(value, Mapping) or set(value) != {"b64"}:
        raise BadRequest(f'{where} must be an object {{"b64": "<base64 image>"}}')
    return b64decode_strict(value["b64"], f"{where}.b64")


def _key_of(value: Any, where: str, index: int) -> str:
    if value is None:
        return str(index)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRequest(f"{where} must be a string")
    return str(value)


def _row_instances(rows: Any, max_instances: int) -> list[Instance]:
    if not isinstance(rows, list) or not rows:
        raise BadRequest('"instances" must be a non-empty list')
    if len(rows) > max_instances:
        raise PayloadTooLarge(f"{len(rows)} instances in one request; the limit is {max_instances}")
    out = []
    for i, row in enumerate(rows):
        where = f"instances[{i}]"
        if isinstance(row, Mapping) and "image_bytes" in row:
            unknown = set(row) - {"image_bytes", "key"}
            if unknown:
                raise BadRequest(f"{where} has unknown fields: {', '.join(sorted(unknown))}")
            image = _image_of(row["image_bytes"], f"{where}.image_bytes")
            key = _key_of(row.get("key"), f"{where}.key", i)
        elif isinstance(row, Mapping) and set(row) == {"b64"}:
            image, key = _image_of(row, where), str(i)
        else:
            raise BadRequest(
                f'{where} must be {{"image_bytes": {{"b64": "<base64 image>"}}, "key": "..."}}'
            )
        out.append(Instance(image, key))
    return out


def _columnar_instances(inputs: Any, max_instances: int) -> list[Instance]:
    if isinstance(inputs, list):
        inputs = {"image_bytes": inputs}
    if not isinstance(inputs, Mapping) or "image_bytes" not in inputs:
        raise BadRequest('"inputs" must be {"image_bytes": [{"b64": ...}, ...], "key": [...]}')
    unknown = set(inputs) - {"image_bytes", "key"}
    if unknown:
        raise BadRequest(f'"inputs" has unknown fields: {", ".join(sorted(unknown))}')
    images = inputs["image_bytes"]
    if isinstance(images, Mapping):
        images = [images]
    keys = inputs.get("key")
    if keys is not None and not isinstance(keys, list):
        keys = [keys]
    if not isinstance(images, list) or not images:
        raise BadRequest('"inputs.image_bytes" must be a non-empty list')
    if keys is not None and len(keys) != len(images):
        raise BadRequest('"inputs.key" must have one entry per image')
    rows = [
        {"image_bytes": img, **({} if keys is None else {"key": keys[i]})}
        for i, img in enumerate(images)
    ]
    return _row_instances(rows, max_instances)


def parse_predict_request(
    body: bytes, *, query_threshold: str | None, max_instances: int
) -> PredictRequest:
    doc = loads_decoding(body, "b64")  # images decoded from the body, no str copy
    if not isinstance(doc, Mapping):
        raise BadRequest("the request body must be a JSON object")
    if doc.get("signature_name") not in SIGNATURES:
        raise BadRequest(f"unknown signature_name {doc.get('signature_name')!r}")
    has_rows, has_cols = "instances" in doc, "inputs" in doc
    if has_rows == has_cols:
        raise BadRequest('the body must have exactly one of "instances" or "inputs"')
    if has_rows:
        instances = _row_instances(doc["instances"], max_instances)
    else:
        instances = _columnar_instances(doc["inputs"], max_instances)
    threshold = parse_threshold(doc.get("threshold"), '"threshold"')
    if threshold is None:
        threshold = parse_threshold(query_threshold, "the threshold query parameter")
    return PredictRequest(instances, threshold, columnar=has_cols)


def prediction(
    merged: Merged,
    width: int,
    height: int,
    labels: Sequence[str],
    class_values: Sequence[float],
    key: str,
) -> dict[str, Any]:
    """One AutoML prediction with boxes normalized to the submitted image."""
    b = merged.boxes.astype(np.float64)
    norm = np.stack([b[:, 1] / height, b[:, 0] / width, b[:, 3] / height, b[:, 2] / width], axis=1)
    norm = np.clip(np.round(norm, 6), 0.0, 1.0)
    cls = merged.classes
    return {
        "detection_boxes": norm.tolist(),
        "detection_scores": np.round(merged.scores.astype(np.float64), 6).tolist(),
        "detection_classes": [float(class_values[c]) for c in cls.tolist()],
        "detection_classes_as_text": [labels[c] for c in cls.tolist()],
        "num_detections": len(merged),
        "key": key,
    }


def predict_response(predictions: list[dict[str, Any]], columnar: bool) -> dict[str, Any]:
    if not columnar:
        return {"predictions": predictions}
    fields = (
        "detection_boxes",
        "detection_scores",
        "detection_classes",
        "detection_classes_as_text",
        "num_detections",
        "key",
    )
    return {"outputs": {f: [p[f] for p in predictions] for f in fields}}


# --- outbound: the hidden model ---------------------------------------------------------


def backend_request(encoded_b64: Sequence[bytes], keys: Sequence[str]) -> bytes:
    """The body for ``:predict``, written directly so megabytes of base64 are not re-escaped."""
    pieces = [b'{"instances":[']
    for i, (b64, key) in enumerate(zip(encoded_b64, keys, strict=True)):
        pieces += [b',{"image_bytes":{"b64":"' if i else b'{"image_bytes":{"b64":"', b64]
        pieces.append(b'"},"key":"' + key.encode() + b'"}')
    pieces.append(b"]}")
    return b"".join(pieces)  # one copy of the payload, not one per nesting level


def _numbers(value: Any, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BackendBadResponse(f"the model answered non-numeric {where}") from exc
    return arr


class LabelTable:
    """Maps the model's (class number, text) pairs to small ints for the merge step."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels: list[str] = list(labels)
        self.values: list[float] = [float(i + 1) for i in range(len(labels))]
        self._index = {text: i for i, text in enumerate(self.labels)}

    def index(self, text: str | None, value: float | None) -> int:
        if text is None:
            if value is not None and 1 <= value <= len(self.labels) and value == int(value):
                return int(value) - 1
            text = "unknown" if value is None else f"class_{value:g}"
        i = self._index.get(text)
        if i is None:
            i = self._index[text] = len(self.labels)
            self.labels.append(text)
            self.values.append(float(value) if value is not None else float(i + 1))
        elif value is not None:
            self.values[i] = float(value)
        return i


def parse_backend_predictions(
    body: bytes, expected: int, tile_sizes: Sequence[tuple[int, int]], table: LabelTable
) -> list[TileDetections]:
    """The model's answer for ``expected`` tiles, boxes converted to tile pixels."""
    try:
        doc = loads(body)
    except Exception as exc:
        raise BackendBadResponse("the model answered with a body that is not JSON") from exc
    preds = doc.get("predictions") if isinstance(doc, Mapping) else None
    if isinstance(doc, Mapping) and preds is None and isinstance(doc.get("outputs"), Mapping):
        out = doc["outputs"]
        if isinstance(out.get("detection_scores"), list):
            preds = [
                {k: (v[i] if isinstance(v, list) and len(v) > i else None) for k, v in out.items()}
                for i in range(len(out["detection_scores"]))
            ]
    if not isinstance(preds, list) or len(preds) != expected:
        raise BackendBadResponse(
            f"the model answered {len(preds) if isinstance(preds, list) else 'no'} "
            f"predictions for {expected} tiles"
        )
    result = []
    for i, p in enumerate(preds):
        if not isinstance(p, Mapping):
            raise BackendBadResponse(f"prediction {i} of the model's answer is not an object")
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
        b = boxes[:n]  # [ymin, xmin, ymax, xmax], normalized to the tile
        px = np.stack([b[:, 1] * w, b[:, 0] * h, b[:, 3] * w, b[:, 2] * h], axis=1)
        result.append(TileDetections(boxes=px, scores=scores[:n], classes=classes))
    return result


def backend_error_message(body: bytes) -> str:
    """TF Serving's ``{"error": "..."}``, shortened, for logs and client messages."""
    try:
        doc = loads(body)
        msg = doc.get("error") if isinstance(doc, Mapping) else None
    except Exception:
        msg = None
    text = msg if isinstance(msg, str) else body[:200].decode("utf-8", "replace")
    return " ".join(text.split())[:300]


def model_status(body: bytes) -> tuple[bool, str | None, str]:
    """(available, version, detail) from ``GET /v1/models/{model}``."""
    try:
        doc = loads(body)
    except Exception:
        return False, None, "model status is not JSON"
    if isinstance(doc, Mapping) and isinstance(doc.get("ready"), bool):
        # KServe's V1 protocol answers the same route with {"name": ..., "ready": true}.
        return doc["ready"], None, "ready" if doc["ready"] else "not ready"
    rows = doc.get("model_version_status") if isinstance(doc, Mapping) else None
    if not isinstance(rows, list) or not rows:
        return False, None, "model status lists no versions"
    for row in rows:
        if isinstance(row, Mapping) and row.get("state") == "AVAILABLE":
            return True, str(row.get("version", "")) or None, "AVAILABLE"
    states = [str(r.get("state")) for r in rows if isinstance(r, Mapping)]
    return False, None, f"no AVAILABLE version (states: {', '.join(states) or 'none'})"
