"""The Open Inference Protocol (KServe V2: Triton, MLServer, KServe) as the gateway speaks
it to a model server: the outbound half.

Request bodies for ``POST /v2/models/{model}[/versions/{v}]/infer`` carrying encoded images
as one BYTES tensor of shape ``[n]``, and strict readers of the answers: a model server
that answers garbage must become a 502, never a wrong count or a wrong label.

Images go either as base64 strings in the JSON (``"content_type": "base64"``, MLServer's
convention, which KServe models read too) or as raw bytes after the JSON header (Triton's
binary tensor data extension), which spares a third of the upload and the server's base64
decode.  Outputs are asked for in JSON by default: every V2 server writes them, and a
tile's few hundred numbers cost nothing to parse.  The readers take binary outputs all the
same, since a server may be set to answer them unasked.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gateway.backends.base import Classification, TileDetections, too_many_detections
from gateway.backends.boxes import BOX_FORMATS, to_tile_pixels
from gateway.backends.labels import LabelTable
from gateway.errors import BackendBadResponse
from gateway.jsonio import b64encode, dumps, loads

BYTES_MODES = ("binary", "base64")
HEADER_LENGTH = "Inference-Header-Content-Length"

_LENGTH = struct.Struct("<I")  # a BYTES element's length prefix in binary data


def infer_request(
    images: Sequence[bytes],
    *,
    input_name: str,
    bytes_mode: str,
    outputs: Sequence[str],
    request_id: str,
    binary_outputs: bool = False,
    row_shape: Sequence[int] = (),
) -> tuple[bytes, dict[str, str]]:
    """The body of an infer request for ``images`` and the headers it needs.

    The body is joined once from its pieces, so megabytes of image bytes are copied once.
    Only the ``outputs`` named are asked for (all of them when none is named).  A JSON body
    says so in ``Content-Type`` (KServe refuses one that does not); a binary one is
    ``application/octet-stream``, as Triton's and KServe's own clients send it (KServe would
    try to read a body declared JSON as JSON, and Triton reads only the header length).
    ``row_shape`` is each image's row after the batch dimension: ``[1]`` for a Triton model
    declaring its input ``[1]`` under a maximum batch size, nothing for one declaring ``[-1]``.
    """
    if bytes_mode not in BYTES_MODES:
        raise ValueError(f"unknown bytes mode {bytes_mode!r} (one of {', '.join(BYTES_MODES)})")
    wanted = [
        {"name": name, "parameters": {"binary_data": True}} if binary_outputs else {"name": name}
        for name in outputs
    ]
    head = b"".join(
        [
            b'{"id":',
            dumps(request_id),
            b',"inputs":[{"name":',
            dumps(input_name),
            b',"shape":%s,"datatype":"BYTES","parameters":' % dumps([len(images), *row_shape]),
        ]
    )
    tail = (b',"outputs":' + dumps(wanted) if wanted else b"") + b"}"
    if bytes_mode == "base64":
        pieces = [head, b'{"content_type":"base64"},"data":[']
        for i, image in enumerate(images):
            pieces += [b',"' if i else b'"', b64encode(image), b'"']
        pieces += [b"]}]", tail]
        return b"".join(pieces), {"Content-Type": "application/json"}
    size = sum(len(image) for image in images) + _LENGTH.size * len(images)
    header = b"".join([head, b'{"binary_data_size":%d}}]' % size, tail])
    pieces = [header]
    for image in images:
        pieces += [_LENGTH.pack(len(image)), image]
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return b"".join(pieces), headers


# -- reading answers -----------------------------------------------------------------------

# Fixed-size datatypes as they lie in binary data (little-endian, row-major).
_BINARY_DTYPES = {
    "BOOL": np.dtype("u1"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


def _bad(message: str) -> BackendBadResponse:
    return BackendBadResponse(f"the model answered {message}")


class _Output:
    """One output tensor of an answer, decoded only when it is read."""

    __slots__ = ("name", "datatype", "shape", "size", "data", "raw")

    def __init__(self, name: str, datatype: str, shape: list[int]) -> None:
        self.name, self.datatype, self.shape = name, datatype, shape
        self.size = math.prod(shape)
        self.data: Any = None
        self.raw: memoryview | None = None

    @property
    def known(self) -> bool:
        return self.datatype == "BYTES" or self.datatype in _BINARY_DTYPES

    def values(self) -> np.ndarray:
        """Its elements in its shape: numbers as float64 (FP*) or int64, BOOL as bool,
        BYTES as str (UTF-8)."""
        if not self.known:
            raise _bad(f"output {self.name!r} of datatype {self.datatype!r}")
        arr = self._from_raw() if self.raw is not None else self._from_json()
        return arr.reshape(self.shape)

    def _from_raw(self) -> np.ndarray:
        raw = self.raw
        assert raw is not None
        if self.datatype == "BYTES":
            return np.array(self._strings(raw), dtype=str)
        dtype = _BINARY_DTYPES[self.datatype]
        if len(raw) != self.size * dtype.itemsize:
            raise _bad(
                f"{len(raw)} bytes for output {self.name!r}, which takes "
                f"{self.size * dtype.itemsize} ({self.datatype} {self.shape})"
            )
        arr = np.frombuffer(raw, dtype=dtype)
        if self.datatype == "BOOL":
            if np.any(arr > 1):
                raise _bad(f"output {self.name!r} with a BOOL that is neither 0 nor 1")
            return arr.astype(bool)
        return arr.astype(np.float64 if dtype.kind == "f" else np.int64)

    def _strings(self, raw: memoryview) -> list[str]:
        out, at, end = [], 0, len(raw)
        while at < end:
            if at + _LENGTH.size > end:
                raise _bad(f"output {self.name!r} with a BYTES element cut in its length")
            (length,) = _LENGTH.unpack_from(raw, at)
            at += _LENGTH.size
            if at + length > end:
                raise _bad(f"output {self.name!r} with a BYTES element past its data")
            try:
                out.append(str(raw[at : at + length], "utf-8"))
            except UnicodeDecodeError as exc:
                raise _bad(f"output {self.name!r} with text that is not UTF-8") from exc
            at += length
        if len(out) != self.size:
            raise _bad(f"{len(out)} elements for output {self.name!r} of shape {self.shape}")
        return out

    def _from_json(self) -> np.ndarray:
        if not isinstance(self.data, list):
            raise _bad(f"output {self.name!r} without a list of data")
        try:
            arr = np.asarray(self.data)  # nested or flat, row-major either way
        except ValueError as exc:
            raise _bad(f"output {self.name!r} with ragged data") from exc
        if arr.size != self.size:
            raise _bad(f"{arr.size} elements for output {self.name!r} of shape {self.shape}")
        if arr.size == 0:
            return np.zeros(0, dtype=str if self.datatype == "BYTES" else np.float64)
        kind = arr.dtype.kind
        if self.datatype == "BYTES":
            ok = kind == "U"
        elif self.datatype == "BOOL":
            ok = kind == "b"
        else:
            ok = kind in "iuf"
        if not ok:
            raise _bad(f"output {self.name!r} with data that is not {self.datatype}")
        if kind in "iu":
            return arr.astype(np.float64 if self.datatype.startswith("FP") else np.int64)
        return arr


def _outputs(body: bytes, header_length: int | None) -> dict[str, _Output]:
    """The answer's outputs by name; binary data is cut from the body in output order."""
    end = len(body)
    if header_length is not None:
        if (
            not isinstance(header_length, int)
            or isinstance(header_length, bool)
            or not 0 < header_length <= end
        ):
            raise _bad(f"a header length of {header_length!r} for a body of {end} bytes")
        end = header_length
    try:
        doc = loads(body[:end] if end < len(body) else body)
    except Exception as exc:
        raise _bad("with a body that is not JSON") from exc
    rows = doc.get("outputs") if isinstance(doc, Mapping) else None
    if not isinstance(rows, list):
        raise _bad("no list of outputs")
    view = memoryview(body)
    found: dict[str, _Output] = {}
    at = end
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise _bad(f"output {i} that is not an object")
        name, datatype, shape = row.get("name"), row.get("datatype"), row.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise _bad(f"output {i} without a name and a datatype")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise _bad(f"output {name!r} without a shape of sizes")
        if name in found:
            raise _bad(f"output {name!r} twice")
        out = found[name] = _Output(name, datatype, shape)
        params = row.get("parameters")
        if params is not None and not isinstance(params, Mapping):
            raise _bad(f"output {name!r} with parameters that are not an object")
        size = params.get("binary_data_size") if params else None
        if size is None:
            out.data = row.get("data")
            continue
        if header_length is None:
            raise _bad(f"binary data for output {name!r} without {HEADER_LENGTH}")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(body) - at:
            raise _bad(f"output {name!r} with a binary_data_size of {size!r} beyond its body")
        out.raw = view[at : at + size]
        at += size
    if header_length is not None and at != len(body):
        raise _bad(f"{len(body) - at} bytes after its outputs' binary data")
    return found


def _batch(
    outputs: Mapping[str, _Output], name: str, expected: int, dims: int, what: str
) -> np.ndarray:
    """Output ``name`` with one row per image sent and ``dims`` dimensions."""
    out = outputs.get(name)
    if out is None:
        raise _bad(f"no output {name!r} ({what})")
    arr = out.values()
    if arr.ndim != dims or arr.shape[0] != expected:
        raise _bad(f"{name!r} of shape {list(arr.shape)} for {expected} images ({what})")
    return arr


def _numbers(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype.kind not in "iuf":
        raise _bad(f"{name!r} that is not numbers")
    return arr.astype(np.float64, copy=False)


def parse_detections(
    body: bytes,
    header_length: int | None,
    expected: int,
    tile_sizes: Sequence[tuple[int, int]],
    table: LabelTable,
    *,
    boxes: str,
    scores: str,
    classes: str | None,
    box_format: str,
    count: str | None = "num_detections",
    max_detections: int | None = None,
) -> list[TileDetections]:
    """A detector's answer for ``expected`` tiles, boxes converted to tile pixels.

    ``boxes`` [n, k, 4], ``scores`` [n, k] and ``classes`` [n, k] (text, or class numbers)
    name the outputs read; an output ``count`` [n] in the answer (TF's ``num_detections``)
    says how many of each tile's k rows are real, the rest being padding.  Without
    ``classes`` every detection is class 1 (the first configured label).  The model's other
    outputs of shape [n, k, ...] follow their detections as extras.
    """
    if box_format not in BOX_FORMATS:
        raise ValueError(f"unknown box format {box_format!r} (one of {', '.join(BOX_FORMATS)})")
    if len(tile_sizes) != expected:
        raise ValueError(f"{len(tile_sizes)} tile sizes for {expected} tiles")
    outs = _outputs(body, header_length)
    b = _numbers(_batch(outs, boxes, expected, 3, "boxes"), boxes)
    if b.shape[2] != 4:
        raise _bad(f"{boxes!r} of shape {list(b.shape)}, not [n, k, 4]")
    k = b.shape[1]
    refusal = too_many_detections(k, max_detections)
    if refusal is not None:
        raise refusal
    s = _numbers(_batch(outs, scores, expected, 2, "scores"), scores)
    if s.shape[1] != k:
        raise _bad(f"{scores!r} of shape {list(s.shape)} for {boxes!r} of {list(b.shape)}")
    c = None
    if classes is not None:
        c = _batch(outs, classes, expected, 2, "classes")
        if c.shape[1] != k:
            raise _bad(f"{classes!r} of shape {list(c.shape)} for {boxes!r} of {list(b.shape)}")
        if c.dtype.kind == "b":
            raise _bad(f"{classes!r} that are neither text nor numbers")
    counts = _counts(outs, count, expected, k) if count else None
    read = {boxes, scores, classes, count}
    extras = {}
    for name, out in outs.items():
        if name not in read and out.known and out.shape[:2] == [expected, k]:
            extras[name] = out.values()

    result = []
    for i in range(expected):
        n = k if counts is None else counts[i]
        bi, si = b[i, :n], s[i, :n]
        if not (np.all(np.isfinite(bi)) and np.all(np.isfinite(si))):
            raise _bad(f"non-finite boxes or scores for tile {i}")
        labels = np.empty(n, dtype=np.int32)
        if c is None:
            labels[:] = table.index(None, 1.0)
        elif c.dtype.kind == "U":
            for j, text in enumerate(c[i, :n].tolist()):
                labels[j] = table.index(text, None)
        else:
            for j, v in enumerate(c[i, :n].tolist()):
                labels[j] = table.index(None, float(v) if math.isfinite(v) else None)
        w, h = tile_sizes[i]
        result.append(
            TileDetections(
                boxes=to_tile_pixels(bi, box_format, w, h),
                scores=si.copy(),
                classes=labels,
                extras={name: arr[i, :n] for name, arr in extras.items()},
            )
        )
    return result


def _counts(outs: Mapping[str, _Output], name: str, expected: int, k: int) -> list[int] | None:
    """Each tile's real detections from a ``num_detections``-like output, when answered."""
    out = outs.get(name)
    if out is None:
        return None
    arr = out.values()
    if arr.dtype.kind not in "iuf":
        raise _bad(f"{name!r} that is not a number")
    if arr.size != expected or arr.shape[:1] != (expected,):
        raise _bad(f"{name!r} of shape {list(arr.shape)} for {expected} images")
    flat = arr.reshape(expected).astype(np.float64)
    if not np.all(np.isfinite(flat)):
        raise _bad(f"a non-finite {name!r}")
    return [min(max(int(v), 0), k) for v in flat.tolist()]


def parse_classifications(
    body: bytes,
    header_length: int | None,
    expected: int,
    labels: Sequence[str],
    *,
    scores: str,
    label_output: str | None,
) -> list[Classification]:
    """A classifier's answer for ``expected`` images: ``scores`` [n, c], with ``label_output``
    ([n, c], or the vocabulary [c]) naming them.

    ``labels`` (from the configuration) name the scores of a model that answers scores
    alone; a model that answers its own labels is believed.
    """
    outs = _outputs(body, header_length)
    s = _batch(outs, scores, expected, 2, "scores")
    if s.dtype.kind not in "iuf" or s.shape[1] == 0 or not np.all(np.isfinite(s)):
        raise _bad(f"{scores!r} that are not lists of finite scores")
    s = s.astype(np.float64, copy=False)
    c = s.shape[1]
    names: list[tuple[str, ...]]
    if label_output is not None and label_output in outs:
        arr = outs[label_output].values()
        if arr.shape == (c,):
            arr = np.broadcast_to(arr, (expected, c))
        if arr.shape != (expected, c):
            raise _bad(f"{label_output!r} of shape {list(arr.shape)} for scores of {[*s.shape]}")
        names = [tuple(_label(v, label_output) for v in row) for row in arr.tolist()]
    else:
        if len(labels) != c:
            raise _bad(f"{c} scores without labels, and {len(labels)} labels are configured")
        names = [tuple(labels)] * expected
    return [Classification(names[i], tuple(s[i].tolist())) for i in range(expected)]


def _label(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == int(value):
        return str(int(value))
    raise _bad(f"{name!r} with a label that is neither text nor a whole number")


# -- errors, readiness, metadata -----------------------------------------------------------


def error_message(body: bytes) -> str:
    """A refusal's text (``{"error": "..."}``; KServe's request checks answer
    ``{"detail": ...}``), shortened, for logs and client messages."""
    try:
        doc = loads(body)
    except Exception:
        doc = None
    msg = None
    if isinstance(doc, Mapping):
        msg = doc.get("error")
        detail = doc.get("detail")
        if not isinstance(msg, str) and isinstance(detail, str):
            msg = detail
        elif not isinstance(msg, str) and isinstance(detail, list):
            parts = [d.get("msg") for d in detail if isinstance(d, Mapping)]
            msg = "; ".join(p for p in parts if isinstance(p, str)) or None
    text = msg if isinstance(msg, str) else body[:200].decode("utf-8", "replace")
    return " ".join(text.split())[:300]


def model_ready(status: int) -> bool:
    """``GET /v2/models/{model}[/versions/{v}]/ready`` answers with its status alone: 200
    is ready, anything else is not (Triton 400, KServe 503, a missing model 404)."""
    return 200 <= status < 300


def parse_metadata(body: bytes) -> dict:
    """``GET /v2/models/{model}`` as ``{"name", "versions", "platform", "inputs",
    "outputs"}``, each tensor ``{"name", "datatype", "shape"}`` (-1 for a variable size).

    Optional fields the server leaves out or sends as null become empty.
    """
    try:
        doc = loads(body)
    except Exception as exc:
        raise BackendBadResponse("the model's metadata is not JSON") from exc
    if not isinstance(doc, Mapping) or not isinstance(doc.get("name"), str):
        raise BackendBadResponse("the model's metadata is not an object with a name")
    versions = doc.get("versions") or []
    if not isinstance(versions, list) or not all(
        isinstance(v, (str, int)) and not isinstance(v, bool) for v in versions
    ):
        raise BackendBadResponse("the model's metadata has versions that are not a list")
    platform = doc.get("platform") or ""
    if not isinstance(platform, str):
        raise BackendBadResponse("the model's metadata has a platform that is not text")
    return {
        "name": doc["name"],
        "versions": [str(v) for v in versions],
        "platform": platform,
        "inputs": _tensors(doc.get("inputs"), "inputs"),
        "outputs": _tensors(doc.get("outputs"), "outputs"),
    }


def _tensors(rows: Any, what: str) -> list[dict]:
    if rows is None:
        return []
    if not isinstance(rows, list):
        raise BackendBadResponse(f"the model's metadata has {what} that are not a list")
    out = []
    for row in rows:
        shape = row.get("shape") if isinstance(row, Mapping) else None
        if (
            not isinstance(row, Mapping)
            or not isinstance(row.get("name"), str)
            or not isinstance(row.get("datatype"), str)
            or not isinstance(shape, list)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape)
        ):
            raise BackendBadResponse(f"the model's metadata has {what} without a name, type, shape")
        out.append({"name": row["name"], "datatype": row["datatype"], "shape": list(shape)})
    return out
