#!/usr/bin/env bash
# Neo4j's bulk importer (`neo4j-admin database import ...`) from the jars the server is built
# from (target/lib holds neo4j-import-tool and neo4j-command-line): arguments go to
# org.neo4j.cli.AdminTool. NEO4J_HOME names the (stopped) server's home, NEO4J_CONF a
# configuration directory. CASEGRAPH_NEO4J_IMPORT_HEAP: JVM heap (default 1g).
set -euo pipefail
source "$(dirname "$0")/env.sh"
[ -f "$NEO4J_JAR" ] || bash "$NEO4J_DEPLOY_DIR/build.sh" >&2
exec java "-Xmx${CASEGRAPH_NEO4J_IMPORT_HEAP:-1g}" -cp "$NEO4J_DEPLOY_DIR/target/lib/*" \
  org.neo4j.cli.AdminTool "$@"
