#!/usr/bin/env bash
# The demo's third use: the case graph in a throwaway Neo4j (built from Maven Central),
# explored with two cookbook Cypher queries (docs/cypher.md). Without Java and Maven it
# says so in one line and the case graph stays embedded. The server gets a free port, a
# fresh data directory and a generated password (never printed) and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${1:-casegraph-demo}
CG=.venv/bin/casegraph
if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  echo "cypher: Java 17+ and Maven are not installed, so the case graph stays embedded in the store (casegraph graph stats --store $STORE)"
  exit 0
fi
CASEGRAPH_NEO4J_PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
CASEGRAPH_NEO4J_RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/casegraph-demo-neo4j.XXXXXX")
CASEGRAPH_NEO4J_PASSWORD=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(24))')
export CASEGRAPH_NEO4J_PORT CASEGRAPH_NEO4J_RUN_DIR CASEGRAPH_NEO4J_PASSWORD
trap 'bash deploy/neo4j/stop.sh >/dev/null 2>&1 || true; rm -rf "$CASEGRAPH_NEO4J_RUN_DIR"' EXIT
echo "── the case graph in Neo4j, explored with Cypher ──"
bash deploy/neo4j/build.sh >/dev/null
bash deploy/neo4j/start.sh
bash deploy/neo4j/wait-ready.sh
export CASEGRAPH_NEO4J_URI="bolt://127.0.0.1:$CASEGRAPH_NEO4J_PORT"
"$CG" graph sync --store "$STORE" --backend neo4j
DERIVED=$("$CG" versions --store "$STORE" --json | .venv/bin/python -c \
  'import json, sys; v = [r["version_id"] for r in json.load(sys.stdin) if r.get("parent_id")]; print(v[-1] if v else "")')
if [ -z "$DERIVED" ]; then
  echo "cypher: no derived version in $STORE (run the demo first)"
  exit 0
fi
echo "cookbook 'lineage': the derived version, its parent, what each wrote itself"
"$CG" cypher 'MATCH path = (:ModelVersion {id: $version})-[:DERIVED_FROM*0..]->(m:ModelVersion)
RETURN m.id AS version, length(path) AS depth, m.synced_edges AS own_edges,
       COUNT { (:Patient)-[:PREDICTED]->(m) } AS own_predictions ORDER BY depth' \
  --param "version=$DERIVED"
echo "cookbook 'attach-added': patients the derived version attached and how many of their neighbours are new too"
"$CG" cypher 'MATCH (v:ModelVersion {id: $version})-[:DERIVED_FROM]->(parent:ModelVersion)
MATCH (p:Patient)-[pr:PREDICTED]->(v)
OPTIONAL MATCH (p)-[r:SIMILAR_TO {model_version: v.id}]->(n:Patient)
WITH p, pr, n, EXISTS { (n)-[:PREDICTED]->(v) } AS n_new
RETURN p.id AS patient, round(pr.risk, 3) AS risk, pr.inferred AS inferred,
       count(n) AS neighbours, count(CASE WHEN n_new THEN 1 END) AS new_neighbours
ORDER BY patient' --param "version=$DERIVED" --limit 8
