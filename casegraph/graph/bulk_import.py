"""Load a new or wiped Neo4j database with Neo4j's own bulk importer.

``neo4j-admin database import full`` builds the store files straight from CSV, without
transactions, at a multiple of any Cypher write. This module writes the case graph a full
``graph sync`` would write (the same nodes, relationships and properties, the sync marks
included, so a later ``graph sync`` writes only what is new) as CSV files, one data file and
one header file per node label and relationship type, and runs the importer.

The importer is launched by a command the caller gives (the CLI passes
``deploy/neo4j/import.sh``, which runs ``org.neo4j.cli.AdminTool`` from the Neo4j jars the
server is built from); the database directory must not be in use by a running server.

One difference the CSV format forces: it has no empty list, so an empty list property (a
patient with no modality or no split, a version with no batch ids) is absent after an
import, where a sync stores ``[]``. Every reader in casegraph treats both alike.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from casegraph.errors import CasegraphError, InputError
from casegraph.graph import source
from casegraph.graph.records import PatientRecord, SlideRecord
from casegraph.graph.static_knn import ensure_static_knn, has_trained_version
from casegraph.ingest.store import Store

ARRAY_DELIMITER = "\x1f"  # unit separator: no id, split or batch name holds it (checked)
SYNC_STATE_ID = "ingest"


@dataclass
class ImportFiles:
    """The CSV files of one import: ``--nodes=LABEL=header,data`` / ``--relationships=``."""

    directory: Path
    nodes: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    relationships: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # label or type -> rows
    multiline: bool = False  # some value holds a line break

    @property
    def n_nodes(self) -> int:
        return sum(self.counts[label] for label in self.nodes)

    @property
    def n_relationships(self) -> int:
        return sum(self.counts[kind] for kind in self.relationships)


@dataclass
class ImportReport:
    database: str
    nodes: int
    relationships: int
    edges: int  # SIMILAR_TO
    csv_seconds: float
    import_seconds: float  # the importer process, JVM start-up included
    counts: dict[str, int]
    importer_own_seconds: float | None = None  # what it reports ("IMPORT DONE in ...")

    @property
    def seconds(self) -> float:
        return self.csv_seconds + self.import_seconds


# ---------------------------------------------------------------- CSV values
def _text(values: pd.Series) -> pd.Series:
    """Quoted CSV strings (``"`` doubled); a missing value is an empty, unquoted field.
    Each distinct value is quoted once (ids repeat over the edges)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    quoted = np.array(['"' + str(u).replace('"', '""') + '"' for u in uniques] + [""],
                      dtype=object)
    return pd.Series(quoted[codes], index=values.index)  # code -1 (missing) -> ""


def _floats(values: pd.Series) -> pd.Series:
    """Shortest round-trip text of each float64 (Neo4j parses it back to the same double)."""
    as_float = values.to_numpy(dtype=np.float64, na_value=np.nan)
    text = as_float.astype(str).astype(object)
    text[np.isnan(as_float)] = ""
    return pd.Series(text, index=values.index)


def _ints(values: pd.Series) -> pd.Series:
    return values.map(lambda v: "" if v is None or pd.isna(v) else str(int(v)))


def _bools(values: pd.Series) -> pd.Series:
    return values.map(lambda v: "true" if bool(v) else "false")


def _arrays(values: Sequence[Sequence[Any] | None], text: bool) -> pd.Series:
    """Array fields joined by :data:`ARRAY_DELIMITER`; an empty list is an empty field."""
    out: list[str | None] = []
    for items in values:
        if not items:
            out.append(None)
            continue
        parts = [repr(float(x)) if not text else str(x) for x in items]
        for part in parts:
            if ARRAY_DELIMITER in part:
                raise InputError(f"value {part!r} holds the importer's array delimiter "
                                 "(U+001F)", fix="rename it, or use `casegraph graph sync`")
        out.append(ARRAY_DELIMITER.join(parts))
    series = pd.Series(out, dtype=object)
    return _text(series) if text else series.where(series.notna(), "")


# ---------------------------------------------------------------- writing files
class _Writer:
    def __init__(self, directory: Path) -> None:
        self.files = ImportFiles(directory)

    def write(self, kind: str, name: str, header: list[str], columns: list[pd.Series]) -> None:
        """One header file and one data file; ``columns`` are CSV-ready text."""
        stem = self.files.directory / f"{kind}-{name.lower()}"
        header_path, data_path = Path(f"{stem}-header.csv"), Path(f"{stem}.csv")
        header_path.write_text(",".join(header) + "\n", encoding="utf-8")
        n = len(columns[0]) if columns else 0
        with data_path.open("w", encoding="utf-8", newline="") as out:
            if n:
                text = "\n".join(map(",".join, zip(*(c.astype(str).tolist() for c in columns),
                                                    strict=True))) + "\n"
                # n rows end in n line breaks: any more (or a CR) sit inside a value
                self.files.multiline |= text.count("\n") > n or "\r" in text
                out.write(text)
        target = self.files.nodes if kind == "nodes" else self.files.relationships
        target[name] = (header_path, data_path)
        self.files.counts[name] = self.files.counts.get(name, 0) + n


def write_import_csv(store: Store, directory: Path, static_k: int = 12) -> ImportFiles:
    """The whole case graph of ``store`` as importer CSV files under ``directory``.

    Like :func:`casegraph.graph.sync.sync_graph` on an empty graph: without a trained
    version the static k-NN version is computed (and stored) first."""
    if not has_trained_version(store):
        ensure_static_knn(store, k=static_k)
    directory.mkdir(parents=True, exist_ok=True)
    writer = _Writer(directory)
    patients = source.patient_records(store)
    _write_cohorts_and_patients(writer, store, patients)
    _write_slides(writer, source.slide_records(store))
    _write_versions(writer, store)
    batches = source.patient_delta(store, set()).batches
    writer.write("nodes", "SyncState", ["id:ID(SyncState)", "batches:string[]"],
                 [_text(pd.Series([SYNC_STATE_ID])), _arrays([batches], text=True)])
    return writer.files


def _write_cohorts_and_patients(writer: _Writer, store: Store,
                                patients: Sequence[PatientRecord]) -> None:
    cohorts = sorted(set(store.cohorts()) | {p.cohort for p in patients})
    writer.write("nodes", "Cohort", ["name:ID(Cohort)"], [_text(pd.Series(cohorts, dtype=object))])
    ids = pd.Series([p.patient_id for p in patients], dtype=object)
    cohort = pd.Series([p.cohort for p in patients], dtype=object)
    writer.write("nodes", "Patient",
                 ["id:ID(Patient)", "cohort", "time:double", "event:boolean",
                  "modalities:string[]", "splits:string[]"],
                 [_text(ids), _text(cohort), _floats(pd.Series([p.time for p in patients])),
                  _bools(pd.Series([p.event for p in patients])),
                  _arrays([p.modalities for p in patients], text=True),
                  _arrays([p.splits for p in patients], text=True)])
    writer.write("relationships", "IN_COHORT", [":START_ID(Patient)", ":END_ID(Cohort)"],
                 [_text(ids), _text(cohort)])


def _write_slides(writer: _Writer, slides: Sequence[SlideRecord]) -> None:
    ids = pd.Series([s.slide_id for s in slides], dtype=object)
    writer.write("nodes", "Slide", ["id:ID(Slide)", "n_patches:long", "encoder"],
                 [_text(ids), _ints(pd.Series([s.n_patches for s in slides], dtype=object)),
                  _text(pd.Series([s.encoder for s in slides], dtype=object))])
    writer.write("relationships", "HAS_SLIDE", [":START_ID(Patient)", ":END_ID(Slide)"],
                 [_text(pd.Series([s.patient_id for s in slides], dtype=object)), _text(ids)])


def _write_versions(writer: _Writer, store: Store) -> None:
    records = source.model_version_records(store)
    own_edges = store.own_neighbour_counts()
    known = {r.version_id for r in records}

    def column(values: list[object]) -> pd.Series:
        return pd.Series(values, dtype=object)

    writer.write("nodes", "ModelVersion",
                 ["id:ID(ModelVersion)", "name", "cohort", "created", "params", "metrics",
                  "parent_id", "batches:string[]", "synced_edges:long"],
                 [_text(column([r.version_id for r in records])),
                  _text(column([r.model for r in records])),
                  _text(column([r.cohort for r in records])),
                  _text(column([r.created for r in records])),
                  _text(column([r.params for r in records])),
                  _text(column([r.metrics for r in records])),
                  _text(column([r.parent_id for r in records])),
                  _arrays([r.batches for r in records], text=True),
                  _ints(column([own_edges.get(r.version_id, 0) for r in records]))])
    derived = [(r.version_id, r.parent_id) for r in records
               if r.parent_id in known and r.parent_id != r.version_id]
    writer.write("relationships", "DERIVED_FROM",
                 [":START_ID(ModelVersion)", ":END_ID(ModelVersion)"],
                 [_text(column([c for c, _ in derived])), _text(column([p for _, p in derived]))])
    _write_version_links(writer, store, [r.version_id for r in records])


def _write_version_links(writer: _Writer, store: Store, version_ids: list[str]) -> None:
    edges, buffers, predictions = [], [], []
    for version_id in version_ids:
        frame = source.similar_frame(store, version_id)
        edges.append(frame.assign(version=version_id))
        buffer = source.buffer_entries(store, version_id)
        buffers.append(pd.DataFrame({"patient": [b.patient_id for b in buffer],
                                     "position": [b.position for b in buffer],
                                     "version": version_id}))
        rows = source.prediction_records(store, version_id)
        predictions.append(pd.DataFrame({
            "patient": [p.patient_id for p in rows], "risk": [p.risk for p in rows],
            "survival": [p.survival for p in rows], "inferred": [p.inferred for p in rows],
            "version": version_id}))
    similar = _concat(edges, ["patient_id", "neighbour_id", "rank", "weight", "version"])
    writer.write("relationships", "SIMILAR_TO",
                 [":START_ID(Patient)", ":END_ID(Patient)", "model_version", "rank:long",
                  "weight:double"],
                 [_text(similar["patient_id"]), _text(similar["neighbour_id"]),
                  _text(similar["version"]), similar["rank"].astype(np.int64).astype(str),
                  _floats(similar["weight"])])
    buffer_frame = _concat(buffers, ["patient", "position", "version"])
    writer.write("relationships", "IN_BUFFER",
                 [":START_ID(Patient)", ":END_ID(ModelVersion)", "position:long"],
                 [_text(buffer_frame["patient"]), _text(buffer_frame["version"]),
                  _ints(buffer_frame["position"])])
    predicted = _concat(predictions, ["patient", "risk", "survival", "inferred", "version"])
    writer.write("relationships", "PREDICTED",
                 [":START_ID(Patient)", ":END_ID(ModelVersion)", "risk:double",
                  "survival:double[]", "inferred:boolean"],
                 [_text(predicted["patient"]), _text(predicted["version"]),
                  _floats(predicted["risk"]), _arrays(list(predicted["survival"]), text=False),
                  _bools(predicted["inferred"])])


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    return pd.concat(frames, ignore_index=True)[columns]


# ---------------------------------------------------------------- running the importer
def importer_arguments(files: ImportFiles, database: str = "neo4j",
                       overwrite: bool = False) -> list[str]:
    """``database import full`` arguments for ``files`` (the database name goes first: the
    file lists are variadic)."""
    args = ["database", "import", "full", database,
            f"--array-delimiter=U+{ord(ARRAY_DELIMITER):04X}", "--id-type=string",
            f"--report-file={files.directory / 'import.report'}"]
    if files.multiline:
        args.append("--multiline-fields=true")
    if overwrite:
        args.append("--overwrite-destination=true")
    for label, (header, data) in files.nodes.items():
        args.append(f"--nodes={label}={header},{data}")
    for kind, (header, data) in files.relationships.items():
        args.append(f"--relationships={kind}={header},{data}")
    return args


def run_importer(launcher: Sequence[str], files: ImportFiles, neo4j_home: Path,
                 database: str = "neo4j", overwrite: bool = False) -> str:
    """Run ``launcher + importer_arguments(...)`` with ``NEO4J_HOME=neo4j_home``; its output.

    Failure (a running server holds the database, the database is not empty, ...) raises
    one line naming the importer's own reason."""
    import os

    if neo4j_home.exists() and not neo4j_home.is_dir():
        raise InputError(f"--neo4j-home {neo4j_home} is not a directory",
                         fix="name the home directory of a stopped Neo4j server (or a new one)")
    neo4j_home.mkdir(parents=True, exist_ok=True)
    conf = files.directory / "conf"
    conf.mkdir(exist_ok=True)  # an empty configuration: the server's defaults
    env = {**os.environ, "NEO4J_HOME": str(neo4j_home), "NEO4J_CONF": str(conf)}
    result = subprocess.run([*launcher, *importer_arguments(files, database, overwrite)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, check=False)
    if result.returncode != 0 or "IMPORT DONE" not in result.stdout:
        raise CasegraphError(f"neo4j-admin import into {neo4j_home} failed: "
                             f"{_reason(result.stdout)}")
    return result.stdout


def _reason(output: str) -> str:
    """The importer's own one-line reason (it prints a stack trace after it)."""
    for line in output.splitlines():
        text = line.strip()
        if re.search(r"(Exception|Error|failed|already|not empty|in use|lock)", text, re.I):
            return re.sub(r"^[\w.$]+(Exception|Error):\s*", "", text)[:300]
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def bulk_import(store: Store, neo4j_home: Path, launcher: Sequence[str], *,
                database: str = "neo4j", overwrite: bool = False, static_k: int = 12,
                work_dir: Path | None = None) -> ImportReport:
    """Write the CSV files (into ``work_dir``, default a temporary directory removed after)
    and import them into ``neo4j_home``'s database ``database``."""
    with tempfile.TemporaryDirectory(prefix="casegraph-import-") as tmp:
        directory = work_dir or Path(tmp)
        started = time.perf_counter()
        files = write_import_csv(store, directory, static_k=static_k)
        written = time.perf_counter()
        output = run_importer(launcher, files, neo4j_home, database, overwrite)
        done = time.perf_counter()
    return ImportReport(database=database, nodes=files.n_nodes,
                        relationships=files.n_relationships,
                        edges=files.counts.get("SIMILAR_TO", 0),
                        csv_seconds=written - started, import_seconds=done - written,
                        counts=dict(files.counts), importer_own_seconds=_done_seconds(output))


def _done_seconds(output: str) -> float | None:
    """Seconds from the importer's ``IMPORT DONE in 1m 2s 345ms.`` line."""
    found = re.search(r"IMPORT DONE in ([^.]+)", output)
    if not found:
        return None
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|h|m|s)\b", found.group(1)))
