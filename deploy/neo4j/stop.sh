#!/usr/bin/env bash
# Stop the server started by start.sh: SIGTERM (clean shutdown hook), then SIGKILL after 60 s.
set -euo pipefail
source "$(dirname "$0")/env.sh"
pid=$(neo4j_pid)
if [ -z "$pid" ]; then
  echo "neo4j: not running"
  rm -f "$NEO4J_PID_FILE"
  exit 0
fi
kill -TERM "$pid"
for _ in $(seq 60); do
  kill -0 "$pid" 2>/dev/null || { rm -f "$NEO4J_PID_FILE"; echo "neo4j: stopped"; exit 0; }
  sleep 1
done
echo "neo4j: pid $pid ignored SIGTERM for 60 s; killing it" >&2
kill -KILL "$pid" 2>/dev/null || true
rm -f "$NEO4J_PID_FILE"
