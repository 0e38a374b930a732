#!/usr/bin/env bash
# Install everything (Python venv at .venv/, npm packages from the lock file) and run the
# whole test suite. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
