"""Base64 as TF Serving reads it: absl's ``Base64Unescape`` (TF Serving's
``util/json_tensor.cc`` decodes every ``{"b64": ...}`` with it).

Cases name their source: TF Serving's ``json_tensor_test.cc`` and absl's
``strings/escaping.cc`` (whose comments state the rules: whitespace skipped, padding
optional, ``.`` also a pad character).  :mod:`absl_base64` is a plain port of absl's
state machine, the reference for the property tests.
"""

from __future__ import annotations

import base64
import json

import pytest
from absl_base64 import absl_base64_unescape
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import jsonio
from gateway.codecs import detect as detect_wire
from gateway.codecs import tfserving_api as api
from gateway.errors import InvalidBase64

IMAGE = bytes(range(256)) * 40  # 10 kB: long enough for the decode-from-the-body path
ONE_LINE = base64.b64encode(IMAGE).decode()
WRAPPED = base64.encodebytes(IMAGE).decode()  # 76 letters a line, as `base64` writes
MIME = WRAPPED.replace("\n", "\r\n")  # MIME encoders end lines with CRLF


@pytest.mark.parametrize(
    "text,expected",
    [
        # json_tensor_test.cc, SingleUnnamedTensorBase64Scalars
        ("aGVsbG8=", b"hello"),
        ("d29ybGQ=", b"world"),
        # json_tensor_test.cc, FromJsonSingleBytesTensor (what TF Serving writes, read back)
        ("dGY=", b"tf"),
        ("c2VydmluZw==", b"serving"),
        # escaping.cc: "Always accepting 0 equals signs is an Abseil extension"
        ("aGVsbG8", b"hello"),
        ("c2VydmluZw", b"serving"),
        # escaping.cc: "as is accepting dot as the pad character"
        ("c2VydmluZw..", b"serving"),
        # escaping.cc: whitespace (absl::ascii_isspace) is skipped wherever it stands
        ("aGVs\nbG8=\n", b"hello"),
        (" aGVsbG8= ", b"hello"),
        ("aG\tVs\x0bbG\x0c8\r\n=", b"hello"),
        ("c2VydmluZw= =", b"serving"),  # whitespace between pad characters
        (WRAPPED, IMAGE),  # `base64` without -w0
        (MIME, IMAGE),
        (ONE_LINE + "\n", IMAGE),  # a trailing newline
        ("", b""),
    ],
)
def test_what_tf_serving_accepts_is_accepted(text, expected):
    assert absl_base64_unescape(text) == expected  # the reference agrees with the source
    assert jsonio.b64decode_strict(text, "x") == expected


@pytest.mark.parametrize(
    "text",
    [
        "aGVsbG8-",  # the URL-safe alphabet: kUnBase64 has no '-' or '_'
        "c2VydmluZw_",
        "aGVs!bG8=",  # any other character outside the alphabet
        "aGVsbG8=\x00",
        "aGVsbG8=aGVs",  # data after the padding
        "aGVsbG8==",  # more padding than the last group takes (escaping.cc: "exactly")
        "c2VydmluZw=",  # less
        "aGVsbG8=.",  # kPad64Equals and kPad64Dot count together
        "aGVsb",  # a last group of one character: "6 bits left over"
        "aGVsbG8é",
    ],
)
def test_what_tf_serving_refuses_is_a_400(text):
    assert absl_base64_unescape(text) is None
    with pytest.raises(InvalidBase64) as info:
        jsonio.b64decode_strict(text, '"b64"')
    assert info.value.status == 400 and info.value.message.startswith('"b64" is not valid')


def test_the_url_safe_alphabet_is_named_in_the_error():
    with pytest.raises(InvalidBase64, match="URL-safe"):
        jsonio.b64decode_strict("aGVsbG8-", "x")


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
texts = st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()) | st.text(
    alphabet=LETTERS[:6] + LETTERS[-4:] + "=. \n\r\t\x0b\x0c-_!\x00é", max_size=24
)
edits = st.lists(st.tuples(st.integers(0, 64), st.sampled_from(list("=.A/+ \n\r-_!"))), max_size=3)


def _mangle(text: str, changes: list[tuple[int, str]]) -> str:
    chars = list(text)
    for pos, letter in changes:
        chars.insert(min(pos, len(chars)), letter)
    return "".join(chars)


def _outcome(fn, value) -> bytes | None:
    try:
        return fn(value)
    except (InvalidBase64, ValueError):
        return None


@settings(max_examples=2000, deadline=None)
@given(texts, edits)
def test_decodes_exactly_as_absl(text, changes):
    text = _mangle(text, changes)
    assert _outcome(lambda t: jsonio.b64decode_strict(t, "x"), text) == absl_base64_unescape(text)


@settings(max_examples=2000, deadline=None)
@given(texts, edits)
def test_the_fast_path_and_the_general_path_agree(text, changes):
    data = _mangle(text, changes).encode("utf-8")
    fast = _outcome(lambda d: jsonio._pybase64.b64decode(d, validate=True), data)
    if fast is not None:  # whatever the SIMD path takes, the general path takes the same
        assert _outcome(jsonio.a2b_absl, data) == fast
    assert _outcome(jsonio.a2b_tfserving, data) == _outcome(jsonio.a2b_absl, data)


@pytest.mark.parametrize("text", [WRAPPED, MIME, ONE_LINE + "\n", ONE_LINE.rstrip("=")])
def test_predict_reads_the_forms_base64_writes(text):
    # api_rest.md, "Encoding binary values": {"b64": "<base64 string>"}, here as the
    # web app sends it, with the image as different encoders write it.
    for doc in (
        {"instances": [{"image_bytes": {"b64": text}, "key": "eos"}]},
        {"inputs": {"image_bytes": [{"b64": text}], "key": ["eos"]}},
    ):
        req = api.parse_predict_request(
            json.dumps(doc).encode(), query_threshold=None, max_instances=4
        )
        assert [i.image for i in req.instances] == [IMAGE]


def test_long_unpadded_base64_is_decoded_from_the_body():
    body = b'{"instances":[{"b64":"' + ONE_LINE.rstrip("=").encode() + b'"}]}'
    value = jsonio.loads_decoding(body, "b64")["instances"][0]["b64"]
    assert isinstance(value, jsonio.DecodedBase64) and value.data == IMAGE


@pytest.mark.parametrize("text", [WRAPPED, ONE_LINE.rstrip("=")])
def test_detect_json_image_reads_the_same(text):
    req = detect_wire.parse_json(json.dumps({"image": text}).encode(), {})
    assert req.image == IMAGE
    with pytest.raises(InvalidBase64):
        detect_wire.parse_json(json.dumps({"image": text.replace("/", "_")}).encode(), {})
