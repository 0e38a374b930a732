"""JSON and base64 with the fastest codec available, and strict input checking.

orjson parses and writes the ~1 MB bodies several times faster than the standard
library; the standard library stays as a fallback so the gateway still runs without it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from typing import Any

from gateway.errors import InvalidBase64, InvalidJSON

try:  # pragma: no cover - exercised by whichever is installed
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None

try:  # pragma: no cover - exercised by whichever is installed
    import pybase64 as _pybase64
except ImportError:  # pragma: no cover
    _pybase64 = None


def a2b_strict(data: Any) -> bytes:
    """Strict base64 (``binascii.a2b_base64(strict_mode=True)``), SIMD-fast when it can be.

    pybase64 decodes a slide's megabyte of base64 ~40x faster.  What it accepts with
    ``validate=True`` is a subset of what strict binascii accepts, decoded the same
    (tests/test_jsonio.py), so anything it refuses is left to binascii to decide.
    Raises ``binascii.Error`` or ``ValueError``.
    """
    if _pybase64 is not None:
        try:
            return _pybase64.b64decode(data, validate=True)
        except (binascii.Error, ValueError, TypeError):
            pass
    return binascii.a2b_base64(data, strict_mode=True)


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(data: bytes | str, *, unique_keys: bool = False) -> Any:
    """The document; with ``unique_keys`` an object that names a key twice is refused.

    Parsers disagree on duplicates: orjson and Python keep the last, TF Serving's and
    Triton's (rapidjson) find the first.  A body whose image count the gateway reads
    (quotas charge it) must mean to the gateway what it means to the model, so request
    bodies are parsed with ``unique_keys``: the standard library's parser with a check
    per object, as fast as orjson on bodies of images and within twice its time on
    bodies of millions of small objects.
    """
    try:
        if unique_keys:
            text = data if isinstance(data, str) else bytes(data).decode("utf-8")
            return json.loads(text, object_pairs_hook=_unique, parse_constant=_no_constant)
        if _orjson is not None:
            return _orjson.loads(data)
        return json.loads(data)
    except _DuplicateKey as exc:
        raise InvalidJSON(
            f"the request body names the key {exc.key[:64]!r} twice in one object; "
            "each key may appear once"
        ) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidJSON("the request body is not valid JSON") from exc


# A JSON string value of at least this many characters under one of the given keys is
# decoded from the raw body instead of being turned into a str first.
BLOB_MIN_CHARS = 4096


class DecodedBase64:
    """A base64 string value already decoded from the raw body by :func:`loads_decoding`.

    It stands where the str was in the parsed document; :func:`b64decode_strict` returns
    its bytes.  Anything else that looks at the value sees neither a str nor a number, as
    it would have seen a string it did not expect.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<{len(self.data):,} bytes of base64-decoded data>"


# Whitespace base64 skips but a JSON string may not hold unescaped.
_JSON_RAW_CONTROLS = (b"\t", b"\n", b"\v", b"\f", b"\r")


def _blob_pattern(key: str) -> re.Pattern[bytes]:
    return re.compile(rb'"' + re.escape(key.encode()) + rb'"[ \t\n\r]*:[ \t\n\r]*"')


def loads_decoding(data: bytes, key: str, *, unique_keys: bool = False) -> Any:
    """:func:`loads`, with long base64 string values under ``key`` decoded straight from
    ``data``.

    A 30 MB body parsed as usual is held three times at once: the body, a 30 MB str of
    its base64 and the decoded image.  Here each long value that is valid base64 (as
    :func:`b64decode_strict` reads it) is decoded from a view of the body, and the
    document is parsed with a short marker in its place, so the str never exists.  The
    result is the same: a ``"<key>":"`` that is not inside a string always opens a
    string value (the quote after the key cannot be an escaped one), a value made only
    of base64 letters, padding and spaces (never the raw tabs or line breaks JSON refuses
    in a string, which base64 would skip) has no escapes, and swapping it for another
    plain string leaves the JSON exactly as valid or invalid as it was.
    Values that are short, escaped or not valid base64 stay in place and meet the usual
    checks in :func:`b64decode_strict`.
    """
    view = memoryview(data)
    pieces: list[bytes | memoryview] = []
    blobs: dict[str, DecodedBase64] = {}
    nonce = os.urandom(8).hex()
    quoted = b'"' + key.encode() + b'"'
    pattern = _blob_pattern(key)
    pos = found = 0
    while (at := data.find(quoted, found)) >= 0:
        found = at + len(quoted)
        m = pattern.match(data, at)
        if m is None or (at > 0 and data[at - 1] == 0x5C):
            continue  # not followed by a string value, or the end of a key like "x\"b64"
        start = m.end()
        end = data.find(b'"', start)
        if end < 0 or end - start < BLOB_MIN_CHARS:
            continue
        if any(data.find(c, start, end) >= 0 for c in _JSON_RAW_CONTROLS):
            continue  # JSON refuses it in a string: left in place, the parse says so
        try:
            decoded = a2b_tfserving(view[start:end])
        except (binascii.Error, ValueError):
            continue
        marker = f"\\u0000{nonce}:{len(blobs)}"
        blobs[f"\x00{nonce}:{len(blobs)}"] = DecodedBase64(decoded)
        pieces += [view[pos:start], marker.encode()]
        pos = found = end
    if not blobs:
        return loads(data, unique_keys=unique_keys)
    pieces.append(view[pos:])
    doc = loads(b"".join(pieces), unique_keys=unique_keys)
    del pieces, view
    return _place(doc, blobs, key)


def _place(doc: Any, blobs: dict[str, DecodedBase64], key: str) -> Any:
    """Put each decoded value where its marker is: under ``key`` in some object."""
    stack = [doc]
    while stack and blobs:
        node = stack.pop()
        if isinstance(node, dict):
            value = node.get(key)
            if isinstance(value, str) and value in blobs:
                node[key] = blobs.pop(value)
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    return doc


def dumps(obj: Any) -> bytes:
    if _orjson is not None:
        return _orjson.dumps(obj, option=_orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


# absl::ascii_isspace: what TF Serving's base64 reader skips wherever it stands.
_SPACE = b" \t\n\v\f\r"
_SPACES = tuple(bytes([c]) for c in _SPACE)
_PADS = b"=."  # absl accepts '.' as well as '=' as the pad character
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def a2b_absl(data: bytes | memoryview) -> bytes:
    """Base64 as TF Serving reads it (absl's ``Base64Unescape``), the general path.

    Whitespace is skipped anywhere; the padding is optional but, when present, must be
    exactly what the last group needs (``=`` or ``.``), with nothing but padding and
    whitespace after it; any other character outside the standard alphabet (URL-safe
    ``-`` and ``_`` included) is refused, as is a last group of a single character.
    Raises ``ValueError`` with the reason.
    """
    body = bytes(data)
    if any(space in body for space in _SPACES):  # a few memchr scans spare a copy
        body = body.translate(None, _SPACE)
    letters = body.rstrip(_PADS)
    pads = len(body) - len(letters)
    rest = len(letters) % 4
    needed = (4 - rest) % 4
    if pads and pads != needed and rest != 1:
        raise ValueError(f"{pads} padding characters where the last group takes {needed}")
    try:
        if rest == 1:
            raise ValueError("its last group has a single character")
        return a2b_strict(letters + b"=" * needed)
    except (binascii.Error, ValueError) as exc:
        others = letters.translate(None, _ALPHABET)  # only to say what is wrong
        if not others:
            raise ValueError(str(exc)) from None
        char = chr(others[0])
        if char in "=.":
            raise ValueError("padding before the end") from None
        hint = " (URL-safe base64 is not accepted)" if char in "-_" else ""
        raise ValueError(f"the character {char!r} is outside the standard alphabet{hint}") from None


def a2b_tfserving(data: bytes | memoryview) -> bytes:
    """:func:`a2b_absl`, with the common case (one padded line) on the SIMD fast path.

    Whatever the fast path accepts, the general path decodes to the same bytes
    (tests/codecs/test_tfserving_base64.py); whatever it refuses goes to the general path.
    """
    if _pybase64 is not None:
        try:  # not binascii's strict mode: it takes padding after a full group
            return _pybase64.b64decode(data, validate=True)
        except (binascii.Error, ValueError, TypeError):
            pass
    return a2b_absl(data)


def b64decode_strict(value: Any, what: str) -> bytes:
    """A base64 string read exactly as TF Serving reads it: nothing it refuses passes."""
    if isinstance(value, DecodedBase64):
        return value.data  # checked the same way when it was decoded from the body
    if not isinstance(value, str):
        raise InvalidBase64(f"{what} must be a base64 string")
    if not value.isascii():
        raise InvalidBase64(f"{what} is not valid base64: non-ASCII characters")
    try:
        return a2b_tfserving(value.encode("ascii"))
    except (binascii.Error, ValueError) as exc:
        raise InvalidBase64(f"{what} is not valid base64: {exc}") from exc


def b64encode(data: bytes) -> bytes:
    if _pybase64 is not None:
        return _pybase64.b64encode(data)
    return base64.b64encode(data)
