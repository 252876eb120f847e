"""Endpoints: the one owner of the ``outcomes`` table (``store.outcomes``).

A cohort's overall survival (OS) is the ``patients`` table's ``time`` / ``event`` (one
copy: what every reader and ``--update`` already use). The ``outcomes`` table holds the
other endpoints a table carried at ingest, one row per (patient, endpoint):

- ``outcomes``: patient_id, endpoint (``DSS``, ``PFI``, ``DFI``), time (months), event
  (True = the endpoint's event observed), batch_id.

A store from before this table (or one whose tables had no such columns) has no rows:
every cohort then has OS only, read from ``patients`` as before. A read-only store whose
file predates the table reads as having no rows.

Classification labels are not copied here: every non-feature column of a table is already
kept in the patient's ``attributes`` (JSON) at ingest; :meth:`Outcomes.labels` reads one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from casegraph.errors import InputError

if TYPE_CHECKING:
    import duckdb

    from casegraph.ingest.store import Store

OS = "OS"
ENDPOINTS = (OS, "DSS", "PFI", "DFI")
STORED_ENDPOINTS = ENDPOINTS[1:]  # OS lives in ``patients``
OUTCOME_COLUMNS = ["patient_id", "endpoint", "time", "event", "batch_id"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    patient_id VARCHAR NOT NULL, endpoint VARCHAR NOT NULL, time DOUBLE NOT NULL,
    event BOOLEAN NOT NULL, batch_id VARCHAR, PRIMARY KEY (patient_id, endpoint));
"""


@dataclass(frozen=True)
class OutcomeRow:
    """One (patient, endpoint) outcome: time in months, event True = observed."""

    patient_id: str
    endpoint: str
    time: float
    event: bool


@dataclass
class OutcomePlan:
    """What an ingest batch writes: new or changed rows, and which patients changed."""

    rows: list[OutcomeRow]
    updated: list[str]


def check_endpoint(endpoint: str) -> str:
    """``endpoint`` upper-cased, or an InputError listing the known ones."""
    name = str(endpoint).upper()
    if name not in ENDPOINTS:
        raise InputError(f"unknown endpoint {endpoint!r}; choose among: {', '.join(ENDPOINTS)}",
                         column="--endpoint")
    return name


class Outcomes:
    """The ``outcomes`` table of one open store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def exist(self) -> bool:
        """False for a read-only store whose file predates the table."""
        row = self._store.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'outcomes'"
        ).fetchone()
        return bool(row and row[0])

    # ------------------------------------------------------------------ reads
    def endpoints(self) -> dict[str, list[str]]:
        """Cohort -> its endpoints (OS first, then those with at least one row)."""
        cohorts = self._store.con.execute(
            "SELECT DISTINCT cohort FROM patients ORDER BY cohort").fetchall()
        out = {str(c): [OS] for (c,) in cohorts}
        if not self.exist():
            return out
        rows = self._store.con.execute(
            "SELECT DISTINCT p.cohort, o.endpoint FROM outcomes o JOIN patients p "
            "USING (patient_id)").fetchall()
        for cohort, endpoint in rows:
            out.setdefault(str(cohort), [OS]).append(str(endpoint))
        for cohort, names in out.items():
            out[cohort] = sorted(names, key=ENDPOINTS.index)
        return out

    def of(self, endpoint: str, cohort: str | None = None) -> pd.DataFrame:
        """Columns patient_id, cohort, time, event of the cohort's (or every) patient with a
        value for ``endpoint``, by patient_id; OS for every patient. An InputError naming
        the cohort and its endpoints when none of its patients has ``endpoint``."""
        endpoint = check_endpoint(endpoint)
        where, params = ("WHERE p.cohort = ?", [cohort]) if cohort else ("", [])
        if endpoint == OS:
            frame = self._store.query_df(
                f"SELECT p.patient_id, p.cohort, p.time, p.event FROM patients p {where} "
                "ORDER BY p.patient_id", params)
        elif not self.exist():
            frame = pd.DataFrame(columns=["patient_id", "cohort", "time", "event"])
        else:
            joined = "WHERE o.endpoint = ?" + (" AND p.cohort = ?" if cohort else "")
            frame = self._store.query_df(
                "SELECT p.patient_id, p.cohort, o.time, o.event FROM outcomes o JOIN patients p "
                f"USING (patient_id) {joined} ORDER BY p.patient_id", [endpoint, *params])
        if frame.empty and endpoint != OS:
            self._refuse_missing(endpoint, cohort)
        return frame

    def _refuse_missing(self, endpoint: str, cohort: str | None) -> None:
        known = self.endpoints()
        if cohort is None:
            raise InputError(f"no patient in the store has endpoint {endpoint}",
                             column="--endpoint", fix="ingest a table with its columns")
        has = ", ".join(known.get(cohort, [OS]))
        raise InputError(f"cohort {cohort!r} has no {endpoint} outcomes (it has: {has})",
                         column="--endpoint",
                         fix=f"choose one of {has}, or ingest a table with {endpoint} columns")

    def stored(self, patient_ids: Sequence[str]) -> dict[tuple[str, str], tuple[float, bool]]:
        """(patient, endpoint) -> (time, event) of the stored rows of these patients."""
        if not self.exist() or not patient_ids:
            return {}
        rows = self._store.con.execute(
            "SELECT patient_id, endpoint, time, event FROM outcomes WHERE patient_id IN "
            "(SELECT unnest(?::VARCHAR[]))", [list(patient_ids)]).fetchall()
        return {(str(p), str(e)): (float(t), bool(v)) for p, e, t, v in rows}

    def labels(self, column: str, cohort: str | None = None) -> pd.DataFrame:
        """Columns patient_id, cohort, label (text) of every patient whose ``attributes``
        hold a non-null ``column``, by patient_id; an InputError naming the columns the
        cohort's patients have when none holds it."""
        where, params = ("WHERE cohort = ?", [cohort]) if cohort else ("", [])
        frame = self._store.query_df(
            "SELECT patient_id, cohort, json_extract_string(attributes, ?) AS label, "
            f"attributes FROM patients {where} ORDER BY patient_id", ["$." + _json_key(column),
                                                                      *params])
        known = frame[frame["label"].notna()]
        if known.empty:
            import json

            names = sorted({k for a in frame["attributes"].dropna() for k in json.loads(a)})
            raise InputError(f"no patient of cohort {cohort or 'any'} has a value in column "
                             f"{column!r}", column="--label",
                             fix=f"table columns kept for it: {', '.join(names) or 'none'}")
        return known[["patient_id", "cohort", "label"]].reset_index(drop=True)

    # ------------------------------------------------------------------ writes
    def plan(self, patient_ids: Sequence[str], rows: Sequence[OutcomeRow], update: bool,
             source: object) -> OutcomePlan:
        """The rows of ``rows`` that are new or changed. A changed stored value is an
        InputError naming the patient and endpoint unless ``update``."""
        stored = self.stored(patient_ids)
        new: list[OutcomeRow] = []
        changed: dict[str, str] = {}
        for row in rows:
            old = stored.get((row.patient_id, row.endpoint))
            if old == (row.time, row.event):
                continue
            if old is not None:
                changed.setdefault(row.patient_id, f"{row.endpoint} {old} -> "
                                                   f"({row.time}, {row.event})")
            new.append(row)
        if changed and not update:
            pid, what = next(iter(sorted(changed.items())))
            raise InputError(f"{len(changed)} patient(s) already in the store have different "
                             f"endpoint values, e.g. {pid!r}: {what}", file=str(source),
                             row=pid, fix="pass --update to overwrite them (recorded in the "
                             "batch)")
        return OutcomePlan(rows=new, updated=sorted(changed))

    @staticmethod
    def write(con: duckdb.DuckDBPyConnection, plan: OutcomePlan, batch_id: str) -> None:
        """Insert (or replace) the plan's rows inside the caller's transaction."""
        if not plan.rows:
            return
        frame = pd.DataFrame(
            [(r.patient_id, r.endpoint, float(r.time), bool(r.event), batch_id)
             for r in plan.rows], columns=OUTCOME_COLUMNS)
        frame["event"] = frame["event"].astype(np.bool_)
        con.register("_outcome_rows", frame)
        try:
            con.execute("INSERT OR REPLACE INTO outcomes SELECT patient_id, endpoint, time, "
                        "event, batch_id FROM _outcome_rows")
        finally:
            con.unregister("_outcome_rows")


def _json_key(column: str) -> str:
    """A JSON path key for ``column`` (quoted, so any column name is one key, never a
    path expression: the value goes in as a parameter)."""
    return '"' + column.replace("\\", "\\\\").replace('"', '\\"') + '"'
