#!/usr/bin/env bash
# Make .venv-triton/: the virtual environment that runs tools/triton_server.py (a real
# Triton Inference Server, bundled in the nvidia-pytriton wheel). Idempotent: it does
# nothing when the environment already holds the pins below.
#
# It is made from Debian's python3.11, not whatever `python3` is first on PATH: pytriton's
# model stub loads the system's libpython3.11.so.1.0 (Debian's libpython3.11) with the
# venv's standard library, and another build's library (pyenv's 3.11.7) fails inside it
# ("'_thread.RLock' object has no attribute '_recursion_count'").
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-triton
PYTHON=/usr/bin/python3.11
PYTRITON="nvidia-pytriton==0.7.0"
# nvidia-pytriton 0.7.0 requires numpy<2, so requirements.txt's numpy cannot be used here;
# the embedded detector runs on both.
NUMPY="numpy==1.26.4"
PILLOW="$(grep -Eio '^pillow==[^ ;#]+' requirements.txt)"
PINS="$PYTRITON $NUMPY $PILLOW"

if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.pins" 2>/dev/null)" = "$PINS" ]; then
  exit 0
fi

debian_python_ready() {
  [ -x "$PYTHON" ] && "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
    && ldconfig -p | grep -q 'libpython3\.11\.so\.1\.0'
}
if ! debian_python_ready; then
  packages=(python3.11 python3.11-venv libpython3.11)
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${packages[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq "${packages[@]}" >/dev/null; }
  debian_python_ready || { echo "error: Debian's python3.11 with venv is missing" >&2; exit 1; }
fi

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
# shellcheck disable=SC2086  # PINS is a list of requirement specifiers
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $PINS
echo "$PINS" > "$VENV/.pins"
