"""Shared pieces of the benchmarks: slides, request bodies, helper processes, statistics.

It is also the one way a benchmark reaches the tests' helpers: this module puts
``tests/`` on ``sys.path`` (the tests import each other as top-level modules, so the
benchmarks do too) and every benchmark takes those helpers from here, never from
``tests.X``, so that no module is loaded twice under two names.
"""

from __future__ import annotations

import base64
import io
import json
import os
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' helpers, imported as the tests do

from certserver import SA_EMAIL, KeyPair  # noqa: E402
from firestore_emulator import FirestoreEmulator  # noqa: E402
from helpers import (  # noqa: E402
    DATA,
    VENV_BIN,
    jpeg,
    many_blocks_gif,
    many_chunks_png,
    many_scans_jpeg,
    many_segments_jpeg,
    png,
    sha,
    today,
)
from hidden_libs import library_files, without_files  # noqa: E402
from loadgen import RssSampler, idle_rss_bytes  # noqa: E402
from procs import Proc, free_port, start_gateway  # noqa: E402
from raw_server import scripted_server  # noqa: E402
from synthetic import make_slide  # noqa: E402
from usage_helpers import daily_counters, run_clients  # noqa: E402

__all__ = [
    "DATA",
    "VENV_BIN",
    "FirestoreEmulator",
    "KeyPair",
    "Proc",
    "RssSampler",
    "daily_counters",
    "free_port",
    "idle_rss_bytes",
    "jpeg",
    "many_blocks_gif",
    "many_chunks_png",
    "many_scans_jpeg",
    "many_segments_jpeg",
    "make_slide",
    "png",
    "run_clients",
    "scripted_server",
    "service_account_file",
    "sha",
    "start_gateway",
    "start_stub",
    "start_bare",
    "library_files",
    "today",
    "without_files",
]

_PNG_CACHE = Path(tempfile.gettempdir()) / "eos-bench"


def slide_bytes(path: Path, png: bool = False) -> bytes:
    """The slide's bytes, or the same pixels as a PNG (made once, kept in /tmp)."""
    if not png:
        return path.read_bytes()
    _PNG_CACHE.mkdir(exist_ok=True)
    out = _PNG_CACHE / (path.stem + ".png")
    if not out.exists():
        with Image.open(path) as im:
            im.convert("RGB").save(out, format="PNG")
    return out.read_bytes()


def decode_once(data: bytes) -> None:
    """The reference: Pillow decoding the slide once (no conversion, no array copy)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()


def predict_body(data: bytes, key: str = "slide") -> bytes:
    b64 = base64.b64encode(data)
    return b'{"instances":[{"image_bytes":{"b64":"' + b64 + b'"},"key":"' + key.encode() + b'"}]}'


def start_stub(delay_s: float) -> Proc:
    """The TF Serving stub (bench/stub_backend.py) answering after ``delay_s``."""
    port = free_port()
    argv = [
        str(VENV_BIN / "python"),
        "-m",
        "bench.stub_backend",
        "--port",
        str(port),
        "--delay-ms",
        str(delay_s * 1000.0),
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return Proc(argv, port, env, ROOT, "/v1/models/eos", "stub-backend").start()


def service_account_file(path: Path, token_uri: str) -> Path:
    """A service-account key file with a fresh RSA key, its ``token_uri`` the stub's
    (bench/stub_backend.py), as a Vertex AI backend's ``credentials_file``."""
    key = KeyPair.generate("bench")
    info = {
        "type": "service_account",
        "project_id": "bench",
        "private_key_id": key.kid,
        "private_key": key.private_pem,
        "client_email": SA_EMAIL,
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(info), encoding="utf-8")
    return path


def start_bare(target: str = "read_body", port: int | None = None, start: bool = True) -> Proc:
    """A bare functions-framework function (bench/bare_function.py), started like the gateway."""
    port = port or free_port()
    argv = [
        str(VENV_BIN / "functions-framework"),
        "--target",
        target,
        "--source",
        str(ROOT / "bench" / "bare_function.py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("K_SERVICE", "GATEWAY_CONFIG")}
    env["PYTHONUNBUFFERED"] = "1"
    proc = Proc(argv, port, env, ROOT, "/", f"bare-{target}")
    return proc.start() if start else proc


RESULTS = ROOT / "bench" / "results"


def save_results(kind: str, result: dict) -> Path:
    """``bench/results/<kind>-<UTC time>.json``: every run kept, none committed."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"{kind}-{stamp}.json"
    out.write_text(json.dumps(result, indent=2))
    return out


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
