#!/usr/bin/env bash
# Start the embedded Neo4j in the background (pid file + log in RUN_DIR). The password comes
# from CASEGRAPH_NEO4J_PASSWORD or CASEGRAPH_NEO4J_PASSWORD_FILE and is never printed.
set -euo pipefail
source "$(dirname "$0")/env.sh"
if [ -n "$(neo4j_pid)" ]; then
  echo "neo4j: already running (pid $(neo4j_pid), log $NEO4J_LOG_FILE)"
  exit 0
fi
[ -f "$NEO4J_JAR" ] || bash "$NEO4J_DEPLOY_DIR/build.sh"
mkdir -p "$NEO4J_RUN_DIR" "$NEO4J_HOME_DIR"
args=(--port "$NEO4J_PORT" --home "$NEO4J_HOME_DIR"
      --page-cache "${CASEGRAPH_NEO4J_PAGE_CACHE_MB:-256}")
if [ "${CASEGRAPH_NEO4J_NO_AUTH:-0}" = "1" ]; then args+=(--no-auth); fi
nohup java "-Xmx${CASEGRAPH_NEO4J_HEAP:-512m}" -XX:+UseSerialGC -jar "$NEO4J_JAR" "${args[@]}" \
  >"$NEO4J_LOG_FILE" 2>&1 </dev/null &
echo $! >"$NEO4J_PID_FILE"
echo "neo4j: started pid $! on bolt://127.0.0.1:$NEO4J_PORT (log $NEO4J_LOG_FILE)"
