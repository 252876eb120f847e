#!/usr/bin/env bash
# Wait until the server prints its readiness line (default timeout 180 s: $1 or
# CASEGRAPH_NEO4J_WAIT_S). Fails with the log's tail when the process dies or time runs out.
set -euo pipefail
source "$(dirname "$0")/env.sh"
timeout_s=${1:-${CASEGRAPH_NEO4J_WAIT_S:-180}}
for ((waited = 0; waited < timeout_s; waited++)); do
  if grep -q "$NEO4J_READY_PATTERN" "$NEO4J_LOG_FILE" 2>/dev/null; then
    echo "neo4j: ready on bolt://127.0.0.1:$NEO4J_PORT after ${waited}s"
    exit 0
  fi
  if [ -z "$(neo4j_pid)" ]; then
    echo "neo4j: the server is not running; last log lines:" >&2
    tail -n 20 "$NEO4J_LOG_FILE" >&2 2>/dev/null || true
    exit 1
  fi
  sleep 1
done
echo "neo4j: not ready after ${timeout_s}s; last log lines:" >&2
tail -n 20 "$NEO4J_LOG_FILE" >&2 || true
exit 1
