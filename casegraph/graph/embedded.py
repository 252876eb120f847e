"""The embedded GraphStore: nodes and edges in ``graph_*`` tables of the DuckDB store.

The default for machines without a Neo4j. Same semantics as the Neo4j backend (the contract
suite in tests/graph runs against both); every write is one DuckDB transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from casegraph.graph.base import GraphStore, prune_with_children, round_survival, round_weight
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
from casegraph.ingest.store import Store

GRAPH_DDL = """
CREATE TABLE IF NOT EXISTS graph_cohorts (name VARCHAR PRIMARY KEY);
CREATE TABLE IF NOT EXISTS graph_patients (
    patient_id VARCHAR PRIMARY KEY, cohort VARCHAR NOT NULL, time DOUBLE NOT NULL,
    event BOOLEAN NOT NULL, modalities VARCHAR[], splits VARCHAR[]);
CREATE TABLE IF NOT EXISTS graph_slides (
    slide_id VARCHAR PRIMARY KEY, patient_id VARCHAR NOT NULL, n_patches INTEGER,
    encoder VARCHAR);
CREATE TABLE IF NOT EXISTS graph_versions (
    version_id VARCHAR PRIMARY KEY, model VARCHAR NOT NULL, cohort VARCHAR,
    created VARCHAR, params VARCHAR, metrics VARCHAR, synced_edges BIGINT);
CREATE TABLE IF NOT EXISTS graph_similar (
    version_id VARCHAR NOT NULL, patient_id VARCHAR NOT NULL, neighbour_id VARCHAR NOT NULL,
    rank INTEGER NOT NULL, weight DOUBLE NOT NULL,
    PRIMARY KEY (version_id, patient_id, neighbour_id));
CREATE TABLE IF NOT EXISTS graph_buffer (
    version_id VARCHAR NOT NULL, patient_id VARCHAR NOT NULL, position INTEGER NOT NULL,
    PRIMARY KEY (version_id, patient_id));
CREATE TABLE IF NOT EXISTS graph_query_cases (
    case_id VARCHAR PRIMARY KEY, version_id VARCHAR NOT NULL, created VARCHAR,
    properties VARCHAR);
CREATE TABLE IF NOT EXISTS graph_query_edges (
    case_id VARCHAR NOT NULL, neighbour_id VARCHAR NOT NULL, version_id VARCHAR NOT NULL,
    rank INTEGER NOT NULL, weight DOUBLE NOT NULL, PRIMARY KEY (case_id, neighbour_id));
ALTER TABLE graph_versions ADD COLUMN IF NOT EXISTS parent_id VARCHAR;
ALTER TABLE graph_versions ADD COLUMN IF NOT EXISTS batches VARCHAR[];
CREATE TABLE IF NOT EXISTS graph_predictions (
    version_id VARCHAR NOT NULL, patient_id VARCHAR NOT NULL, risk DOUBLE NOT NULL,
    survival DOUBLE[], inferred BOOLEAN NOT NULL, PRIMARY KEY (version_id, patient_id));
CREATE TABLE IF NOT EXISTS graph_synced_batches (batch_id VARCHAR PRIMARY KEY);
"""
# DERIVED_FROM is graph_versions.parent_id where the parent row exists (as in Neo4j, where
# the link needs both nodes).
_DERIVED_FROM = ("SELECT c.version_id, c.parent_id FROM graph_versions c "
                 "JOIN graph_versions p ON p.version_id = c.parent_id")
# The version and its ancestors present in the graph, with their distance (0 = itself);
# the depth bound stops a (corrupt) cycle.
_LINEAGE = """
WITH RECURSIVE lineage(version_id, depth) AS (
    SELECT version_id, 0 FROM graph_versions WHERE version_id = ?
    UNION ALL
    SELECT p.version_id, l.depth + 1 FROM lineage l
    JOIN graph_versions c ON c.version_id = l.version_id
    JOIN graph_versions p ON p.version_id = c.parent_id
    WHERE l.depth < 1000)
"""
_PATIENT_IDS = "(SELECT patient_id FROM graph_patients)"
_VERSION_IDS = "(SELECT version_id FROM graph_versions)"
TABLES = ["graph_query_edges", "graph_query_cases", "graph_buffer", "graph_similar",
          "graph_predictions", "graph_versions", "graph_slides", "graph_patients",
          "graph_cohorts", "graph_synced_batches"]


class EmbeddedGraphStore(GraphStore):
    """Case graph tables inside an open :class:`Store` (which the caller closes)."""

    backend = "embedded"

    def __init__(self, store: Store) -> None:
        self.store = store
        self._schema_ready = False

    def __repr__(self) -> str:
        return f"EmbeddedGraphStore(root={str(self.store.root)!r})"

    # ------------------------------------------------------------------ writes
    def ensure_schema(self) -> None:
        if not self._schema_ready:
            self.store.ensure_schema(GRAPH_DDL)
            self._schema_ready = True

    def _insert_new(
        self, table: str, key: list[str], frame: pd.DataFrame, upsert: bool, where: str = "TRUE"
    ) -> int:
        """Insert rows whose key is absent (count them); with ``upsert``, replace the others.

        ``where`` (our own SQL over alias ``f``) drops rows, e.g. edges to unknown patients.
        """
        self.ensure_schema()
        if frame.empty:
            return 0
        frame = frame.drop_duplicates(subset=key, keep="last")
        cols = ", ".join(frame.columns)
        on = " AND ".join(f"t.{k} = f.{k}" for k in key)
        with self.store.transaction() as con:
            con.register("_graph_rows", frame)
            try:
                row = con.execute(
                    f"SELECT count(*) FROM _graph_rows f WHERE ({where}) AND NOT EXISTS "
                    f"(SELECT 1 FROM {table} t WHERE {on})"
                ).fetchone()
                verb = "INSERT OR REPLACE" if upsert else "INSERT OR IGNORE"
                con.execute(f"{verb} INTO {table} ({cols}) SELECT {cols} FROM _graph_rows f "
                            f"WHERE {where}")
            finally:
                con.unregister("_graph_rows")
        return int(row[0]) if row else 0

    def write_cohorts(self, names: Sequence[str]) -> int:
        return self._insert_new("graph_cohorts", ["name"], pd.DataFrame({"name": list(names)}),
                                upsert=False)

    def write_patients(self, patients: Sequence[PatientRecord]) -> int:
        with self.store.transaction():
            created = self.write_cohorts(sorted({p.cohort for p in patients}))
            frame = pd.DataFrame({
                "patient_id": [p.patient_id for p in patients],
                "cohort": [p.cohort for p in patients],
                "time": [float(p.time) for p in patients],
                "event": [bool(p.event) for p in patients],
                "modalities": [list(p.modalities) for p in patients],
                "splits": [list(p.splits) for p in patients],
            })
            moved = self._count_moved(frame)
            new = self._insert_new("graph_patients", ["patient_id"], frame, upsert=True)
            # as in Neo4j: a new patient is a node and its IN_COHORT link; a patient moved
            # to another cohort gets a new link
            return created + 2 * new + moved

    def _count_moved(self, frame: pd.DataFrame) -> int:
        """Patients of ``frame`` the graph holds under another cohort."""
        self.ensure_schema()
        if frame.empty:
            return 0
        con = self.store.con
        con.register("_graph_moved", frame[["patient_id", "cohort"]])
        try:
            rows = con.execute("SELECT count(*) FROM _graph_moved f JOIN graph_patients t "
                               "USING (patient_id) WHERE t.cohort <> f.cohort").fetchall()
        finally:
            con.unregister("_graph_moved")
        return int(rows[0][0])

    def write_slides(self, slides: Sequence[SlideRecord]) -> int:
        frame = pd.DataFrame({
            "slide_id": [s.slide_id for s in slides],
            "patient_id": [s.patient_id for s in slides],
            "n_patches": pd.array([s.n_patches for s in slides], dtype="Int32"),
            "encoder": [s.encoder for s in slides],
        })
        new = self._insert_new("graph_slides", ["slide_id"], frame, upsert=True,
                               where=f"f.patient_id IN {_PATIENT_IDS}")
        return 2 * new  # the node and its HAS_SLIDE link, as in Neo4j

    def write_model_version(self, version: ModelVersionRecord) -> int:
        self.ensure_schema()
        with self.store.transaction() as con:
            existed = con.execute("SELECT 1 FROM graph_versions WHERE version_id = ?",
                                  [version.version_id]).fetchone()
            linked_before = self._count_derived(con, version.version_id)
            con.execute(
                "INSERT INTO graph_versions (version_id, model, cohort, created, params, "
                "metrics, synced_edges, parent_id, batches) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?) "
                "ON CONFLICT (version_id) DO UPDATE SET model = excluded.model, "
                "cohort = excluded.cohort, created = excluded.created, "
                "params = excluded.params, metrics = excluded.metrics, "
                "parent_id = excluded.parent_id, batches = excluded.batches",
                [version.version_id, version.model, version.cohort, version.created,
                 version.params, version.metrics, version.parent_id, list(version.batches)],
            )
            linked = self._count_derived(con, version.version_id) - linked_before
        return (0 if existed else 1) + linked

    @staticmethod
    def _count_derived(con: Any, version_id: str) -> int:
        """DERIVED_FROM links touching ``version_id`` (as child or parent)."""
        row = con.execute(f"SELECT count(*) FROM ({_DERIVED_FROM}) d WHERE d.version_id = ? "
                          "OR d.parent_id = ?", [version_id, version_id]).fetchone()
        return int(row[0]) if row else 0

    def write_similar(self, version_id: str, edges: Sequence[SimilarEdge]) -> int:
        frame = pd.DataFrame({
            "version_id": version_id,
            "patient_id": [e.patient_id for e in edges],
            "neighbour_id": [e.neighbour_id for e in edges],
            "rank": [int(e.rank) for e in edges],
            "weight": [float(e.weight) for e in edges],
        })
        return self._insert_new("graph_similar", ["version_id", "patient_id", "neighbour_id"],
                                frame, upsert=True,
                                where=f"f.patient_id IN {_PATIENT_IDS} AND f.neighbour_id IN "
                                f"{_PATIENT_IDS} AND f.version_id IN {_VERSION_IDS}")

    def write_buffer(self, version_id: str, entries: Sequence[BufferEntry]) -> int:
        frame = pd.DataFrame({
            "version_id": version_id,
            "patient_id": [e.patient_id for e in entries],
            "position": [int(e.position) for e in entries],
        })
        return self._insert_new("graph_buffer", ["version_id", "patient_id"], frame, upsert=True,
                                where=f"f.patient_id IN {_PATIENT_IDS} AND f.version_id IN "
                                f"{_VERSION_IDS}")

    def write_predictions(self, version_id: str, predictions: Sequence[PredictionRecord]) -> int:
        frame = pd.DataFrame({
            "version_id": version_id,
            "patient_id": [p.patient_id for p in predictions],
            "risk": [float(p.risk) for p in predictions],
            "survival": [None if p.survival is None else [float(x) for x in p.survival]
                         for p in predictions],
            "inferred": [bool(p.inferred) for p in predictions],
        })
        return self._insert_new("graph_predictions", ["version_id", "patient_id"], frame,
                                upsert=True, where=f"f.patient_id IN {_PATIENT_IDS} AND "
                                f"f.version_id IN {_VERSION_IDS}")

    def mark_batches_synced(self, batch_ids: Sequence[str]) -> None:
        self._insert_new("graph_synced_batches", ["batch_id"],
                         pd.DataFrame({"batch_id": list(batch_ids)}, dtype=object), upsert=False)

    def synced_batches(self) -> set[str]:
        self.ensure_schema()
        rows = self.store.con.execute("SELECT batch_id FROM graph_synced_batches").fetchall()
        return {str(r[0]) for r in rows}

    def mark_synced(self, version_id: str, n_edges: int) -> None:
        self.ensure_schema()
        with self.store.transaction() as con:
            con.execute("UPDATE graph_versions SET synced_edges = ? WHERE version_id = ?",
                        [int(n_edges), version_id])

    def synced_versions(self) -> dict[str, int]:
        self.ensure_schema()
        if self.store.read_only and not self.store.con.execute(  # never synced, not creatable
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_name = 'graph_versions'").fetchone()[0]:  # type: ignore[index]
            return {}
        rows = self.store.con.execute(
            "SELECT version_id, synced_edges FROM graph_versions WHERE synced_edges IS NOT NULL"
        ).fetchall()
        return {str(v): int(n) for v, n in rows}

    def prune_version(self, version_id: str, batch_size: int = 10_000,
                      with_children: bool = False) -> int:
        self.ensure_schema()
        with self.store.transaction():  # a cascade is all-or-nothing here
            return prune_with_children(self, version_id, with_children, self._prune_one)

    def _prune_one(self, version_id: str) -> int:
        with self.store.transaction() as con:
            row = con.execute("SELECT count(*) FROM graph_similar WHERE version_id = ?",
                              [version_id]).fetchone()
            for table in ["graph_similar", "graph_predictions", "graph_buffer",
                          "graph_query_edges", "graph_query_cases", "graph_versions"]:
                con.execute(f"DELETE FROM {table} WHERE version_id = ?", [version_id])
        return int(row[0]) if row else 0

    def child_versions(self, version_id: str) -> list[str]:
        self.ensure_schema()
        rows = self.store.con.execute(
            "SELECT version_id FROM graph_versions WHERE parent_id = ? ORDER BY version_id",
            [version_id]).fetchall()
        return [str(r[0]) for r in rows]

    def persist_query_case(
        self,
        case_id: str,
        version_id: str,
        neighbours: Sequence[SimilarEdge],
        properties: dict[str, Any] | None = None,
    ) -> None:
        self.ensure_schema()
        created = datetime.now(UTC).isoformat()
        with self.store.transaction() as con:
            con.execute(
                "INSERT OR REPLACE INTO graph_query_cases VALUES (?, ?, ?, ?)",
                [case_id, version_id, created, json.dumps(properties or {}, sort_keys=True)],
            )
            con.execute("DELETE FROM graph_query_edges WHERE case_id = ?", [case_id])
            con.executemany(
                "INSERT INTO graph_query_edges SELECT ?, ?, ?, ?, ? WHERE EXISTS "
                "(SELECT 1 FROM graph_patients WHERE patient_id = ?)",
                [[case_id, e.neighbour_id, version_id, int(e.rank), float(e.weight),
                  e.neighbour_id] for e in neighbours],
            )

    # ------------------------------------------------------------------ reads
    def neighbours(self, patient_id: str, version_id: str, k: int = 10) -> list[Neighbour]:
        self.ensure_schema()
        rows = self.store.con.execute(
            _LINEAGE + ", own AS (SELECT s.*, l.depth FROM graph_similar s JOIN lineage l "
            "USING (version_id) WHERE s.patient_id = ?) "
            "SELECT s.neighbour_id, s.rank, s.weight, p.cohort, p.time, p.event, p.modalities "
            "FROM own s JOIN graph_patients p ON p.patient_id = s.neighbour_id "
            "WHERE s.depth = (SELECT min(depth) FROM own) ORDER BY s.rank LIMIT ?",
            [version_id, patient_id, int(k)],
        ).fetchall()
        return [Neighbour(str(r[0]), int(r[1]), float(r[2]), str(r[3]), float(r[4]), bool(r[5]),
                          tuple(r[6] or ())) for r in rows]

    def stats(self) -> GraphStats:
        self.ensure_schema()
        con = self.store.con

        def count(sql: str) -> int:
            row = con.execute(sql).fetchone()
            return int(row[0]) if row else 0

        nodes = {
            "Cohort": count("SELECT count(*) FROM graph_cohorts"),
            "Patient": count("SELECT count(*) FROM graph_patients"),
            "Slide": count("SELECT count(*) FROM graph_slides"),
            "ModelVersion": count("SELECT count(*) FROM graph_versions"),
            "QueryCase": count("SELECT count(*) FROM graph_query_cases"),
        }
        relationships = {
            "IN_COHORT": nodes["Patient"],
            "HAS_SLIDE": count("SELECT count(*) FROM graph_slides s JOIN graph_patients p "
                               "USING (patient_id)"),
            "SIMILAR_TO": count("SELECT count(*) FROM graph_similar")
            + count("SELECT count(*) FROM graph_query_edges"),
            "IN_BUFFER": count("SELECT count(*) FROM graph_buffer"),
            "PREDICTED": count("SELECT count(*) FROM graph_predictions"),
            "DERIVED_FROM": count(f"SELECT count(*) FROM ({_DERIVED_FROM})"),
        }
        versions = dict(con.execute(
            "SELECT v.version_id, count(s.patient_id) FROM graph_versions v LEFT JOIN "
            "graph_similar s USING (version_id) GROUP BY 1 ORDER BY 1").fetchall())
        return GraphStats(nodes=nodes, relationships=relationships,
                          versions={str(k): int(v) for k, v in versions.items()})

    def dump(self) -> GraphDump:
        self.ensure_schema()
        con = self.store.con

        def rows(sql: str) -> list[tuple[Any, ...]]:
            return con.execute(sql).fetchall()

        return GraphDump(
            cohorts=frozenset(r[0] for r in rows("SELECT name FROM graph_cohorts")),
            patients=frozenset(
                PatientRecord(r[0], r[1], float(r[2]), bool(r[3]), tuple(sorted(r[4] or ())),
                              tuple(sorted(r[5] or ())))
                for r in rows("SELECT * FROM graph_patients")),
            slides=frozenset(SlideRecord(r[0], r[1], None if r[2] is None else int(r[2]), r[3])
                             for r in rows("SELECT * FROM graph_slides")),
            versions=frozenset(r[0] for r in rows("SELECT version_id FROM graph_versions")),
            similar=frozenset((r[0], r[1], r[2], int(r[3]), round_weight(r[4]))
                              for r in rows("SELECT version_id, patient_id, neighbour_id, "
                                            "rank, weight FROM graph_similar")),
            buffer=frozenset((r[0], r[1], int(r[2])) for r in rows(
                "SELECT version_id, patient_id, position FROM graph_buffer")),
            query_cases=frozenset(
                (r[0], r[2], r[1], int(r[3]), round_weight(r[4]))
                for r in rows("SELECT * FROM graph_query_edges")),
            predictions=frozenset(
                (r[0], r[1], round_weight(r[2]), round_survival(r[3]), bool(r[4]))
                for r in rows("SELECT version_id, patient_id, risk, survival, inferred "
                              "FROM graph_predictions")),
            derived_from=frozenset((r[0], r[1]) for r in rows(_DERIVED_FROM)),
            synced_batches=frozenset(r[0] for r in rows("SELECT batch_id FROM "
                                                        "graph_synced_batches")),
        )

    def clear(self) -> None:
        self.ensure_schema()
        with self.store.transaction() as con:
            for table in TABLES:
                con.execute(f"DELETE FROM {table}")
