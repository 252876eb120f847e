"""The Neo4j GraphStore: Cypher over Bolt with the official driver.

Every write is one batched ``UNWIND`` statement (edges: two, see :data:`CREATE_SIMILAR`)
inside a managed transaction (``session.execute_write``), which the driver retries on
transient errors and lost connections; MERGE, or CREATE guarded in the same transaction,
keeps it idempotent. Only parameters carry values: no query text is
ever built from user data (labels and property names are fixed here).

Every URI scheme the driver knows works unchanged against a cluster: with ``neo4j://`` /
``neo4j+s://`` the driver routes, so managed read transactions (``session.execute_read``)
go to followers or read replicas and writes to the leader, and a write that meets a leader
change is retried on the new leader. Every session of one store shares the driver's
bookmark manager, so a read sees this process's earlier writes even on a lagging follower
(docs/neo4j.md, *A cluster*).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from casegraph.config import Neo4jSettings
from casegraph.errors import CasegraphError, InputError
from casegraph.graph.base import GraphStore, prune_with_children, round_survival, round_weight
from casegraph.graph.driver_log import quiet_driver_log
from casegraph.graph.records import (
    BufferEntry,
    GraphDump,
    GraphStats,
    ModelVersionRecord,
    Neighbour,
    PatientRecord,
    PredictionRecord,
    SimilarEdge,
    SlideRecord,
)

if TYPE_CHECKING:
    from neo4j import Driver, ManagedTransaction, Session

SCHEMA = [
    "CREATE CONSTRAINT cohort_name IF NOT EXISTS FOR (c:Cohort) REQUIRE c.name IS UNIQUE",
    "CREATE CONSTRAINT patient_id IF NOT EXISTS FOR (p:Patient) REQUIRE p.id IS UNIQUE",
    "CREATE CONSTRAINT slide_id IF NOT EXISTS FOR (s:Slide) REQUIRE s.id IS UNIQUE",
    "CREATE CONSTRAINT model_version_id IF NOT EXISTS FOR (v:ModelVersion) REQUIRE v.id IS UNIQUE",
    "CREATE CONSTRAINT query_case_id IF NOT EXISTS FOR (q:QueryCase) REQUIRE q.id IS UNIQUE",
    # No index on SIMILAR_TO.model_version, on purpose: planned while the graph is empty, the
    # edge MERGE then seeks that index (all edges of the version) for every row instead of
    # expanding from its two bound patients: quadratic (see docs/benchmarks.md).
    "DROP INDEX similar_version IF EXISTS",
    "CREATE INDEX patient_cohort IF NOT EXISTS FOR (p:Patient) ON (p.cohort)",
]

WRITE_COHORTS = "UNWIND $rows AS name MERGE (:Cohort {name: name})"
WRITE_PATIENTS = """
UNWIND $rows AS row
MERGE (c:Cohort {name: row.cohort})
MERGE (p:Patient {id: row.patient_id})
SET p.cohort = row.cohort, p.time = row.time, p.event = row.event,
    p.modalities = row.modalities, p.splits = row.splits
MERGE (p)-[:IN_COHORT]->(c)
WITH p, c
CALL (p, c) {
  OPTIONAL MATCH (p)-[old:IN_COHORT]->(other:Cohort) WHERE other <> c
  DELETE old
}
"""
WRITE_SLIDES = """
UNWIND $rows AS row
MATCH (p:Patient {id: row.patient_id})
MERGE (s:Slide {id: row.slide_id})
SET s.n_patches = row.n_patches, s.encoder = row.encoder
MERGE (p)-[:HAS_SLIDE]->(s)
WITH p, s
CALL (p, s) {
  OPTIONAL MATCH (other:Patient)-[old:HAS_SLIDE]->(s) WHERE other <> p
  DELETE old
}
"""
WRITE_VERSION = """
MERGE (v:ModelVersion {id: $row.version_id})
SET v.name = $row.model, v.cohort = $row.cohort, v.created = $row.created,
    v.params = $row.params, v.metrics = $row.metrics, v.parent_id = $row.parent_id,
    v.batches = $row.batches
WITH v
CALL (v) {
  OPTIONAL MATCH (parent:ModelVersion {id: v.parent_id})
  WITH v, parent WHERE parent IS NOT NULL AND parent <> v
  MERGE (v)-[:DERIVED_FROM]->(parent)
}
CALL (v) {
  OPTIONAL MATCH (child:ModelVersion {parent_id: v.id})
  WITH v, child WHERE child IS NOT NULL AND child <> v
  MERGE (child)-[:DERIVED_FROM]->(v)
}
"""
# SIMILAR_TO edges travel grouped by source patient as parallel lists of primitives
# ($s[i] -> $n[i][j], $r[i][j], $w[i][j]): one index seek per source and no per-row maps.
# Sources holding no edge of the version yet (SIMILAR_SEEN, same transaction) get CREATE, the
# fastest write; the others MERGE, so a retried or re-run batch creates nothing.
SIMILAR_SEEN = """
UNWIND $s AS id
MATCH (a:Patient {id: id})
WHERE EXISTS { (a)-[:SIMILAR_TO {model_version: $version}]->() }
RETURN id
"""
CREATE_SIMILAR = """
UNWIND range(0, size($s) - 1) AS i
MATCH (a:Patient {id: $s[i]})
UNWIND range(0, size($n[i]) - 1) AS j
MATCH (b:Patient {id: $n[i][j]})
CREATE (a)-[:SIMILAR_TO {model_version: $version, rank: $r[i][j], weight: $w[i][j]}]->(b)
"""
MERGE_SIMILAR = """
UNWIND range(0, size($s) - 1) AS i
MATCH (a:Patient {id: $s[i]})
UNWIND range(0, size($n[i]) - 1) AS j
MATCH (b:Patient {id: $n[i][j]})
MERGE (a)-[r:SIMILAR_TO {model_version: $version}]->(b)
SET r.rank = $r[i][j], r.weight = $w[i][j]
"""
WRITE_SIMILAR_ONE = """
MATCH (a:Patient {id: $patient_id})
MATCH (b:Patient {id: $neighbour_id})
MERGE (a)-[r:SIMILAR_TO {model_version: $version}]->(b)
SET r.weight = $weight, r.rank = $rank
"""
WRITE_BUFFER = """
MATCH (v:ModelVersion {id: $version})
UNWIND $rows AS row
MATCH (p:Patient {id: row.patient_id})
MERGE (p)-[b:IN_BUFFER]->(v)
SET b.position = row.position
"""
WRITE_PREDICTIONS = """
MATCH (v:ModelVersion {id: $version})
UNWIND $rows AS row
MATCH (p:Patient {id: row.patient_id})
MERGE (p)-[r:PREDICTED]->(v)
SET r.risk = row.risk, r.survival = row.survival, r.inferred = row.inferred
"""
MARK_BATCHES = """
MERGE (s:SyncState {id: 'ingest'})
SET s.batches = [b IN coalesce(s.batches, []) WHERE NOT b IN $batches] + $batches
"""
# The nearest member of the lineage (the version itself, its parent, ...) holding edges of
# this patient: a derived version holds only its new patients' edges (docs/cypher.md).
NEIGHBOURS = """
MATCH path = (:ModelVersion {id: $version})-[:DERIVED_FROM*0..]->(m:ModelVersion)
CALL (m) {
  MATCH (:Patient {id: $patient_id})-[r:SIMILAR_TO {model_version: m.id}]->(n:Patient)
  RETURN r, n
}
WITH length(path) AS depth, r, n
WITH collect({depth: depth, r: r, n: n}) AS rows, min(depth) AS nearest
UNWIND [x IN rows WHERE x.depth = nearest] AS x
WITH x.r AS r, x.n AS n
RETURN n.id AS id, r.rank AS rank, r.weight AS weight, n.cohort AS cohort, n.time AS time,
       n.event AS event, n.modalities AS modalities
ORDER BY r.rank LIMIT $k
"""
PERSIST_QUERY_CASE = """
MERGE (q:QueryCase {id: $case_id})
SET q.model_version = $version, q.created = $created, q.properties = $properties
WITH q
OPTIONAL MATCH (q)-[old:SIMILAR_TO]->()
DELETE old
WITH DISTINCT q
UNWIND $rows AS row
MATCH (n:Patient {id: row.neighbour_id})
CREATE (q)-[:SIMILAR_TO {model_version: $version, rank: row.rank, weight: row.weight}]->(n)
"""


def redact_uri(uri: str) -> str:
    """``uri`` without its userinfo, for anything shown: ``bolt://u:pw@h:1`` -> ``bolt://***@h:1``.

    Everything up to the last ``@`` goes, so a password holding ``/`` or ``@`` (unencoded)
    cannot leak either."""
    if "@" not in uri:
        return uri
    scheme, sep, _ = uri.partition("://")
    host = uri.rpartition("@")[2]
    return f"{scheme}://***@{host}" if sep and "@" not in scheme else f"***@{host}"


PRUNE_ATTEMPTS = 4  # an auto-commit statement the driver does not retry itself
URI_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")
_URI_FIX = ("use bolt://HOST:PORT (one server) or neo4j://HOST:PORT (routing, a cluster; "
            "neo4j+s:// with TLS), e.g. bolt://127.0.0.1:7687")


def _check_uri(uri: str) -> None:
    if "@" in uri:
        raise InputError(
            f"CASEGRAPH_NEO4J_URI {redact_uri(uri)} carries a user name or password",
            fix="remove 'user:password@' from the URI; set CASEGRAPH_NEO4J_USER and "
                "CASEGRAPH_NEO4J_PASSWORD or CASEGRAPH_NEO4J_PASSWORD_FILE")
    scheme, sep, _ = uri.partition("://")
    if not sep or scheme.lower() not in URI_SCHEMES:
        # the driver would also take http:// (its preview Query API), with a warning
        raise InputError(f"CASEGRAPH_NEO4J_URI {uri!r} is not a Bolt URI "
                         f"(scheme one of {', '.join(URI_SCHEMES)})", fix=_URI_FIX)


def _summary_created(tx: ManagedTransaction, query: str, **params: Any) -> int:
    counters = tx.run(query, **params).consume().counters
    return int(counters.nodes_created + counters.relationships_created)


def _run_schema(tx: ManagedTransaction, statement: str) -> None:
    tx.run(statement).consume()


def edges_by_source(edges: Sequence[SimilarEdge]) -> dict[str, dict[str, tuple[int, float]]]:
    """source -> neighbour -> (rank, weight), in input order; a repeated pair keeps its last
    row, as a MERGE followed by SET would."""
    groups: dict[str, dict[str, tuple[int, float]]] = {}
    for e in edges:
        groups.setdefault(e.patient_id, {})[e.neighbour_id] = (int(e.rank), float(e.weight))
    return groups


def similar_lists(groups: dict[str, dict[str, tuple[int, float]]],
                   sources: list[str]) -> dict[str, list[Any]]:
    """The $s/$n/$r/$w parameters of :data:`CREATE_SIMILAR` for ``sources``."""
    return {"s": sources,
            "n": [list(groups[a]) for a in sources],
            "r": [[rank for rank, _ in groups[a].values()] for a in sources],
            "w": [[weight for _, weight in groups[a].values()] for a in sources]}


def _write_one_edge(tx: ManagedTransaction, params: dict[str, Any]) -> int:
    return _summary_created(tx, WRITE_SIMILAR_ONE, **params)


class Neo4jGraphStore(GraphStore):
    """A case graph in a Neo4j database reached over Bolt."""

    backend = "neo4j"

    def __init__(self, driver: Driver, uri: str, database: str = "neo4j") -> None:
        self._driver = driver
        self.uri = uri
        self.database = database

    @classmethod
    def connect(cls, settings: Neo4jSettings, database: str = "neo4j") -> Neo4jGraphStore:
        """Open a driver and check the server answers; errors never include the password."""
        from neo4j import GraphDatabase
        from neo4j.exceptions import AuthError, ConfigurationError, Neo4jError, ServiceUnavailable

        _check_uri(settings.uri)
        quiet_driver_log()
        auth = (settings.user, settings.password) if settings.password else None
        try:  # server notifications (e.g. "null value eliminated") would be logged as warnings
            driver = GraphDatabase.driver(settings.uri, auth=auth,
                                          notifications_min_severity="OFF")
        except (ConfigurationError, ValueError) as exc:  # their messages repeat the URI
            raise InputError(
                f"CASEGRAPH_NEO4J_URI {settings.uri!r} is not a Neo4j URI "
                f"({exc.__class__.__name__})", fix=_URI_FIX) from None
        try:
            driver.verify_connectivity()
        except AuthError:
            driver.close()
            raise CasegraphError(
                f"Neo4j at {settings.uri} refused user {settings.user!r}: wrong or missing "
                "password (set CASEGRAPH_NEO4J_PASSWORD or CASEGRAPH_NEO4J_PASSWORD_FILE)"
            ) from None
        except (ServiceUnavailable, Neo4jError, OSError) as exc:
            driver.close()
            raise CasegraphError(
                f"cannot reach Neo4j at {settings.uri} ({exc.__class__.__name__}); start it "
                "with `casegraph neo4j start` or unset CASEGRAPH_NEO4J_URI for the embedded graph"
            ) from None
        return cls(driver, settings.uri, database)

    def __repr__(self) -> str:
        return f"Neo4jGraphStore(uri={self.uri!r}, database={self.database!r})"

    def close(self) -> None:
        self._driver.close()

    # ------------------------------------------------------------------ plumbing
    def _session(self) -> Session:
        """A session in the causal chain of every other session of this driver: the shared
        bookmark manager makes a routed read wait for this process's earlier writes."""
        return self._driver.session(database=self.database,
                                    bookmark_manager=self._driver.execute_query_bookmark_manager)

    def _write(self, work: Callable[[ManagedTransaction], int]) -> int:
        with self._session() as session:
            return session.execute_write(work)

    def _read(self, query: str, **params: Any) -> list[dict[str, Any]]:
        def work(tx: ManagedTransaction) -> list[dict[str, Any]]:
            return [record.data() for record in tx.run(query, **params)]

        with self._session() as session:
            return session.execute_read(work)

    # ------------------------------------------------------------------ writes
    def ensure_schema(self) -> None:
        """Each statement in its own managed write transaction (a schema change may not share
        one with data writes): routed to the leader, retried on a leader change."""
        with self._session() as session:
            for statement in SCHEMA:
                session.execute_write(_run_schema, statement)

    def write_cohorts(self, names: Sequence[str]) -> int:
        rows = list(names)
        return self._write(lambda tx: _summary_created(tx, WRITE_COHORTS, rows=rows))

    def write_patients(self, patients: Sequence[PatientRecord]) -> int:
        rows = [
            {"patient_id": p.patient_id, "cohort": p.cohort, "time": float(p.time),
             "event": bool(p.event), "modalities": list(p.modalities), "splits": list(p.splits)}
            for p in patients
        ]
        return self._write(lambda tx: _summary_created(tx, WRITE_PATIENTS, rows=rows))

    def write_slides(self, slides: Sequence[SlideRecord]) -> int:
        rows = [asdict(s) for s in slides]
        return self._write(lambda tx: _summary_created(tx, WRITE_SLIDES, rows=rows))

    def write_model_version(self, version: ModelVersionRecord) -> int:
        row = {**asdict(version), "batches": list(version.batches)}
        return self._write(lambda tx: _summary_created(tx, WRITE_VERSION, row=row))

    def write_similar(self, version_id: str, edges: Sequence[SimilarEdge]) -> int:
        """One transaction: CREATE for sources without an edge of the version, MERGE for the
        rest (see :data:`CREATE_SIMILAR`)."""
        groups = edges_by_source(edges)

        def work(tx: ManagedTransaction) -> int:
            seen = {str(r["id"]) for r in tx.run(SIMILAR_SEEN, s=list(groups), version=version_id)}
            created = 0
            for query, sources in ((CREATE_SIMILAR, [a for a in groups if a not in seen]),
                                   (MERGE_SIMILAR, [a for a in groups if a in seen])):
                if sources:
                    created += _summary_created(tx, query, version=version_id,
                                                **similar_lists(groups, sources))
            return created

        return self._write(work) if groups else 0

    def write_similar_one_by_one(self, version_id: str, edges: Sequence[SimilarEdge]) -> int:
        """One transaction per edge: the naive path, kept for the benchmark's comparison."""
        created = 0
        with self._session() as session:
            for e in edges:
                params: dict[str, Any] = {
                    "patient_id": e.patient_id, "neighbour_id": e.neighbour_id,
                    "rank": int(e.rank), "weight": float(e.weight), "version": version_id}
                created += session.execute_write(_write_one_edge, params)
        return created

    def write_buffer(self, version_id: str, entries: Sequence[BufferEntry]) -> int:
        rows = [asdict(e) for e in entries]
        return self._write(
            lambda tx: _summary_created(tx, WRITE_BUFFER, rows=rows, version=version_id))

    def write_predictions(self, version_id: str, predictions: Sequence[PredictionRecord]) -> int:
        rows = [{"patient_id": p.patient_id, "risk": float(p.risk),
                 "survival": None if p.survival is None else [float(x) for x in p.survival],
                 "inferred": bool(p.inferred)} for p in predictions]
        return self._write(
            lambda tx: _summary_created(tx, WRITE_PREDICTIONS, rows=rows, version=version_id))

    def mark_batches_synced(self, batch_ids: Sequence[str]) -> None:
        batches = list(batch_ids)
        if batches:
            self._write(lambda tx: _summary_created(tx, MARK_BATCHES, batches=batches))

    def synced_batches(self) -> set[str]:
        rows = self._read("MATCH (s:SyncState {id: 'ingest'}) RETURN s.batches AS batches")
        return {str(b) for r in rows for b in (r["batches"] or ())}

    def mark_synced(self, version_id: str, n_edges: int) -> None:
        query = "MATCH (v:ModelVersion {id: $version}) SET v.synced_edges = $n"
        self._write(lambda tx: _summary_created(tx, query, version=version_id, n=int(n_edges)))

    def synced_versions(self) -> dict[str, int]:
        rows = self._read("MATCH (v:ModelVersion) WHERE v.synced_edges IS NOT NULL "
                          "RETURN v.id AS id, v.synced_edges AS n")
        return {r["id"]: int(r["n"]) for r in rows}

    def prune_version(self, version_id: str, batch_size: int = 10_000,
                      with_children: bool = False) -> int:
        """One scan of the edges, committed every ``batch_size`` deletions (``CALL { } IN
        TRANSACTIONS`` runs in an auto-commit transaction; the delete is idempotent, so a
        failed run is simply retried). Children go first, so a killed cascade leaves no
        child without its parent."""
        return prune_with_children(self, version_id, with_children,
                                   lambda v: self._prune_one(v, batch_size))

    def child_versions(self, version_id: str) -> list[str]:
        rows = self._read("MATCH (c:ModelVersion)-[:DERIVED_FROM]->(:ModelVersion {id: $version}) "
                          "RETURN c.id AS id ORDER BY id", version=version_id)
        return [str(r["id"]) for r in rows]

    def _prune_one(self, version_id: str, batch_size: int) -> int:
        from neo4j.exceptions import ServiceUnavailable, SessionExpired, TransientError

        count_query = ("MATCH (:Patient)-[r:SIMILAR_TO {model_version: $version}]->(:Patient) "
                       "RETURN count(r) AS n")
        delete_queries = (
            "MATCH (:Patient)-[r:SIMILAR_TO {model_version: $version}]->(:Patient) "
            "CALL (r) { DELETE r } IN TRANSACTIONS OF $limit ROWS",
            "MATCH (:Patient)-[r:PREDICTED]->(:ModelVersion {id: $version}) "
            "CALL (r) { DELETE r } IN TRANSACTIONS OF $limit ROWS")
        removed = self._count(count_query, version=version_id)
        for delete_query in delete_queries:
            for attempt in range(PRUNE_ATTEMPTS):
                try:
                    with self._session() as session:
                        session.run(delete_query, version=version_id, limit=batch_size).consume()
                    break
                except (ServiceUnavailable, SessionExpired, TransientError):
                    # NotALeader is a TransientError: give a cluster time to elect a leader
                    if attempt == PRUNE_ATTEMPTS - 1:
                        raise
                    time.sleep(2.0 ** attempt)
        self._write(lambda tx: _summary_created(
            tx, "MATCH (q:QueryCase {model_version: $version}) DETACH DELETE q",
            version=version_id))
        self._write(lambda tx: _summary_created(
            tx, "MATCH (v:ModelVersion {id: $version}) DETACH DELETE v", version=version_id))
        return removed

    def persist_query_case(
        self,
        case_id: str,
        version_id: str,
        neighbours: Sequence[SimilarEdge],
        properties: dict[str, Any] | None = None,
    ) -> None:
        rows = [{"neighbour_id": e.neighbour_id, "rank": int(e.rank), "weight": float(e.weight)}
                for e in neighbours]
        params = {"case_id": case_id, "version": version_id, "rows": rows,
                  "created": datetime.now(UTC).isoformat(),
                  "properties": json.dumps(properties or {}, sort_keys=True)}
        self._write(lambda tx: _summary_created(tx, PERSIST_QUERY_CASE, **params))

    # ------------------------------------------------------------------ reads
    def neighbours(self, patient_id: str, version_id: str, k: int = 10) -> list[Neighbour]:
        rows = self._read(NEIGHBOURS, patient_id=patient_id, version=version_id, k=int(k))
        return [Neighbour(r["id"], int(r["rank"]), float(r["weight"]), r["cohort"],
                          float(r["time"]), bool(r["event"]), tuple(r["modalities"] or ()))
                for r in rows]

    def stats(self) -> GraphStats:
        labels = ["Cohort", "Patient", "Slide", "ModelVersion", "QueryCase"]
        types = ["IN_COHORT", "HAS_SLIDE", "SIMILAR_TO", "IN_BUFFER", "PREDICTED", "DERIVED_FROM"]
        nodes = {label: self._count(f"MATCH (n:{label}) RETURN count(n) AS n") for label in labels}
        relationships = {t: self._count(f"MATCH ()-[r:{t}]->() RETURN count(r) AS n")
                         for t in types}
        rows = self._read(
            "MATCH (v:ModelVersion) RETURN v.id AS id, COUNT { MATCH (:Patient)-[r:SIMILAR_TO "
            "{model_version: v.id}]->(:Patient) } AS n ORDER BY id")
        return GraphStats(nodes=nodes, relationships=relationships,
                          versions={r["id"]: int(r["n"]) for r in rows})

    def _count(self, query: str, **params: Any) -> int:
        rows = self._read(query, **params)
        return int(rows[0]["n"]) if rows else 0

    def dump(self) -> GraphDump:
        patients = self._read(
            "MATCH (p:Patient) RETURN p.id AS id, p.cohort AS cohort, p.time AS time, "
            "p.event AS event, p.modalities AS modalities, p.splits AS splits")
        slides = self._read(
            "MATCH (p:Patient)-[:HAS_SLIDE]->(s:Slide) RETURN s.id AS id, p.id AS patient, "
            "s.n_patches AS n_patches, s.encoder AS encoder")
        similar = self._read(
            "MATCH (a:Patient)-[r:SIMILAR_TO]->(b:Patient) RETURN r.model_version AS v, "
            "a.id AS a, b.id AS b, r.rank AS rank, r.weight AS w")
        buffer = self._read("MATCH (p:Patient)-[b:IN_BUFFER]->(v:ModelVersion) "
                            "RETURN v.id AS v, p.id AS p, b.position AS position")
        cases = self._read("MATCH (q:QueryCase)-[r:SIMILAR_TO]->(b:Patient) RETURN q.id AS q, "
                           "r.model_version AS v, b.id AS b, r.rank AS rank, r.weight AS w")
        predictions = self._read(
            "MATCH (p:Patient)-[r:PREDICTED]->(v:ModelVersion) RETURN v.id AS v, p.id AS p, "
            "r.risk AS risk, r.survival AS survival, r.inferred AS inferred")
        derived = self._read("MATCH (c:ModelVersion)-[:DERIVED_FROM]->(p:ModelVersion) "
                             "RETURN c.id AS c, p.id AS p")
        return GraphDump(
            cohorts=frozenset(r["name"] for r in self._read("MATCH (c:Cohort) "
                                                             "RETURN c.name AS name")),
            patients=frozenset(
                PatientRecord(r["id"], r["cohort"], float(r["time"]), bool(r["event"]),
                              tuple(sorted(r["modalities"] or ())), tuple(sorted(r["splits"] or ())))
                for r in patients),
            slides=frozenset(SlideRecord(r["id"], r["patient"], r["n_patches"], r["encoder"])
                             for r in slides),
            versions=frozenset(r["id"] for r in self._read("MATCH (v:ModelVersion) "
                                                           "RETURN v.id AS id")),
            similar=frozenset((r["v"], r["a"], r["b"], int(r["rank"]), round_weight(r["w"]))
                              for r in similar),
            buffer=frozenset((r["v"], r["p"], int(r["position"])) for r in buffer),
            query_cases=frozenset((r["q"], r["v"], r["b"], int(r["rank"]), round_weight(r["w"]))
                                  for r in cases),
            predictions=frozenset((r["v"], r["p"], round_weight(r["risk"]),
                                   round_survival(r["survival"]), bool(r["inferred"]))
                                  for r in predictions),
            derived_from=frozenset((r["c"], r["p"]) for r in derived),
            synced_batches=frozenset(self.synced_batches()),
        )

    def clear(self, batch_size: int = 20_000) -> None:
        """Relationships first, then nodes, in bounded transactions (a hub node's DETACH
        DELETE would otherwise pull all its relationships into one transaction)."""
        for query in ("MATCH ()-[r]->() WITH r LIMIT $limit DELETE r RETURN count(*) AS n",
                      "MATCH (n) WITH n LIMIT $limit DELETE n RETURN count(*) AS n"):

            def one_batch(tx: ManagedTransaction, q: str = query) -> int:
                record = tx.run(q, limit=batch_size).single()
                return int(record["n"]) if record else 0

            while self._write(one_batch):
                pass

    def run_write(self, query: str, **params: Any) -> int:
        """A fixed, parameterised write (used by tests and the benchmark)."""
        return self._write(lambda tx: _summary_created(tx, query, **params))

    @property
    def driver(self) -> Driver:
        return self._driver
