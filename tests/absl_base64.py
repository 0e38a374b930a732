"""A character-by-character model of absl's ``Base64Unescape``: how TF Serving reads the
``{"b64": ...}`` of its REST API (``json_tensor.cc`` calls ``absl::Base64Unescape``).

It follows the state machine of ``Base64UnescapeInternal`` in absl/strings/escaping.cc
step by step, slowly and plainly, so the gateway's decoder can be checked against it.
"""

from __future__ import annotations

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
SPACE = " \t\n\v\f\r"  # absl::ascii_isspace
PADS = "=."  # kPad64Equals, kPad64Dot


def absl_base64_unescape(text: str) -> bytes | None:
    """The decoded bytes, or ``None`` where absl returns false."""
    out = bytearray()
    temp = state = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in SPACE:
            i += 1
            continue
        if ch in PADS:
            break  # the remainder is checked for the number of pad characters
        value = ALPHABET.find(ch)
        if value < 0:
            return None
        temp = (temp << 6) | value
        state += 1
        i += 1
        if state == 4:
            out += temp.to_bytes(3, "big")
            temp = state = 0
    if state == 1:
        return None  # 6 bits left over
    if state == 2:
        out.append((temp >> 4) & 0xFF)
    elif state == 3:
        out += ((temp >> 2) & 0xFFFF).to_bytes(2, "big")
    expected = {0: 0, 2: 2, 3: 1}[state]
    equals = 0
    for ch in text[i:]:
        if ch in PADS:
            equals += 1
        elif ch not in SPACE:
            return None
    return bytes(out) if equals in (0, expected) else None
