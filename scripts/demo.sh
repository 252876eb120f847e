#!/usr/bin/env bash
# Set up and run the main job: the demo pipeline on the embedded default store.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/casegraph demo "$@"
