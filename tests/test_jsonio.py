"""Long base64 values decoded straight from the raw body give exactly what the plain parse
(orjson, then a strict base64 decode of the str) gives: the same images, or the same error."""

from __future__ import annotations

import base64
import binascii
import os

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway import jsonio
from gateway.codecs import tfserving_api as api
from gateway.errors import GatewayError

IMAGE = os.urandom(9000)
B64 = base64.b64encode(IMAGE)
assert len(B64) >= jsonio.BLOB_MIN_CHARS


def _outcome(body: bytes, plain: bool, monkeypatch: pytest.MonkeyPatch) -> tuple:
    with monkeypatch.context() as m:
        if plain:
            m.setattr(
                api,
                "loads_decoding",
                lambda data, key, unique_keys=False: jsonio.loads(data, unique_keys=unique_keys),
            )
        try:
            req = api.parse_predict_request(body, query_threshold=None, max_instances=64)
        except GatewayError as exc:
            return ("error", exc.status, exc.code, exc.message)
    return ("ok", [(i.image, i.key) for i in req.instances], req.threshold, req.columnar)


CASES = {
    "one instance": b'{"instances":[{"image_bytes":{"b64":"' + B64 + b'"},"key":"k"}]}',
    "whitespace, two forms": b'{"instances":[{"image_bytes":{"b64" : \n"'
    + B64
    + b'"},"key":"k"},{"b64":"'
    + B64
    + b'"}]}',
    "columnar": b'{"inputs":{"image_bytes":[{"b64":"' + B64 + b'"}],"key":["a"]}}',
    "bad letter": b'{"instances":[{"image_bytes":{"b64":"' + B64[:-1] + b'!"}}]}',
    "escaped newline": b'{"instances":[{"image_bytes":{"b64":"'
    + B64[:5000]
    + b"\\n"
    + B64[5000:]
    + b'"}}]}',
    "escaped slash": b'{"instances":[{"image_bytes":{"b64":"'
    + B64.replace(b"/", b"\\/")
    + b'"}}]}',
    "letters outside the alphabet": b'{"instances":[{"image_bytes":{"b64":"'
    + B64[:100]
    + b"!@#%"
    + B64[100:]
    + b'"}}]}',
    "padding in the middle": b'{"instances":[{"image_bytes":{"b64":"'
    + B64[:100]
    + b"AA=="
    + B64[100:]
    + b'"}}]}',
    "length not a multiple of 4": b'{"instances":[{"image_bytes":{"b64":"' + B64[:-1] + b'"}}]}',
    "trailing comma": b'{"instances":[{"image_bytes":{"b64":"' + B64 + b'"}}],}',
    "unterminated": b'{"instances":[{"image_bytes":{"b64":"' + B64,
    "bad UTF-8 after": b'{"instances":[{"image_bytes":{"b64":"' + B64 + b'"}}], "x": "\xff"}',
    "duplicate key": b'{"instances":[{"image_bytes":{"b64":"'
    + B64
    + b'", "b64":"'
    + B64[:-8]
    + b'"}}]}',
    "key ending in an escaped quote": b'{"x\\"b64":"'
    + B64
    + b'", "instances":[{"b64":"'
    + B64
    + b'"}]}',
    "b64 object as the key": b'{"instances":[{"image_bytes":{"b64":"'
    + B64
    + b'"},"key":{"b64":"'
    + B64
    + b'"}}]}',
    "not an object": b'"b64":"' + B64 + b'"',
    "threshold": b'{"instances":[{"image_bytes":{"b64":"' + B64 + b'"}}], "threshold": 0.4}',
    "inside a string": b'{"instances":[{"image_bytes":{"b64":"'
    + B64
    + b'"},"key":"\\"b64\\":\\"'
    + B64
    + b'"}]}',
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_result_as_the_plain_parse(name, monkeypatch):
    body = CASES[name]
    assert _outcome(body, False, monkeypatch) == _outcome(body, True, monkeypatch)


def test_the_value_is_decoded_from_the_body():
    doc = jsonio.loads_decoding(CASES["one instance"], "b64")
    value = doc["instances"][0]["image_bytes"]["b64"]
    assert isinstance(value, jsonio.DecodedBase64)
    assert jsonio.b64decode_strict(value, "x") == IMAGE


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.sampled_from([b'{"instances":[{"image_bytes":{"b64":"', b'{"b64":"', b'["b64":"']),
    cut=st.integers(0, len(B64)),
    junk=st.binary(max_size=4) | st.sampled_from([b"====", b"!!!!", b"\\n", b"A="]),
    suffix=st.sampled_from([b'"}}]}', b'"}', b'"', b"}", b'"}}]}x']),
)
# Raw tabs and line breaks: base64 skips them, JSON refuses them unescaped in a string.
@example(prefix=b'{"instances":[{"image_bytes":{"b64":"', cut=0, junk=b"\t", suffix=b'"}}]}')
@example(prefix=b'{"b64":"', cut=76, junk=b"\r\n", suffix=b'"}')
def test_same_result_on_mangled_bodies(prefix, cut, junk, suffix):
    body = prefix + B64[:cut] + junk + B64[cut:] + suffix
    mp = pytest.MonkeyPatch()
    try:
        assert _outcome(body, False, mp) == _outcome(body, True, mp)
    finally:
        mp.undo()


def _binascii(data: bytes) -> bytes | None:
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def _fast(data: bytes) -> bytes | None:
    try:
        return jsonio.a2b_strict(data)
    except (binascii.Error, ValueError):
        return None


BASE64_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@settings(max_examples=3000, deadline=None)
@given(
    st.binary(max_size=40).map(base64.b64encode)
    | st.lists(st.sampled_from(list(BASE64_LETTERS + b"=-_ \n!\x00")), max_size=24).map(bytes),
    st.lists(st.tuples(st.integers(0, 64), st.sampled_from(list(b"=A/-\n ."))), max_size=3),
)
def test_fast_base64_decodes_exactly_as_strict_binascii(data, edits):
    mangled = bytearray(data)
    for pos, letter in edits:
        mangled.insert(min(pos, len(mangled)), letter)
    mangled = bytes(mangled)
    assert _fast(mangled) == _binascii(mangled)
    assert _fast(mangled.decode("latin-1")) == _binascii(mangled.decode("latin-1"))


def test_unique_keys_refuses_a_key_given_twice_at_any_depth():
    assert jsonio.loads(b'{"a": {"b": 1, "c": [{"d": 2}]}}', unique_keys=True) == {
        "a": {"b": 1, "c": [{"d": 2}]}
    }
    for body in (b'{"a": 1, "a": 1}', b'{"a": [{"b": 1, "b": 2}]}', b'[{"x": {"y": 1, "y": 1}}]'):
        assert jsonio.loads(body) is not None  # the plain parse keeps the last
        with pytest.raises(GatewayError) as info:
            jsonio.loads(body, unique_keys=True)
        assert (info.value.status, info.value.code) == (400, "invalid_json")
    with pytest.raises(GatewayError):
        jsonio.loads(b'{"a": "\xff"}', unique_keys=True)  # not UTF-8, as orjson refuses


def test_every_codec_that_counts_images_refuses_duplicate_keys():
    from gateway.codecs import classify, detect, v2_api, vertex_api

    image = B64.decode()
    calls = [
        lambda: v2_api.passthrough_batch_size(
            b'{"inputs": [{"name": "a", "shape": [9]}], "inputs": []}', None
        ),
        lambda: v2_api.parse_infer_request(b'{"inputs": [], "inputs": []}', None, max_instances=16),
        lambda: vertex_api.parse_predict_request(
            f'{{"instances": [{{"content": "{image}"}}], "instances": []}}'.encode(),
            max_instances=16,
        ),
        lambda: detect.parse_json(f'{{"image": "{image}", "image": "x"}}'.encode(), {}),
        lambda: classify.parse_json(f'{{"image": "{image}", "image": "x"}}'.encode(), {}),
    ]
    for call in calls:
        with pytest.raises(GatewayError) as info:
            call()
        assert info.value.code == "invalid_json" and "twice" in info.value.message
