"""What many tests need, written once: where the repository and the real photographs are,
image bytes and base64, the shape of an error answer, API key hashes, today's date and the
``python -m gateway`` command line.

The real slide photographs are not ours to redistribute, so they are not in the
repository.  ``GATEWAY_TEST_DATA`` names their folder (default ``../shared/data`` beside the
checkout).  Without them the tests that need them are skipped, saying so; with
``GATEWAY_TEST_DATA_REQUIRED=1`` (set by ``.ci/run``: CI has them) they fail instead.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import flask
import numpy as np
import pytest
import requests
from PIL import Image
from synthetic import make_slide, random_cells

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SAMPLE_SLIDE = REPO / "samples" / "slide.jpg"  # synthetic, made by tools/sample_slide.py
DATA = Path(os.environ.get("GATEWAY_TEST_DATA") or REPO.parent / "shared" / "data")
DATA_REQUIRED = os.environ.get("GATEWAY_TEST_DATA_REQUIRED") == "1"

# The gateway's own environment variables: a child process gets only what its test gives.
GATEWAY_VARIABLES = ("GATEWAY_CONFIG", "K_SERVICE", "FIRESTORE_EMULATOR_HOST")


def real_photo(name: str) -> Path:
    """The real photograph ``name`` in ``DATA``; skips the test when it is not there (fails
    when ``GATEWAY_TEST_DATA_REQUIRED=1``)."""
    path = DATA / name
    if path.is_file():
        return path
    message = (
        f"needs {name} of the real slide photographs, not found in {DATA} (they are not "
        "in the repository; set GATEWAY_TEST_DATA to their folder)"
    )
    if DATA_REQUIRED:
        pytest.fail(message)
    pytest.skip(message)


def real_slides() -> dict[str, bytes]:
    """The real photographs, as JPEG and re-encoded as PNG."""
    out = {}
    for name in ("real-slide-1920x1440.jpg", "real-slide.jpg"):
        data = real_photo(name).read_bytes()
        out[name] = data
        out[name.replace(".jpg", ".png")] = encode(Image.open(io.BytesIO(data)), "PNG")
    return out


# --- images ---------------------------------------------------------------------------------


def encode(image: np.ndarray | Image.Image, fmt: str, **save: Any) -> bytes:
    """``image`` (an RGB array or a Pillow image) in ``fmt``; JPEG at quality 92 unless told."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    if fmt == "JPEG":
        save.setdefault("quality", 92)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def jpeg(image: np.ndarray | Image.Image, quality: int = 95, **save: Any) -> bytes:
    return encode(image, "JPEG", quality=quality, **save)


def png(image: np.ndarray | Image.Image, **save: Any) -> bytes:
    return encode(image, "PNG", **save)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk, its CRC right: for PNGs no encoder would write."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def jpeg_scans(data: bytes) -> list[tuple[int, int]]:
    """``(start, end)`` of each scan of a JPEG: its SOS segment and its entropy-coded data."""
    import re

    found, i = [], 2
    while i < len(data) and data[i + 1] != 0xD9:
        end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if data[i + 1] == 0xDA:
            end = re.compile(rb"\xff[^\x00\xd0-\xd7]").search(data, end).start()
            found.append((i, end))
        i = end
    return found


def many_scans_jpeg(
    width: int, height: int, scans: int, image: Image.Image | None = None, repeat: int = 5
) -> bytes:
    """A progressive JPEG whose costliest scan (an AC refinement of the luma, 4:4:4) is
    repeated until the file has ``scans`` scans: libjpeg warns and goes through each one,
    a pass over every block of the image for a few dozen bytes.  ``image``: the pixels
    (default flat); ``repeat``: the scan repeated (6: the DC refinement, all components)."""
    data = encode(
        image or Image.new("RGB", (width, height), (200, 180, 210)),
        "JPEG",
        quality=90,
        progressive=True,
        subsampling=0,
    )
    own = jpeg_scans(data)
    # Scans of this encoder: 0 DC, 1-4 AC first, 5 luma AC refinement (Ah=2, Al=1), ...
    start, end = own[repeat]
    last = own[-1][1]
    return data[:last] + data[start:end] * max(0, scans - len(own)) + data[last:]


def many_segments_jpeg(segments: int, marker: int = 0xFE) -> bytes:
    """A small JPEG with ``segments`` empty segments (COM by default, or an APPn) first."""
    data = encode(Image.new("RGB", (64, 48), (200, 180, 210)), "JPEG")
    return data[:2] + bytes((0xFF, marker, 0, 2)) * segments + data[2:]


def many_chunks_png(chunks: int, kind: bytes = b"tEXt") -> bytes:
    """A small PNG with ``chunks`` tiny chunks (ancillary, or empty IDAT ones) before its own
    IDAT."""
    data = png(Image.new("RGB", (64, 48), (200, 180, 210)))
    at = data.index(b"IDAT") - 4
    one = png_chunk(kind, b"k\x00" if kind == b"tEXt" else b"")
    return data[:at] + one * chunks + data[at:]


def many_blocks_gif(blocks: int) -> bytes:
    """A small GIF with ``blocks`` one-byte comment extensions ahead of its picture."""
    data = encode(Image.new("RGB", (64, 48), (200, 180, 210)), "GIF")
    at = 13 + (3 * 2 ** ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    return data[:at] + b"\x21\xfe\x01x\x00" * blocks + data[at:]


def b64(data: bytes) -> str:
    """``data`` in standard base64, as JSON bodies carry images."""
    return base64.b64encode(data).decode()


def synthetic_slide(width: int, height: int, n_cells: int, seed: int, fmt: str) -> bytes:
    """A synthetic slide with ``n_cells`` eosinophils apart from each other, encoded."""
    cells = random_cells(width, height, n_cells, seed=seed, min_gap=8) if n_cells else []
    return encode(make_slide(width, height, cells, seed=seed), fmt)


# --- answers ---------------------------------------------------------------------------------

ERROR_KEYS = {"error", "code", "request_id"}


def assert_error(resp: requests.Response, status: int, code: str | None = None) -> dict:
    """The gateway's error answer as every route gives it: JSON with a message, a code and
    the request's id, never a stack trace or an HTML page."""
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert set(body) >= ERROR_KEYS and body["error"] and body["request_id"]
    assert body["request_id"] == resp.headers["X-Request-Id"]
    assert "Traceback" not in resp.text and "<html" not in resp.text.lower()
    if code is not None:
        assert body["code"] == code, body
    return body


def image_answer(
    url: str,
    data: bytes,
    content_type: str = "application/octet-stream",
    headers: dict[str, str] | None = None,
) -> dict:
    """The JSON answer to an image sent as the raw body of ``POST url``; an error status
    raises ``urllib.error.HTTPError``."""
    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": content_type, **(headers or {})}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


# --- waiting -----------------------------------------------------------------------------------

WAIT_S = 120.0  # how long a condition may take on a busy machine: slow is not broken


def wait_until(cond: Callable[[], bool], what: str, bound_s: float = WAIT_S) -> None:
    """Poll ``cond`` until it holds; fail saying ``what`` did not happen within ``bound_s``.

    Tests wait for what they need this way, never for a guessed time."""
    end = time.monotonic() + bound_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"not within {bound_s} s: {what}")
        time.sleep(0.01)


# --- keys, dates, the command line ------------------------------------------------------------


def sha(key: str) -> str:
    """An API key as the configuration holds it (its SHA-256, hex)."""
    return hashlib.sha256(key.encode()).hexdigest()


def today() -> str:
    """Today's UTC day as usage records name it."""
    return datetime.now(UTC).strftime("%Y-%m-%d")


def cli_argv(*args: str) -> list[str]:
    """The command line of ``python -m gateway ARGS`` with this interpreter."""
    return [sys.executable, "-m", "gateway", *args]


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``python -m gateway`` process: none of this process's gateway
    variables, only those ``env`` gives, so that no test's settings leak into another's."""
    full = {k: v for k, v in os.environ.items() if k not in GATEWAY_VARIABLES}
    full.update(env or {})
    full["PYTHONPATH"] = str(REPO)
    return full


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess:
    """``python -m gateway ARGS`` as its own process, run to its end (see ``cli_env``)."""
    return subprocess.run(
        cli_argv(*args),
        cwd=cwd or REPO,
        env=cli_env(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def gateway_app() -> flask.Flask:
    """A Flask app that passes every request to ``gateway.rest.app.handle`` as
    ``main.gateway`` does: in this process, to the gateway ``gateway.runtime`` holds."""
    from gateway.rest.app import handle

    app = flask.Flask(__name__)

    def entry(path: str = "") -> flask.Response:
        return handle(flask.request)

    app.add_url_rule("/", "root", entry, methods=["GET", "POST"])
    app.add_url_rule("/<path:path>", "any", entry, methods=["GET", "POST"])
    return app


def run_on_google_cloud(script: str, metadata_host: str, timeout: float, **env: str) -> str:
    """``script`` in a fresh Python as on Google Cloud: no key file in its environment, the
    metadata server at ``metadata_host``; plus ``env``.  The last line it printed."""
    full = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "GCE_METADATA_HOST": metadata_host,
        "GCE_METADATA_IP": metadata_host,
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=full, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def modules_loaded_by(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` in the repository: what
    an import or a first request costs a cold start."""
    probe = (
        code
        + "\nimport json as _j, sys as _s\nprint(_j.dumps(sorted(_s.modules)), file=_s.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def gateway_modules() -> Iterator[tuple[str, ast.Module]]:
    """(dotted name, parsed source) of every module of the gateway, ``main.py`` included."""
    for path in [*sorted((REPO / "gateway").rglob("*.py")), REPO / "main.py"]:
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name != "gateway":
            yield name, ast.parse(path.read_text())


def imported(tree: ast.AST) -> Iterator[str]:
    """Every module imported, at the top or inside a function (lazy imports count too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "gateway":
                yield from (f"gateway.{a.name}" for a in node.names)
            else:
                yield node.module


def in_threads(
    work: Callable[[int], None], count: int, timeout_s: float = 120
) -> list[BaseException]:
    """``work(i)`` for each ``i`` below ``count``, each in a thread of its own, waited for.

    Returns what the threads raised: a client that dies must fail the test, not vanish.
    """
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # reported to the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout_s)
    return errors
