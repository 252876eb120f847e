#!/usr/bin/env bash
# Print whether the server is running and ready; exit 0 when ready, 1 otherwise.
set -euo pipefail
source "$(dirname "$0")/env.sh"
pid=$(neo4j_pid)
if [ -z "$pid" ]; then echo "neo4j: not running"; exit 1; fi
if grep -q "$NEO4J_READY_PATTERN" "$NEO4J_LOG_FILE" 2>/dev/null; then
  echo "neo4j: running (pid $pid), ready on bolt://127.0.0.1:$NEO4J_PORT"
  exit 0
fi
echo "neo4j: running (pid $pid), starting up (log $NEO4J_LOG_FILE)"
exit 1
