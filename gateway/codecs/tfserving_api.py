"""TF Serving's REST API as the gateway serves it: the inbound half of the wire format.

The web app's ``{"instances": [{"image_bytes": {"b64": ...}, "key": "eos"}]}`` (and the
columnar ``{"inputs": ...}`` form), answered exactly as TF Serving answers an AutoML
object detector.  The outbound half, spoken to the hidden model, is
:mod:`gateway.backends.tfserving_wire`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.errors import BadRequest, PayloadTooLarge, echo
from gateway.jsonio import b64decode_strict, loads, loads_decoding
from gateway.pipeline.merge import Merged

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


def parse_version(version: str | None) -> str | None:
    """A version from the path: TF Serving's versions are int64, written in digits."""
    if version is None or (version.isascii() and version.isdigit() and len(version) <= 19):
        return version
    raise BadRequest(f"the model version must be a number, got {echo(version)}")


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
    # Images decoded from the body, no str copy; a key given twice is refused (400), as
    # the model would read the first and the gateway the last.
    doc = loads_decoding(body, "b64", unique_keys=True)
    if not isinstance(doc, Mapping):
        raise BadRequest("the request body must be a JSON object")
    if doc.get("signature_name") not in SIGNATURES:
        raise BadRequest(f"unknown signature_name {echo(doc.get('signature_name'))}")
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
    out: dict[str, Any] = {
        "detection_boxes": norm.tolist(),
        "detection_scores": np.round(merged.scores.astype(np.float64), 6).tolist(),
        "detection_classes": [float(class_values[c]) for c in cls.tolist()],
        "detection_classes_as_text": [labels[c] for c in cls.tolist()],
    }
    for name, values in merged.extras.items():  # the model's other per-detection outputs
        out.setdefault(name, values.tolist())
    out["num_detections"] = len(merged)
    out["key"] = key
    return out


PER_INSTANCE = ("num_detections", "key")


def _zero(value: Any) -> Any:
    """The zero of a tensor element shaped like ``value``, as TF Serving pads with."""
    if isinstance(value, list):
        return [_zero(v) for v in value]
    if isinstance(value, str):
        return ""
    if isinstance(value, bool):
        return False
    return 0.0 if isinstance(value, float) else 0


def classification(labels: Sequence[str], scores: Sequence[float], key: str) -> dict[str, Any]:
    """One AutoML Vision Edge classification prediction, in the model's label order."""
    return {"scores": [round(float(x), 6) for x in scores], "labels": list(labels), "key": key}


def predict_response(predictions: list[dict[str, Any]], columnar: bool) -> dict[str, Any]:
    """Rows keep their natural lengths; columns are tensors, so each per-detection output
    is padded with zeros to the longest instance and ``num_detections`` says how many
    of each instance's rows are real.  A classifier's columns are already rectangular."""
    if not columnar:
        return {"predictions": predictions}
    names = list(dict.fromkeys(k for p in predictions for k in p))
    if not all("num_detections" in p for p in predictions):
        return {"outputs": {f: [p.get(f) for p in predictions] for f in names}}
    longest = max((p["num_detections"] for p in predictions), default=0)
    outputs: dict[str, Any] = {}
    for name in names:
        if name in PER_INSTANCE:
            outputs[name] = [p[name] for p in predictions]
            continue
        sample = next((p[name][0] for p in predictions if p.get(name)), 0.0)
        filler = _zero(sample)
        outputs[name] = [
            p.get(name, []) + [filler] * (longest - len(p.get(name, []))) for p in predictions
        ]
    return {"outputs": outputs}


def _batch(value: Any) -> int:
    return len(value) if isinstance(value, list) and value else 1


def passthrough_batch_size(body: bytes) -> int:
    """How many inputs a body for any TF Serving model carries: what quotas count.

    The body itself goes to the model unchanged; this only reads it, so a body the model
    would refuse anyway is refused here with the same kind of message, before any quota
    is spent on it.  The model reads every named input, so a columnar body is charged by
    its largest batch, whatever input comes first; a key given twice (TF Serving takes
    the first, a Python parser the last) is refused.
    """
    doc = loads(body, unique_keys=True)
    if not isinstance(doc, Mapping):
        raise BadRequest("the request body must be a JSON object")
    has_rows, has_cols = "instances" in doc, "inputs" in doc
    if has_rows == has_cols:
        raise BadRequest('the body must have exactly one of "instances" or "inputs"')
    if has_rows:
        rows = doc["instances"]
        if not isinstance(rows, list) or not rows:
            raise BadRequest('"instances" must be a non-empty list')
        return len(rows)
    inputs = doc["inputs"]
    if isinstance(inputs, Mapping):
        if not inputs:
            raise BadRequest('"inputs" must not be empty')
        return max(_batch(v) for v in inputs.values())
    return _batch(inputs)
