#!/usr/bin/env bash
# Set up and run every check: ruff, mypy, the import contract and the whole test suite
# (graph tests against a real Neo4j started here).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CASEGRAPH_NO_PROGRESS=1
export CASEGRAPH_SHARED_DATA=${CASEGRAPH_SHARED_DATA:-$(cd .. && pwd)/shared/data}

# --- Neo4j for the graph tests (deploy/neo4j; owner: graph layer) ---------------------------
# A throwaway server: free port, fresh data dir, generated password (never printed), stopped
# on exit. The graph tests find it through CASEGRAPH_TEST_NEO4J_*; CASEGRAPH_NEO4J_URI stays
# unset so every other test keeps the embedded default. CASEGRAPH_SKIP_NEO4J=1 runs without
# it (the neo4j tests then skip, or fail when CI=true).
if [ -z "${CASEGRAPH_TEST_NEO4J_URI:-}" ] && [ "${CASEGRAPH_SKIP_NEO4J:-0}" != "1" ]; then
  CASEGRAPH_NEO4J_PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  CASEGRAPH_NEO4J_RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/casegraph-neo4j.XXXXXX")
  CASEGRAPH_TEST_NEO4J_PASSWORD=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(24))')
  export CASEGRAPH_NEO4J_PORT CASEGRAPH_NEO4J_RUN_DIR CASEGRAPH_TEST_NEO4J_PASSWORD
  export CASEGRAPH_TEST_NEO4J_URI="bolt://127.0.0.1:$CASEGRAPH_NEO4J_PORT"
  export CASEGRAPH_NEO4J_TEST_SERVER=1  # the graph tests may wipe this database
  trap 'bash deploy/neo4j/stop.sh || true; rm -rf "$CASEGRAPH_NEO4J_RUN_DIR"' EXIT
  bash deploy/neo4j/build.sh
  # starts while ruff and mypy run; waited for below
  CASEGRAPH_NEO4J_PASSWORD="$CASEGRAPH_TEST_NEO4J_PASSWORD" bash deploy/neo4j/start.sh
  NEO4J_STARTED=1
fi
# --- end Neo4j --------------------------------------------------------------------------
.venv/bin/ruff check casegraph tests benchmarks
.venv/bin/mypy
if [ "${NEO4J_STARTED:-0}" = "1" ]; then bash deploy/neo4j/wait-ready.sh; fi
set +e
.venv/bin/python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "no tests collected"; exit 1; fi
exit "$rc"
