#!/usr/bin/env bash
# Set up and run every check: ruff, mypy, the import contract and the whole test suite
# (graph tests against a real Neo4j started here).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CASEGRAPH_NO_PROGRESS=1
export CASEGRAPH_SHARED_DATA=${CASEGRAPH_SHARED_DATA:-$(cd .. && pwd)/shared/data}
.venv/bin/ruff check casegraph tests benchmarks
.venv/bin/mypy
set +e
.venv/bin/python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "no tests collected"; exit 1; fi
exit "$rc"
