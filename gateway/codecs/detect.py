"""The ``:detect`` API for scripts and apps: one image in, pixel boxes and a count out.

It takes JSON (``{"image": "<base64>", ...}``), a multipart upload
(``curl -F image=@slide.jpg``) or the raw image bytes with an ``image/*`` content type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.codecs.tfserving_api import parse_threshold
from gateway.errors import BadRequest, UnsupportedImage, echo
from gateway.jsonio import b64decode_strict, loads_decoding
from gateway.pipeline.merge import Merged

RENDER_FORMATS = ("jpeg",)
ANSWER_FORMATS = ("json", "geojson")


@dataclass(frozen=True)
class DetectRequest:
    image: bytes
    threshold: float | None
    key: str | None
    render: str | None  # "jpeg": answer the annotated image instead of JSON
    format: str | None = None  # "geojson" or "json" when named; None: the Accept header decides


def _render(value: Any) -> str | None:
    if value in (None, "", False, "none", "json"):
        return None
    if isinstance(value, str) and value.lower() in RENDER_FORMATS:
        return value.lower()
    raise BadRequest(f'"render" must be one of: {", ".join(RENDER_FORMATS)}')


def _format(value: Any, query: Mapping[str, str], render: str | None) -> str | None:
    """``format`` from the body or the form, else from the query: one picture or one
    document, so naming both ``render`` and ``format`` is a mistake worth saying."""
    if value in (None, ""):
        value = query.get("format") or None
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in ANSWER_FORMATS:
        raise BadRequest(f'"format" must be one of: {", ".join(ANSWER_FORMATS)}')
    if render is not None:
        raise BadRequest('ask for "render" or for "format", not both')
    return value.lower()


def parse_key(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRequest('"key" must be a string')
    return str(value)[:256]


def parse_json(body: bytes, query: Mapping[str, str]) -> DetectRequest:
    doc = loads_decoding(body, "image", unique_keys=True)  # the image never held as a str
    if not isinstance(doc, Mapping):
        raise BadRequest("the request body must be a JSON object")
    if "image" not in doc:
        raise BadRequest('the body must have "image": "<base64 image>"')
    image = doc["image"]
    if isinstance(image, Mapping) and set(image) == {"b64"}:
        image = image["b64"]
    unknown = set(doc) - {"image", "threshold", "key", "render", "format"}
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(sorted(unknown))}")
    threshold = parse_threshold(doc.get("threshold"), '"threshold"')
    if threshold is None:
        threshold = parse_threshold(query.get("threshold"), "the threshold query parameter")
    render = _render(doc.get("render"))
    return DetectRequest(
        image=b64decode_strict(image, '"image"'),
        threshold=threshold,
        key=parse_key(doc.get("key")),
        render=render,
        format=_format(doc.get("format"), query, render),
    )


def parse_form(files: Mapping[str, Any], form: Mapping[str, str], query: Mapping[str, str]):
    upload = files.get("image")
    if upload is None:
        raise BadRequest('the multipart upload must have a file field "image"')
    data = upload.read()
    threshold = parse_threshold(form.get("threshold") or None, '"threshold"')
    if threshold is None:
        threshold = parse_threshold(query.get("threshold"), "the threshold query parameter")
    render = _render(form.get("render"))
    return DetectRequest(
        image=data,
        threshold=threshold,
        key=parse_key(form.get("key")),
        render=render,
        format=_format(form.get("format"), query, render),
    )


def parse_raw(body: bytes, query: Mapping[str, str]) -> DetectRequest:
    render = _render(query.get("render"))
    return DetectRequest(
        image=body,
        threshold=parse_threshold(query.get("threshold"), "the threshold query parameter"),
        key=None,  # ?key= is the API key (auth), never the slide's label
        render=render,
        format=_format(None, query, render),
    )


def unsupported_content_type(content_type: str) -> UnsupportedImage:
    return UnsupportedImage(
        f"unsupported Content-Type {echo(content_type)}; send application/json, "
        "multipart/form-data or an image/* body",
        code="unsupported_media_type",
    )


def detections(merged: Merged, labels: tuple[str, ...]) -> list[dict[str, Any]]:
    boxes = np.round(merged.boxes.astype(np.float64), 2).tolist()
    scores = np.round(merged.scores.astype(np.float64), 6).tolist()
    return [
        {"box": b, "score": s, "label": labels[c]}
        for b, s, c in zip(boxes, scores, merged.classes.tolist(), strict=True)
    ]
