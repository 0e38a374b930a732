"""The Open Inference Protocol (KServe V2, Triton's REST API) as the gateway serves it.

The inbound half only: requests are parsed into images and keys, answers are built from
the same per-instance predictions the TF Serving API answers with
(:func:`gateway.codecs.tfserving_api.prediction` and ``classification``), stacked into
tensors as TF stacks a batch.  Triton's binary tensor data extension is spoken both
ways: a JSON header whose length is the ``Inference-Header-Content-Length`` header,
then the tensors' raw bytes, ``BYTES`` elements each a 4-byte little-endian length and
the bytes.  That is how ``tritonclient.http`` and KServe's ``InferenceRESTClient`` send
an image without base64.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.codecs.tfserving_api import parse_threshold
from gateway.errors import BadRequest, InvalidBase64, PayloadTooLarge, echo
from gateway.jsonio import b64decode_strict, dumps, loads

HEADER_LENGTH = "Inference-Header-Content-Length"
IMAGE_INPUT = "image_bytes"
KEY_INPUT = "key"

# name -> (datatype, shape) as model metadata declares them; -1 is a dimension that varies
# (the batch, the detections).
TensorSpec = tuple[str, Sequence[int]]
INPUTS: dict[str, TensorSpec] = {IMAGE_INPUT: ("BYTES", [-1]), KEY_INPUT: ("BYTES", [-1])}
DETECTION_OUTPUTS: dict[str, TensorSpec] = {
    "detection_boxes": ("FP32", [-1, -1, 4]),
    "detection_scores": ("FP32", [-1, -1]),
    "detection_classes": ("FP32", [-1, -1]),
    "detection_classes_as_text": ("BYTES", [-1, -1]),
    "num_detections": ("FP32", [-1]),
    "key": ("BYTES", [-1]),
}
CLASSIFICATION_OUTPUTS: dict[str, TensorSpec] = {
    "scores": ("FP32", [-1, -1]),
    "labels": ("BYTES", [-1, -1]),
    "key": ("BYTES", [-1]),
}
_KNOWN_OUTPUTS = {**DETECTION_OUTPUTS, **CLASSIFICATION_OUTPUTS}


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # its "binary_data" parameter; None: the request's default


@dataclass(frozen=True)
class InferRequest:
    images: list[bytes]
    keys: list[str] | None  # None: no "key" input, and no "key" output either
    threshold: float | None  # parameters.threshold; None cuts nothing, as :predict
    id: str | None
    binary_outputs: bool  # parameters.binary_data_output
    outputs: list[RequestedOutput] | None  # None: every output


# --- requests ---------------------------------------------------------------------------


def _header_length(value: int | str | None, body_length: int) -> int:
    """The JSON header's length: the whole body without the header."""
    if value is None:
        return body_length
    text = str(value).strip()
    digits = text.isascii() and text.isdigit() and len(text) <= 19
    if not digits or not 0 < int(text) <= body_length:
        raise BadRequest(
            f"the {HEADER_LENGTH} header must be the JSON header's length in bytes, "
            f"between 1 and the body's {body_length}, got {str(value)[:40]!r}"
        )
    return int(text)


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BadRequest(f"{where} must be an object")
    return value


def _flag(params: Mapping[str, Any], name: str, where: str) -> bool | None:
    value = params.get(name)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"{where}.parameters.{name} must be true or false")
    return value


def _no_shared_memory(params: Mapping[str, Any], where: str) -> None:
    if any(name.startswith("shared_memory_") for name in params):
        raise BadRequest(f"{where}: shared memory is not supported over HTTP here")


def _batch_of(shape: Any, where: str) -> int:
    """A ``BYTES`` tensor of one element per instance: shape ``[n]`` or ``[n, 1]``."""
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or len(shape) not in (1, 2)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise BadRequest(f"{where} must have shape [n] or [n, 1], got {echo(shape)}")
    return shape[0]


def _flatten(data: Any) -> list[Any]:
    """JSON data of an ``[n]`` or ``[n, 1]`` tensor, flat or nested, in row-major order.

    Only those two levels: a list any deeper stays one element, which then is refused
    as not a string.
    """
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for item in data:
        out.extend(item if isinstance(item, list) else [item])
    return out


def _split_bytes(raw: memoryview, count: int, where: str) -> list[bytes]:
    """``count`` elements of a binary ``BYTES`` tensor: each a 4-byte little-endian length
    and its bytes, filling ``raw`` exactly."""
    out, pos = [], 0
    for i in range(count):
        if pos + 4 > len(raw):
            raise BadRequest(f"{where}: its binary data ends before element {i}")
        (length,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + length > len(raw):
            raise BadRequest(
                f"{where}: element {i} declares {length} bytes, {len(raw) - pos} are left"
            )
        out.append(bytes(raw[pos : pos + length]))
        pos += length
    if pos != len(raw):
        raise BadRequest(
            f"{where}: {len(raw) - pos} bytes of binary data left after its {count} elements"
        )
    return out


@dataclass(frozen=True)
class _Tensor:
    """One ``BYTES`` input: its elements, raw (binary) or as JSON gave them."""

    where: str
    elements: list[Any]
    binary: bool
    content_type: str | None  # its "content_type" parameter: "base64", "str" or None


def _read_input(doc: Any, i: int, tail: memoryview, pos: int) -> tuple[str, _Tensor, int]:
    """The ``i``-th input and where the next input's binary data starts in ``tail``."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("name"), str):
        raise BadRequest(f'inputs[{i}] must be an object with a "name"')
    name = doc["name"]
    where = f"input {echo(name)}"
    if doc.get("datatype") != "BYTES":
        raise BadRequest(f'{where} must have datatype "BYTES", got {echo(doc.get("datatype"))}')
    count = _batch_of(doc.get("shape"), where)
    params = _object(doc.get("parameters"), f"{where}.parameters")
    _no_shared_memory(params, where)
    content_type = params.get("content_type")
    if content_type not in (None, "base64", "str"):
        raise BadRequest(
            f'{where}: content_type must be "base64" or "str", got {echo(content_type)}'
        )
    size, data = params.get("binary_data_size"), doc.get("data")
    if size is not None:
        if data is not None:
            raise BadRequest(f'{where} has both "data" and binary_data_size')
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BadRequest(f"{where}: binary_data_size must be a whole number of bytes")
        if pos + size > len(tail):
            raise BadRequest(
                f"{where} declares {size} bytes of binary data, "
                f"{len(tail) - pos} are left after the JSON header"
                + ("" if len(tail) else f" (is the {HEADER_LENGTH} header missing?)")
            )
        elements = _split_bytes(tail[pos : pos + size], count, where)
        return name, _Tensor(where, elements, True, content_type), pos + size
    if data is None:
        raise BadRequest(f'{where} has neither "data" nor binary_data_size')
    elements = _flatten(data)
    if len(elements) != count:
        raise BadRequest(f"{where} has {len(elements)} elements for its shape {doc['shape']}")
    return name, _Tensor(where, elements, False, content_type), pos


def _images(tensor: _Tensor) -> list[bytes]:
    """Binary elements are the image bytes; a JSON element is always base64.

    A JSON string cannot carry an image's raw bytes (JPEG and PNG start with bytes that
    are not UTF-8, and tritonclient and KServe refuse to send them in JSON), so a string
    in ``data`` is read as base64 whether or not its input says ``"content_type":
    "base64"`` (the KServe and MLServer convention); one that is not valid base64 is
    refused, never passed on as text, and so is an image input that says it is text
    (``"str"``).
    """
    if tensor.content_type == "str":
        raise BadRequest(f'{tensor.where}: an image is binary data or base64, not "str"')
    if tensor.binary and tensor.content_type is None:
        return tensor.elements
    out = []
    for j, value in enumerate(tensor.elements):
        what = f"{tensor.where} element {j}"
        if tensor.binary:
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError:
                raise InvalidBase64(f"{what} is not valid base64: non-ASCII bytes") from None
        try:
            out.append(b64decode_strict(value, what))
        except InvalidBase64 as exc:
            raise InvalidBase64(
                f"{exc.message} (JSON image data is read as base64; raw image bytes go "
                f"as binary data, with the {HEADER_LENGTH} header)"
            ) from None
    return out


def _keys(tensor: _Tensor) -> list[str]:
    """Keys are text: UTF-8 when binary, JSON strings (or integers) as they are."""
    out = []
    for j, value in enumerate(tensor.elements):
        what = f"{tensor.where} element {j}"
        if tensor.content_type == "base64":
            text = value.decode("ascii", "replace") if tensor.binary else value
            value = b64decode_strict(text, what)
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"{what} is not UTF-8 text") from None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise BadRequest(f"{what} must be a string")
        out.append(str(value))
    return out


def _requested_outputs(value: Any) -> list[RequestedOutput] | None:
    if value is None or value == []:
        return None
    if not isinstance(value, list):
        raise BadRequest('"outputs" must be a list')
    out, seen = [], set()
    for i, doc in enumerate(value):
        if not isinstance(doc, Mapping) or not isinstance(doc.get("name"), str):
            raise BadRequest(f'outputs[{i}] must be an object with a "name"')
        where = f"output {echo(doc['name'])}"
        if doc["name"] in seen:
            raise BadRequest(f"{where} is requested twice")
        seen.add(doc["name"])
        params = _object(doc.get("parameters"), f"{where}.parameters")
        _no_shared_memory(params, where)
        if params.get("classification"):
            raise BadRequest(f"{where}: the classification extension is not supported")
        out.append(RequestedOutput(doc["name"], _flag(params, "binary_data", where)))
    return out


def parse_infer_request(
    body: bytes, header_length: int | str | None, *, max_instances: int
) -> InferRequest:
    """A ``POST /v2/models/{m}/infer`` body and its ``Inference-Header-Content-Length``
    header (as the request carried it, or None).

    The image input may have any name when it is the only input; beside a ``key`` input
    it is ``image_bytes``.  Both are ``BYTES`` tensors of shape ``[n]`` (or ``[n, 1]``),
    one element per image, binary or in JSON (see :func:`_images` for how JSON strings
    are read).  Other request fields and parameters (``model_name``, ``priority``, ...)
    are the protocol's or Triton's and change nothing here.
    """
    length = _header_length(header_length, len(body))
    doc = loads(body[:length] if length < len(body) else body, unique_keys=True)
    if not isinstance(doc, Mapping):
        raise BadRequest("the request body must be a JSON object")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest('"id" must be a string')
    params = _object(doc.get("parameters"), '"parameters"')
    binary_outputs = _flag(params, "binary_data_output", "the request") or False
    threshold = parse_threshold(params.get("threshold"), '"parameters.threshold"')
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest('"inputs" must be a non-empty list')
    tail, pos, tensors = memoryview(body)[length:], 0, {}
    for i, item in enumerate(inputs):
        name, tensor, pos = _read_input(item, i, tail, pos)
        if name in tensors:
            raise BadRequest(f"input {echo(name)} is given twice")
        tensors[name] = tensor
    if pos != len(tail):
        raise BadRequest(
            f"{len(tail) - pos} bytes after the JSON header belong to no input's binary_data_size"
        )
    if len(tensors) == 1:
        image, key = next(iter(tensors.values())), None
    else:
        unknown = set(tensors) - {IMAGE_INPUT, KEY_INPUT}
        if unknown or IMAGE_INPUT not in tensors:
            raise BadRequest(
                f'with several inputs they must be "{IMAGE_INPUT}" and "{KEY_INPUT}", '
                f"got {', '.join(repr(n) for n in tensors)}"
            )
        image, key = tensors[IMAGE_INPUT], tensors[KEY_INPUT]
    count = len(image.elements)
    if count == 0:
        raise BadRequest(f"{image.where} has no images")
    if count > max_instances:
        raise PayloadTooLarge(
            f"{image.where} has {count} images; the limit is {max_instances} a request"
        )
    if key is not None and len(key.elements) != count:
        raise BadRequest(f"{key.where} must have one element per image ({count})")
    return InferRequest(
        images=_images(image),
        keys=None if key is None else _keys(key),
        threshold=threshold,
        id=request_id,
        binary_outputs=binary_outputs,
        outputs=_requested_outputs(doc.get("outputs")),
    )


# --- answers ----------------------------------------------------------------------------


def _leaf(values: Any) -> Any:
    while isinstance(values, list) and values:
        values = values[0]
    return values


def _stack(name: str, rows: Sequence[Mapping[str, Any]]) -> tuple[str, np.ndarray]:
    """One output across the batch: its datatype and its values, shaped as TF stacks them.

    Per-instance outputs (``num_detections``, ``key``) are ``[n]``.  Per-detection (and
    per-class) outputs are ``[n, k, ...]``, every instance padded with zeros or empty
    strings to the longest, as TF pads a batch; an instance without the output has none.
    """
    datatype, shape = _KNOWN_OUTPUTS.get(name, (None, None))
    values = [row.get(name, []) for row in rows]
    if shape is None:
        per_instance = not any(isinstance(v, list) for v in values)
    else:
        per_instance = len(shape) == 1
    sample = values[0] if per_instance else next((v[0] for v in values if v), None)
    if datatype is None:
        datatype = "BYTES" if isinstance(_leaf(sample), str) else "FP32"
    if per_instance:
        return datatype, np.array(values, dtype=object if datatype == "BYTES" else np.float64)
    inner = tuple(shape[2:]) if shape is not None else np.shape(sample)
    longest = max((len(v) for v in values), default=0)
    if datatype == "BYTES":
        out = np.full((len(rows), longest, *inner), "", dtype=object)
    else:
        out = np.zeros((len(rows), longest, *inner), dtype=np.float64)
    for i, v in enumerate(values):
        if v:
            out[i, : len(v)] = np.array(v, dtype=out.dtype)
    return datatype, out


def _binary(datatype: str, values: np.ndarray) -> bytes:
    if datatype != "BYTES":
        return values.astype("<f4").tobytes()
    parts = []
    for value in values.ravel().tolist():
        data = value.encode("utf-8")
        parts += [struct.pack("<I", len(data)), data]
    return b"".join(parts)


def _json_data(datatype: str, values: np.ndarray) -> list[Any]:
    flat = values.ravel().tolist()
    return [str(v) for v in flat] if datatype == "BYTES" else flat


def encode_infer_response(
    rows: Sequence[Mapping[str, Any]],
    request: InferRequest,
    *,
    model_name: str,
    model_version: str | None,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers answering ``request`` with one prediction per image.

    Every output the rows hold is answered, in their order (``key`` only when the request
    had keys), unless the request named outputs: then those, in its order, and a name the
    rows do not hold is refused.  An output goes as binary data when it asks so, or when
    the request's ``binary_data_output`` does and it says nothing; the answer then carries
    ``Inference-Header-Content-Length``.  ``model_version`` is left out when unknown, as
    the protocol asks of servers without versions.
    """
    available = list(dict.fromkeys(k for row in rows for k in row))
    if request.keys is None:
        available = [n for n in available if n != KEY_INPUT]
    if request.outputs is None:
        wanted = [(name, request.binary_outputs) for name in available]
    else:
        unknown = [o.name for o in request.outputs if o.name not in available]
        if unknown:
            raise BadRequest(
                f"unknown output {echo(unknown[0])}; the outputs are: {', '.join(available)}"
            )
        wanted = [
            (o.name, request.binary_outputs if o.binary is None else o.binary)
            for o in request.outputs
        ]
    outputs, blobs = [], []
    for name, binary in wanted:
        datatype, values = _stack(name, rows)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(values.shape)}
        if binary:
            blobs.append(_binary(datatype, values))
            tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            tensor["data"] = _json_data(datatype, values)
        outputs.append(tensor)
    doc: dict[str, Any] = {"model_name": model_name}
    if model_version:
        doc["model_version"] = model_version
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = outputs
    header = dumps(doc)
    if not blobs:
        return header, {"Content-Type": "application/json"}
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return b"".join([header, *blobs]), headers


def error_body(message: str, *, code: str, request_id: str) -> bytes:
    """The protocol's ``{"error": ...}``, with the gateway's code and request id beside."""
    return dumps({"error": message, "code": code, "request_id": request_id})


# --- documents --------------------------------------------------------------------------


def server_metadata(name: str, version: str, extensions: Sequence[str]) -> dict[str, Any]:
    """``GET /v2``."""
    return {"name": name, "version": version, "extensions": list(extensions)}


def _tensors(specs: Mapping[str, TensorSpec]) -> list[dict[str, Any]]:
    return [
        {"name": name, "datatype": datatype, "shape": list(shape)}
        for name, (datatype, shape) in specs.items()
    ]


def model_metadata(
    name: str,
    versions: Sequence[str],
    outputs: Mapping[str, TensorSpec],
    *,
    platform: str = "",
) -> dict[str, Any]:
    """``GET /v2/models/{name}``: the image and key inputs, and the outputs of the
    service's kind (:data:`DETECTION_OUTPUTS`, :data:`CLASSIFICATION_OUTPUTS`)."""
    return {
        "name": name,
        "versions": list(versions),
        "platform": platform,
        "inputs": _tensors(INPUTS),
        "outputs": _tensors(outputs),
    }


def passthrough_batch_size(body: bytes, header_length: int | str | None) -> int:
    """The images a body carries for the quota: the largest batch over all its inputs (a
    model reads every input, so a decoy input cannot make a batch look smaller)."""
    size = _header_length(header_length, len(body)) if header_length is not None else len(body)
    doc = loads(bytes(body[:size]), unique_keys=True)  # a key given twice: 400
    inputs = _object(doc, "the request").get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest('the request has no "inputs" list')
    batches = []
    for i, tensor in enumerate(inputs):
        shape = _object(tensor, f"input {i}").get("shape")
        first = shape[0] if isinstance(shape, list) and shape else 1
        if not isinstance(first, int) or isinstance(first, bool) or first < 0:
            raise BadRequest(f"input {i} has no valid shape")
        batches.append(first)
    return max(max(batches), 1)
