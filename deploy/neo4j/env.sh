# Shared settings for the deploy/neo4j scripts (sourced, not run).
# CASEGRAPH_NEO4J_PORT    Bolt port on 127.0.0.1 (default 7687)
# CASEGRAPH_NEO4J_RUN_DIR pid file, log and (by default) the Neo4j home (default deploy/neo4j/run)
# CASEGRAPH_NEO4J_HOME    Neo4j home; the database lives in HOME/data (default RUN_DIR/home)
# CASEGRAPH_NEO4J_HEAP    JVM heap (default 512m); CASEGRAPH_NEO4J_PAGE_CACHE_MB (default 256)
# CASEGRAPH_NEO4J_NO_AUTH=1 starts without auth (throwaway test servers only)
NEO4J_DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NEO4J_JAR="$NEO4J_DEPLOY_DIR/target/casegraph-neo4j.jar"
NEO4J_PORT=${CASEGRAPH_NEO4J_PORT:-7687}
NEO4J_RUN_DIR=${CASEGRAPH_NEO4J_RUN_DIR:-$NEO4J_DEPLOY_DIR/run}
NEO4J_HOME_DIR=${CASEGRAPH_NEO4J_HOME:-$NEO4J_RUN_DIR/home}
NEO4J_PID_FILE="$NEO4J_RUN_DIR/neo4j.pid"
NEO4J_LOG_FILE="$NEO4J_RUN_DIR/neo4j.log"
NEO4J_READY_PATTERN="casegraph-neo4j ready "

neo4j_pid() {  # prints the pid of the running server, or nothing
  if [ -f "$NEO4J_PID_FILE" ]; then
    local pid
    pid=$(cat "$NEO4J_PID_FILE")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
  fi
}
