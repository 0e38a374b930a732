#!/usr/bin/env bash
# Install everything (Python venv at .venv/, npm packages from the lock file) and run the
# whole test suite. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# libturbojpeg for the lossless JPEG tile cut (gateway/pipeline/jpegcut.py) comes with the
# turbojpeg wheel in requirements.txt; the system's libturbojpeg0 is preferred when it is
# installed, so it is installed here too and the tests cover both (tests/pipeline/test_jpegcut.py
# hides it from one gateway). The suite passes without it.
if ! ldconfig -p 2>/dev/null | grep -q libturbojpeg.so.0 && command -v apt-get >/dev/null; then
  (apt-get install -y -qq libturbojpeg0 >/dev/null 2>&1 \
    || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq libturbojpeg0 >/dev/null 2>&1)) \
    || echo "note: could not install libturbojpeg0; only the wheel's library is tested" >&2
fi

# Headless Chromium for the demo page's browser test (Debian packages).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
# A real Triton Inference Server for the Open Inference Protocol tests, in its own venv
# (Debian's python3.11; tools/triton_server.py).
bash scripts/triton_venv.sh
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
