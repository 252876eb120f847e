#!/usr/bin/env bash
# Create .venv and install casegraph with its dev tools. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# playwright drives the system Chromium below; it never downloads a browser of its own
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 .venv/bin/python -m pip install -q -e '.[dev]'

# Chromium from Debian's packages for the web app's browser test (tests/retrieval/
# test_webapp.py, which skips, saying why, where it is missing)
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
      >/tmp/casegraph-chromium-install.log 2>&1 \
      || echo "setup: could not install chromium (see /tmp/casegraph-chromium-install.log); the browser test will skip"
  else
    echo "setup: chromium is missing and cannot be installed here (needs root and apt-get); the browser test will skip"
  fi
fi
