#!/usr/bin/env bash
# Build target/casegraph-neo4j.jar (+ target/lib) from Maven Central; skipped when up to date.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$NEO4J_DEPLOY_DIR"
if [ -f "$NEO4J_JAR" ] && [ -z "$(find pom.xml src -newer "$NEO4J_JAR" -print -quit)" ]; then
  echo "neo4j: $NEO4J_JAR is up to date"
  exit 0
fi
if ! command -v mvn >/dev/null || ! command -v java >/dev/null; then
  # a fresh Debian machine without the JDK/Maven: install them from Debian's packages
  if command -v apt-get >/dev/null && [ "$(id -u)" = "0" ]; then
    echo "neo4j: installing OpenJDK 17 and Maven (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless maven >/dev/null
  else
    echo "neo4j: Java 17+ and Maven (mvn) are needed; install them (e.g. apt-get install openjdk-17-jdk-headless maven)" >&2
    exit 1
  fi
fi
echo "neo4j: building with Maven (the first build downloads Neo4j from Maven Central)"
mvn -B -q package
echo "neo4j: built $NEO4J_JAR"
