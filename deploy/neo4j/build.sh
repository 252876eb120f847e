#!/usr/bin/env bash
# Build target/casegraph-neo4j.jar (+ target/lib) from Maven Central; skipped when up to date.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$NEO4J_DEPLOY_DIR"
if [ -f "$NEO4J_JAR" ] && [ -z "$(find pom.xml src -newer "$NEO4J_JAR" -print -quit)" ]; then
  echo "neo4j: $NEO4J_JAR is up to date"
  exit 0
fi
command -v mvn >/dev/null || { echo "neo4j: Maven (mvn) is not installed" >&2; exit 1; }
echo "neo4j: building with Maven (the first build downloads Neo4j from Maven Central)"
mvn -B -q package
echo "neo4j: built $NEO4J_JAR"
