"""One ingest batch: validate everything first, then write all of it in one transaction.

Incremental and idempotent: patients, slides, gene groups and splits already in the store
with the same content are skipped; a changed survival or genomic value is an error unless
``update`` is set (then it is recorded in the batch). A batch with nothing new writes
nothing at all.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from casegraph import __version__
from casegraph.errors import InputError
from casegraph.faults import crash_point
from casegraph.ingest.bag_plan import BagPlan, plan_bags
from casegraph.ingest.doctor import remove_leftovers
from casegraph.ingest.executors import executor_from_spec
from casegraph.ingest.outcomes import OutcomePlan, Outcomes
from casegraph.ingest.parquet_files import write_genomic_file
from casegraph.ingest.signatures import GeneGroups
from casegraph.ingest.splits import SplitSet
from casegraph.ingest.store import Store
from casegraph.ingest.summaries import write_summary_file
from casegraph.ingest.tables import CohortTable
from casegraph.runtime import sha256_file

PATIENT_COLUMNS = ["patient_id", "cohort", "time", "event", "source_id", "attributes", "batch_id"]
SLIDE_COLUMNS = ["slide_id", "patient_id", "cohort", "feature_path", "sha256", "n_patches",
                 "feature_dim", "encoder", "file_size", "file_mtime", "hash_algorithm",
                 "provenance", "batch_id"]


@dataclass
class IngestRequest:
    tables: list[CohortTable] = field(default_factory=list)
    gene_groups: list[GeneGroups] = field(default_factory=list)
    split_sets: list[SplitSet] = field(default_factory=list)
    bag_dirs: list[Path] = field(default_factory=list)
    update: bool = False
    k: int = 6
    seed: int = 0
    encoder: str = "unknown"
    executor: str | None = None  # where bags are registered: local (default), dask://HOST:PORT


@dataclass
class GeneCoverage:
    """Unique genes of a gene-group set with a feature (see ``unique_gene_coverage``):
    among this batch's tables (None when the batch has no table) and in the store once the
    batch is in; ``lowest`` is the group with the smallest share in the store."""

    genes: int
    in_batch: int | None
    in_store: int
    lowest: tuple[str, int, int]


@dataclass
class IngestReport:
    batch_id: str | None = None
    new_patients: int = 0
    updated_patients: list[str] = field(default_factory=list)
    unchanged_patients: int = 0
    new_slides: int = 0
    bags_registered: int = 0
    unmatched_bag_files: list[str] = field(default_factory=list)
    batch_slides: int = 0  # slides of this batch's tables
    slides_without_bags: int = 0  # of those, without a feature file (stored or in --bags)
    new_gene_group_sets: list[str] = field(default_factory=list)
    new_split_sets: list[str] = field(default_factory=list)
    coverage: dict[str, GeneCoverage] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    store_patients: int = 0  # store totals once this batch is in
    store_slides: int = 0
    store_slides_without_bags: int = 0
    removed_leftovers: list[str] = field(default_factory=list)  # files of killed ingests
    new_outcomes: int = 0  # endpoint rows (DSS/PFI/DFI) written or replaced by this batch

    @property
    def changed(self) -> bool:
        return self.batch_id is not None


@dataclass
class _PatientPlan:
    table: CohortTable
    rows: list[int]  # rows of table to write (new or updated)
    updated: list[str]


def ingest(store: Store, request: IngestRequest) -> IngestReport:
    report = IngestReport()
    started = datetime.now(UTC)
    _check_tables_disjoint(request.tables)
    patient_plans = [_plan_patients(store, t, request.update, report) for t in request.tables]
    outcome_plans = _plan_outcomes(store, request, report)
    new_features = _plan_features(store, request.tables)
    group_sets = _plan_gene_groups(store, request, report)
    split_sets = _plan_splits(store, request, report)
    bag_plan = plan_bags(store, request.tables, request.bag_dirs, request.k, request.seed,
                         request.encoder, executor_from_spec(request.executor))
    report.unmatched_bag_files = bag_plan.unmatched_files
    report.batch_slides = bag_plan.batch_slides
    report.slides_without_bags = bag_plan.batch_slides_without_bags
    report.store_slides_without_bags = bag_plan.store_slides_without_bags
    report.bags_registered = len(bag_plan.records)
    report.new_slides = len(bag_plan.new_slide_rows)
    report.warnings.extend(bag_plan.warnings)
    _report_coverage(store, request, report)
    # Validation passed: clear what killed ingests left (their batches never committed).
    report.removed_leftovers = [str(p) for p in remove_leftovers(store, uncommitted_only=True)]
    has_rows = any(p.rows for p in patient_plans) or any(p.rows for p in outcome_plans)
    if not (has_rows or new_features or group_sets or split_sets or bag_plan.has_changes):
        _store_totals(store, report)
        return report
    batch_id = started.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    genomic_files = _write_genomic_files(store, batch_id, patient_plans)
    summary_file = (write_summary_file(store.summaries_dir, batch_id, bag_plan.records)
                    if bag_plan.records else None)
    with store.transaction() as con:
        _write_features(con, new_features)
        for plan, file in zip(patient_plans, genomic_files, strict=True):
            _write_patients(con, plan, file, batch_id)
        for outcome_plan in outcome_plans:
            Outcomes.write(con, outcome_plan, batch_id)
        _write_groups(con, group_sets)
        _write_splits(con, split_sets)
        _write_bags(con, bag_plan, summary_file, batch_id, request)
        con.execute(
            "INSERT INTO ingest_batches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [batch_id, started, datetime.now(UTC), __version__, "ingest",
             json.dumps(_inputs(request)), json.dumps(_counts(report)),
             json.dumps({"updated_patients": report.updated_patients})],
        )
        crash_point("ingest.in_transaction")
    report.batch_id = batch_id
    _store_totals(store, report)
    return report


def _store_totals(store: Store, report: IngestReport) -> None:
    counts = store.counts()
    report.store_patients, report.store_slides = counts["patients"], counts["slides"]


def _check_tables_disjoint(tables: list[CohortTable]) -> None:
    seen: dict[str, Path] = {}
    for table in tables:
        for pid in table.patient_ids:
            if pid in seen and seen[pid] != table.source:
                raise InputError(f"patient {pid!r} appears in two input tables ({seen[pid]})",
                                 file=table.source, fix="ingest each patient from one table")
            seen[pid] = table.source


def _plan_patients(store: Store, table: CohortTable, update: bool,
                   report: IngestReport) -> _PatientPlan:
    existing = store.con.execute(
        "SELECT patient_id, cohort, time, event FROM patients WHERE patient_id IN "
        "(SELECT unnest(?::VARCHAR[]))", [table.patient_ids]
    ).fetchall()
    known = {pid: (cohort, t, e) for pid, cohort, t, e in existing}
    pos = {pid: i for i, pid in enumerate(table.patient_ids)}
    changed: dict[str, str] = {}
    for pid, (cohort, t, e) in known.items():
        i = pos[pid]
        if cohort != table.cohort:
            changed[pid] = f"cohort {cohort!r} -> {table.cohort!r}"
        elif float(t) != float(table.time[i]) or bool(e) != bool(table.event[i]):
            changed[pid] = f"survival ({t}, {e}) -> ({table.time[i]}, {bool(table.event[i])})"
    _compare_genomics(store, table, [p for p in known if p not in changed], pos, changed)
    if changed and not update:
        pid, what = next(iter(sorted(changed.items())))
        raise InputError(
            f"{len(changed)} patient(s) already in the store have different values, e.g. "
            f"{pid!r}: {what}", file=table.source, row=pid,
            fix="pass --update to overwrite them (recorded in the batch)")
    report.updated_patients.extend(sorted(changed))
    new_rows = [pos[p] for p in table.patient_ids if p not in known]
    report.new_patients += len(new_rows)
    report.unchanged_patients += len(known) - len(changed)
    rows = sorted(new_rows + [pos[p] for p in changed])
    return _PatientPlan(table=table, rows=rows, updated=sorted(changed))


def _compare_genomics(store: Store, table: CohortTable, pids: list[str], pos: dict[str, int],
                      changed: dict[str, str]) -> None:
    if not pids or not table.feature_names:
        return
    known_names = set(store.feature_table()["name"])
    if any(n not in known_names for n in table.feature_names):
        for pid in pids:
            changed[pid] = "new genomic features"
        return
    stored, _, present = store.genomic_matrix(pids, table.feature_names)
    incoming = table.genomics[[pos[p] for p in pids]]
    has_value = np.isfinite(incoming)
    differs = (has_value != present) | (has_value & (stored != np.where(has_value, incoming, 0)))
    for r in np.flatnonzero(differs.any(axis=1)):
        col = table.feature_names[int(np.flatnonzero(differs[r])[0])]
        changed[pids[int(r)]] = f"genomic value {col}"


def _plan_outcomes(store: Store, request: IngestRequest,
                   report: IngestReport) -> list[OutcomePlan]:
    """Each table's endpoint rows (DSS/PFI/DFI) that are new or changed; a patient whose
    endpoint values changed counts as updated."""
    plans = [store.outcomes.plan(t.patient_ids, t.outcomes, request.update, t.source)
             for t in request.tables]
    known = set(report.updated_patients)
    report.updated_patients.extend(p for plan in plans for p in plan.updated if p not in known)
    report.new_outcomes = sum(len(plan.rows) for plan in plans)
    return plans


def _plan_features(store: Store, tables: list[CohortTable]) -> list[tuple[int, str, str, str]]:
    known = set(store.feature_table()["name"])
    next_id = int(store.con.execute(
        "SELECT coalesce(max(feature_id), -1) FROM features").fetchall()[0][0]) + 1
    out = []
    for table in tables:
        for name, gene, modality in zip(table.feature_names, table.feature_genes,
                                        table.feature_modalities, strict=True):
            if name not in known:
                known.add(name)
                out.append((next_id, name, gene, modality))
                next_id += 1
    return out


def _plan_gene_groups(store: Store, request: IngestRequest,
                      report: IngestReport) -> list[GeneGroups]:
    out = []
    for groups in request.gene_groups:
        stored = store.gene_groups(groups.group_set)
        if _same_groups(stored, groups.groups):
            continue
        if stored and not request.update:
            raise InputError(f"gene-group set {groups.group_set!r} is already stored with "
                             "different groups", file=groups.source,
                             fix="pass --update to replace it, or name it differently")
        out.append(groups)
        report.new_gene_group_sets.append(groups.group_set)
    return out


def _same_groups(a: dict[str, list[str]], b: dict[str, list[str]]) -> bool:
    return {k: sorted(v) for k, v in a.items()} == {k: sorted(v) for k, v in b.items()}


def _plan_splits(store: Store, request: IngestRequest, report: IngestReport) -> list[SplitSet]:
    incoming = {p for t in request.tables for p in t.patient_ids}
    out = []
    for split in request.split_sets:
        stored = store.splits(split.name)
        split = _known_split_patients(store, split, incoming, report)
        merged = {k: (sorted(set(stored.get(k, ([], []))[0]) | set(tr)),
                      sorted(set(stored.get(k, ([], []))[1]) | set(va)))
                  for k, (tr, va) in split.folds.items()}
        if all(stored.get(k) == v for k, v in merged.items()):
            continue
        clash = [p for k, (tr, va) in merged.items() for p in set(tr) & set(va)]
        if clash:
            raise InputError(f"patient {clash[0]!r} would be in train and val of one fold of "
                             f"split set {split.name!r}", file=split.source,
                             fix="name the new split set differently (--split-name)")
        out.append(SplitSet(split.name, split.source, merged))
        report.new_split_sets.append(split.name)
    return out


def _known_split_patients(store: Store, split: SplitSet, incoming: set[str],
                          report: IngestReport) -> SplitSet:
    """The split set without patients that are neither in this batch nor in the store.

    None known is an error (another cohort's split folder); some unknown is kept with a
    warning that counts them, as long as every fold keeps a train and a val side.
    """
    patients = split.patients()
    unknown = sorted(patients - incoming - _stored_ids(store, patients))
    if not unknown:
        return split
    if len(unknown) == len(patients):
        raise InputError(f"none of the {len(patients)} patients of the split files is in this "
                         f"batch's tables or in the store (e.g. {unknown[0]!r}); is it another "
                         "cohort's split folder?", file=split.source,
                         fix="pass the split folder of the cohort being ingested, or ingest "
                         "its table first")
    drop = set(unknown)
    folds = {k: ([p for p in tr if p not in drop], [p for p in va if p not in drop])
             for k, (tr, va) in split.folds.items()}
    for k, sides in sorted(folds.items()):
        for role, ids in zip(("train", "val"), sides, strict=True):
            if not ids:
                raise InputError(f"fold {k} keeps no {role} patient once the {len(unknown)} "
                                 "patients that are not in the tables or the store are left "
                                 f"out (e.g. {unknown[0]!r})", file=split.source,
                                 fix="ingest those patients' table too, or fix the split files")
    report.warnings.append(f"split set {split.name!r} ({split.source}): {len(unknown)} of "
                           f"{len(patients)} patients are not in this batch's tables or the "
                           f"store (e.g. {unknown[0]!r}); they are left out of the folds")
    return SplitSet(split.name, split.source, folds)


def _stored_ids(store: Store, ids: set[str]) -> set[str]:
    rows = store.con.execute(
        "SELECT patient_id FROM patients WHERE patient_id IN (SELECT unnest(?::VARCHAR[]))",
        [sorted(ids)]).fetchall()
    return {r[0] for r in rows}


def _report_coverage(store: Store, request: IngestRequest, report: IngestReport) -> None:
    batch_genes = {g for table in request.tables for g in table.feature_genes}
    store_genes = set(store.feature_table()["gene"]) | batch_genes
    sets = list(request.gene_groups)
    for name in store.gene_group_sets():
        if name not in {g.group_set for g in sets}:
            sets.append(GeneGroups(name, Path("store"), store.gene_groups(name)))
    for groups in sets:
        in_store, genes = groups.unique_coverage(store_genes)
        per_group = groups.coverage(store_genes)
        worst = min(per_group.items(), key=lambda kv: kv[1][0] / max(kv[1][1], 1))
        report.coverage[groups.group_set] = GeneCoverage(
            genes=genes, in_store=in_store, lowest=(worst[0], *worst[1]),
            in_batch=groups.unique_coverage(batch_genes)[0] if request.tables else None)


def _write_genomic_files(store: Store, batch_id: str, plans: list[_PatientPlan]) -> list[str | None]:
    files: list[str | None] = []
    for plan in plans:
        if not plan.rows or not plan.table.feature_names:
            files.append(None)
            continue
        t = plan.table
        files.append(write_genomic_file(store.genomics_dir, batch_id,
                                        [t.patient_ids[i] for i in plan.rows], t.feature_names,
                                        t.genomics[plan.rows]))
    return files


def _insert_rows(con, table: str, columns: list[str], rows: Sequence[tuple[object, ...]]) -> None:  # type: ignore[no-untyped-def]
    """Bulk insert through a registered DataFrame (executemany is row-at-a-time in DuckDB)."""
    if not rows:
        return
    frame = pd.DataFrame(rows, columns=columns)
    con.register("_bulk_rows", frame)
    try:
        con.execute(f"INSERT INTO {table} ({', '.join(columns)}) "  # our own identifiers only
                    f"SELECT {', '.join(columns)} FROM _bulk_rows ON CONFLICT DO NOTHING")
    finally:
        con.unregister("_bulk_rows")


def _write_features(con, features: list[tuple[int, str, str, str]]) -> None:  # type: ignore[no-untyped-def]
    if features:
        _insert_rows(con, "features", ["feature_id", "name", "gene", "modality"], features)


def _write_patients(con, plan: _PatientPlan, genomic_file: str | None, batch_id: str) -> None:  # type: ignore[no-untyped-def]
    t = plan.table
    if not plan.rows:
        return
    con.execute("INSERT INTO cohorts VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [t.cohort, str(t.source), batch_id])
    ids = [t.patient_ids[i] for i in plan.rows]
    if plan.updated:
        con.execute("DELETE FROM patients WHERE patient_id IN (SELECT unnest(?::VARCHAR[]))",
                    [plan.updated])
        con.execute("DELETE FROM genomic_rows WHERE patient_id IN (SELECT unnest(?::VARCHAR[]))",
                    [plan.updated])
    _insert_rows(con, "patients", PATIENT_COLUMNS,
                 [(t.patient_ids[i], t.cohort, float(t.time[i]), bool(t.event[i]), t.patient_ids[i],
                   json.dumps(t.attributes[i]), batch_id) for i in plan.rows])
    if genomic_file:
        _insert_rows(con, "genomic_rows", ["patient_id", "file", "row_index", "batch_id"],
                     [(pid, genomic_file, r, batch_id) for r, pid in enumerate(ids)])


def _write_groups(con, group_sets: list[GeneGroups]) -> None:  # type: ignore[no-untyped-def]
    for groups in group_sets:
        con.execute("DELETE FROM gene_groups WHERE group_set = ?", [groups.group_set])
        _insert_rows(con, "gene_groups", ["group_set", "group_name", "gene", "position"],
                     [(groups.group_set, name, gene, position)
                      for position, (name, genes) in enumerate(groups.groups.items())
                      for gene in genes])


def _write_splits(con, split_sets: list[SplitSet]) -> None:  # type: ignore[no-untyped-def]
    for split in split_sets:
        con.execute("DELETE FROM splits WHERE split_set = ?", [split.name])
        _insert_rows(con, "splits", ["split_set", "fold", "patient_id", "role"],
                     [(split.name, k, p, role) for k, (tr, va) in split.folds.items()
                      for role, ids in (("train", tr), ("val", va)) for p in ids])


def _write_bags(con, plan: BagPlan, summary_file: str | None, batch_id: str,  # type: ignore[no-untyped-def]
                request: IngestRequest) -> None:
    if plan.new_slide_rows:
        _insert_rows(con, "slides", SLIDE_COLUMNS, [(*row, batch_id) for row in plan.new_slide_rows])
    for row in plan.updated_slide_rows:
        slide_id, *rest = row
        con.execute("UPDATE slides SET patient_id = ?, cohort = ?, feature_path = ?, sha256 = ?, "
                    "n_patches = ?, feature_dim = ?, encoder = ?, file_size = ?, file_mtime = ?, "
                    "hash_algorithm = ?, provenance = ?, batch_id = ? WHERE slide_id = ?",
                    [*rest, batch_id, slide_id])
    if summary_file:
        _insert_rows(con, "slide_summaries",
                     ["slide_id", "sha256", "k", "seed", "file", "row_index"],
                     [(rec.slide_id, rec.content_hash, request.k, request.seed, summary_file, i)
                      for i, rec in enumerate(plan.records)])


def _inputs(request: IngestRequest) -> dict[str, object]:
    files = [t.source for t in request.tables] + [x for t in request.tables for x in t.extra_sources]
    files += [g.source for g in request.gene_groups]
    return {
        "files": {str(f): sha256_file(f) for f in files if Path(f).is_file()},
        "split_dirs": [str(s.source) for s in request.split_sets],
        "bag_dirs": [str(d) for d in request.bag_dirs],
        "k": request.k, "seed": request.seed, "encoder": request.encoder,
        "executor": request.executor or "local",
    }


def _counts(report: IngestReport) -> dict[str, object]:
    return {"new_patients": report.new_patients, "updated_patients": len(report.updated_patients),
            "new_slides": report.new_slides, "bags_registered": report.bags_registered,
            "new_outcomes": report.new_outcomes,
            "gene_group_sets": report.new_gene_group_sets, "split_sets": report.new_split_sets}

