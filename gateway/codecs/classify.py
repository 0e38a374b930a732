"""The ``:classify`` API for scripts and apps: one image in, its label and scores out.

The same inputs as ``:detect`` (JSON ``{"image": "<base64>", "key": ...}``, a multipart
upload with a file field ``image``, or the raw image with an ``image/*`` content type),
so a client that sends slides to a detector sends them to a classifier the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.codecs.detect import parse_key
from gateway.errors import BadRequest
from gateway.jsonio import b64decode_strict, loads_decoding

FIELDS = ("image", "key")


@dataclass(frozen=True)
class ClassifyRequest:
    image: bytes
    key: str | None


def _refuse_detection_options(values: Mapping[str, Any], where: str) -> None:
    for name in ("threshold", "render", "format"):
        if values.get(name) not in (None, ""):
            raise BadRequest(f'{where} "{name}" does not apply to a classification service')


def parse_json(body: bytes, query: Mapping[str, str]) -> ClassifyRequest:
    doc = loads_decoding(body, "image", unique_keys=True)  # the image never held as a str
    if not isinstance(doc, Mapping):
        raise BadRequest("the request body must be a JSON object")
    if "image" not in doc:
        raise BadRequest('the body must have "image": "<base64 image>"')
    unknown = set(doc) - set(FIELDS)
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(sorted(unknown))}")
    _refuse_detection_options(query, "the query parameter")
    image = doc["image"]
    if isinstance(image, Mapping) and set(image) == {"b64"}:
        image = image["b64"]
    return ClassifyRequest(b64decode_strict(image, '"image"'), parse_key(doc.get("key")))


def parse_form(
    files: Mapping[str, Any], form: Mapping[str, str], query: Mapping[str, str]
) -> ClassifyRequest:
    upload = files.get("image")
    if upload is None:
        raise BadRequest('the multipart upload must have a file field "image"')
    _refuse_detection_options(form, "the form field")
    _refuse_detection_options(query, "the query parameter")
    return ClassifyRequest(upload.read(), parse_key(form.get("key")))


def parse_raw(body: bytes, query: Mapping[str, str]) -> ClassifyRequest:
    _refuse_detection_options(query, "the query parameter")
    return ClassifyRequest(body, None)  # ?key= is the API key (auth), never the image's label


def ranked(labels: Sequence[str], scores: Sequence[float]) -> list[dict[str, Any]]:
    """Every label with its score, best first; ties keep the model's order."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [{"label": labels[i], "score": round(float(scores[i]), 6)} for i in order]
