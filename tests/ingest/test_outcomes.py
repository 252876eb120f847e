"""Endpoints at ingest: DSS / PFI / DFI columns become outcome rows; OS stays in patients."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from casegraph.errors import InputError
from casegraph.ingest.info import store_summary
from casegraph.ingest.pipeline import IngestRequest, ingest
from casegraph.ingest.store import Store
from casegraph.ingest.tables import ColumnMapping, read_mcat_table

SURVPATH = """case_id,slide_id,survival_months,censorship,survival_months_dss,censorship_dss,survival_months_pfi,censorship_pfi,age,A_rnaseq
P1,P1-A.svs,10.0,0,10.0,0,4.0,0,60,0.1
P1,P1-B.svs,10.0,0,10.0,0,4.0,0,60,0.1
P2,P2-A.svs,20.0,1,20.0,1,8.0,0,55,0.2
P3,P3-A.svs,30.0,0,30.0,1,30.0,1,70,0.3
"""

CDR = """bcr_patient_barcode,OS,OS.time,DSS,DSS.time,PFI,PFI.time,DFI,DFI.time
C1,1,300,1,300,1,90,,
C2,0,600,0,600,1,150,0,600
C3,1,900,0,900,0,900,1,450
"""
CDR_MAPPING = ColumnMapping(patient="bcr_patient_barcode", time="OS.time", event="OS",
                            censorship=None, slide=None)


def _write(tmp_path: Path, text: str, name: str = "tcga_tiny_all_clean.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_survpath_columns_become_dss_and_pfi_rows(store: Store, tmp_path: Path) -> None:
    table = read_mcat_table(_write(tmp_path, SURVPATH), "tiny")
    assert "survival_months_dss" not in table.attributes[0]
    assert table.attributes[0] == {"age": 60}
    report = ingest(store, IngestRequest(tables=[table]))
    assert report.new_outcomes == 6
    assert store.outcomes.endpoints() == {"tiny": ["OS", "DSS", "PFI"]}
    dss = store.outcomes.of("DSS", "tiny")
    assert list(dss["patient_id"]) == ["P1", "P2", "P3"]
    assert list(dss["event"]) == [True, False, False]  # censorship_dss 1 = censored
    pfi = store.outcomes.of("pfi", "tiny")
    assert list(pfi["time"]) == [4.0, 8.0, 30.0] and list(pfi["event"]) == [True, True, False]
    os_ = store.outcomes.of("OS", "tiny")
    assert list(os_["time"]) == [10.0, 20.0, 30.0] and list(os_["event"]) == [True, False, True]
    assert store_summary(store).cohorts[0].endpoints == ["OS", "DSS", "PFI"]


def test_repeat_ingest_writes_nothing_and_a_change_needs_update(store: Store,
                                                                 tmp_path: Path) -> None:
    ingest(store, IngestRequest(tables=[read_mcat_table(_write(tmp_path, SURVPATH), "tiny")]))
    again = ingest(store, IngestRequest(tables=[read_mcat_table(_write(tmp_path, SURVPATH),
                                                                "tiny")]))
    assert not again.changed and again.new_outcomes == 0
    changed = SURVPATH.replace("P3,P3-A.svs,30.0,0,30.0,1,30.0,1", "P3,P3-A.svs,30.0,0,25.0,0,30.0,1")
    table = read_mcat_table(_write(tmp_path, changed), "tiny")
    with pytest.raises(InputError, match=r"different endpoint values, e.g. 'P3': DSS"):
        ingest(store, IngestRequest(tables=[table]))
    assert store.outcomes.of("DSS", "tiny")["time"].tolist() == [10.0, 20.0, 30.0]
    report = ingest(store, IngestRequest(tables=[table], update=True))
    assert report.updated_patients == ["P3"]
    row = store.outcomes.of("DSS", "tiny").iloc[2]
    assert (row["time"], bool(row["event"])) == (25.0, True)


def test_tcga_cdr_columns_in_days_become_months(store: Store, tmp_path: Path) -> None:
    table = read_mcat_table(_write(tmp_path, CDR, "cdr.csv"), "cdr", mapping=CDR_MAPPING)
    ingest(store, IngestRequest(tables=[table]))
    assert store.outcomes.endpoints() == {"cdr": ["OS", "DSS", "PFI", "DFI"]}
    pfi = store.outcomes.of("PFI", "cdr")
    assert pfi["time"].tolist() == [3.0, 5.0, 30.0]  # days / 30
    dfi = store.outcomes.of("DFI", "cdr")  # C1's DFI is empty: no row
    assert dfi["patient_id"].tolist() == ["C2", "C3"] and dfi["event"].tolist() == [False, True]


def test_an_existing_store_keeps_os_and_gains_endpoints_on_reingest(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root) as store:  # a store as an older casegraph left it: no outcomes
        ingest(store, IngestRequest(tables=[read_mcat_table(_write(tmp_path, SURVPATH), "tiny")]))
        store.con.execute("DROP TABLE outcomes")
    with Store.open(root, read_only=True) as old:
        assert old.outcomes.endpoints() == {"tiny": ["OS"]}
        assert len(old.outcomes.of("OS", "tiny")) == 3
    with Store.open(root) as store:  # the migration creates the table; re-ingest fills it
        report = ingest(store, IngestRequest(tables=[read_mcat_table(_write(tmp_path, SURVPATH),
                                                                     "tiny")]))
        assert report.new_patients == 0 and report.new_outcomes == 6
        assert store.outcomes.endpoints()["tiny"] == ["OS", "DSS", "PFI"]


def test_a_missing_endpoint_names_the_cohort_and_what_it_has(store: Store,
                                                             tmp_path: Path) -> None:
    ingest(store, IngestRequest(tables=[read_mcat_table(_write(tmp_path, SURVPATH), "tiny")]))
    with pytest.raises(InputError, match=r"cohort 'tiny' has no DFI outcomes \(it has: OS, DSS, "
                                         r"PFI\)"):
        store.outcomes.of("DFI", "tiny")
    with pytest.raises(InputError, match="unknown endpoint 'EFS'"):
        store.outcomes.of("EFS", "tiny")


@pytest.mark.parametrize(("old", "new", "message"), [
    ("P2,P2-A.svs,20.0,1,20.0,1", "P2,P2-A.svs,20.0,1,20.0,",
     r"row 4, column 'censorship_dss': DSS: 'survival_months_dss' has a value but "
     r"'censorship_dss' is empty"),
    ("P2,P2-A.svs,20.0,1,20.0,1", "P2,P2-A.svs,20.0,1,-2.0,1",
     r"row 4, column 'survival_months_dss': DSS time must be finite, >= 0"),
    ("P2,P2-A.svs,20.0,1,20.0,1", "P2,P2-A.svs,20.0,1,20.0,2",
     r"row 4, column 'censorship_dss': censorship_dss must be 0 or 1"),
    ("P2,P2-A.svs,20.0,1,20.0,1", "P2,P2-A.svs,20.0,1,soon,1", r"not a number: 'soon'"),
    ("P1,P1-B.svs,10.0,0,10.0,0", "P1,P1-B.svs,10.0,0,11.0,0",
     r"patient 'P1' has conflicting DSS values \(rows 2 and 3\)"),
])
def test_bad_endpoint_values_are_one_line_errors(tmp_path: Path, old: str, new: str,
                                                 message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        read_mcat_table(_write(tmp_path, SURVPATH.replace(old, new)), "tiny")
    assert "\n" not in str(info.value) and "fix:" in str(info.value)


def test_a_time_column_without_its_event_column_is_refused(tmp_path: Path) -> None:
    text = SURVPATH.replace(",censorship_pfi", ",pfi_flag")
    with pytest.raises(InputError, match=r"PFI time column 'survival_months_pfi' has no event "
                                         r"column 'censorship_pfi'"):
        read_mcat_table(_write(tmp_path, text), "tiny")
    cdr = CDR.replace(",DSS.time", ",DSS_days")
    with pytest.raises(InputError, match=r"DSS event column 'DSS' has no time column 'DSS.time'"):
        read_mcat_table(_write(tmp_path, cdr, "cdr.csv"), "cdr", mapping=CDR_MAPPING)


def test_a_failed_outcome_write_leaves_the_store_as_it_was(store: Store, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    from casegraph.ingest import outcomes

    def broken(con: duckdb.DuckDBPyConnection, plan: object, batch_id: str) -> None:
        raise duckdb.IOException("disk full")

    monkeypatch.setattr(outcomes.Outcomes, "write", staticmethod(broken))
    with pytest.raises(duckdb.IOException):
        ingest(store, IngestRequest(tables=[read_mcat_table(_write(tmp_path, SURVPATH),
                                                            "tiny")]))
    assert store.counts()["patients"] == 0 and store.outcomes.endpoints() == {}


def test_labels_read_one_kept_column_by_name_never_as_a_path(store: Store,
                                                             tmp_path: Path) -> None:
    text = SURVPATH.replace(",age,", ",stage \"x\".y,").replace(",60,", ",II,").replace(
        ",55,", ",III,")
    ingest(store, IngestRequest(tables=[read_mcat_table(_write(tmp_path, text), "tiny")]))
    labels = store.outcomes.labels('stage "x".y', "tiny")
    assert labels["label"].tolist() == ["II", "III", "70"]
    with pytest.raises(InputError, match=r"no patient of cohort tiny has a value in column "
                                         r"'stage'.*stage \"x\".y"):
        store.outcomes.labels("stage", "tiny")


def test_the_shared_survpath_tables_carry_dss_and_pfi(shared_data: Path, store: Store) -> None:
    from casegraph.ingest.tables import read_survpath

    folder = shared_data / "tcga" / "survpath" / "blca"
    table = read_survpath(folder / "labels.csv", folder / "rna_clean.csv", "blca")
    ingest(store, IngestRequest(tables=[table]))
    assert store.outcomes.endpoints() == {"blca": ["OS", "DSS", "PFI"]}
    os_, dss = store.outcomes.of("OS", "blca"), store.outcomes.of("DSS", "blca")
    assert len(os_) == len(dss) == table.n_patients == 359
    assert dss["event"].sum() < os_["event"].sum()  # other causes of death are censored
