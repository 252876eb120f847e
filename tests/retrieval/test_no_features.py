"""Patients whose slides are in the table but have no feature file (common in real TCGA
tables): a clear 400 / one-line CLI error, histology ``absent``, never a 500 or a crash."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from casegraph.errors import InputError
from casegraph.ingest.store import Store
from casegraph.retrieval.query import QueryEngine, QueryOptions
from tests.retrieval.conftest import NO_FEATURE_PATIENTS, LiveServer, copy_store

CASEGRAPH = str(Path(sys.executable).with_name("casegraph"))


@pytest.fixture
def gappy_store(gappy_store_dir: Path, tmp_path: Path) -> Iterator[Store]:
    store = Store.open(copy_store(gappy_store_dir, tmp_path / "store"), read_only=True)
    yield store
    store.close()


def test_catalog_says_histology_absent_without_a_feature_file(gappy_store: Store) -> None:
    table = QueryEngine(gappy_store).catalog.table
    for patient in NO_FEATURE_PATIENTS:
        assert table.at[patient, "n_slides"] == 1 and table.at[patient, "histology"] == "absent"
    # A00 keeps one of its two slides: still simulated histology, from that slide alone
    assert table.at["A00", "n_featured"] == 1 and table.at["A00", "histology"] == "simulated"


@pytest.mark.parametrize("patient", NO_FEATURE_PATIENTS)
@pytest.mark.parametrize("method", ["auto", "knn"])
def test_query_with_a_featureless_patient_is_an_input_error(gappy_store: Store, patient: str,
                                                            method: str) -> None:
    engine = QueryEngine(gappy_store)
    with pytest.raises(InputError, match=f"patient '{patient}' has no patch features.*"
                                         "ingest its bags"):
        engine.similar(patient, QueryOptions(k=3, method=method))


def test_featureless_patients_are_no_histology_neighbours(gappy_store: Store) -> None:
    engine = QueryEngine(gappy_store)
    partial = engine.similar("A00", QueryOptions(k=38, require=("histology",)))
    assert [i.name for i in partial.inputs if i.modality == "histology"] == ["A00-S1"]
    ids = {n.patient_id for n in partial.neighbours}
    assert not ids & set(NO_FEATURE_PATIENTS)
    assert engine.catalog.record("A05").histology == "absent"


@pytest.mark.parametrize("patient", NO_FEATURE_PATIENTS)
def test_service_answers_400_for_featureless_patients(gappy_server: LiveServer,
                                                      patient: str) -> None:
    url, headers = gappy_server.url, gappy_server.headers
    similar = httpx.get(f"{url}/patients/{patient}/similar", headers=headers)
    posted = httpx.post(f"{url}/query", headers=headers, data={"patient_id": patient})
    for response in (similar, posted):
        assert response.status_code == 400, response.text
        assert "has no patch features" in response.json()["detail"]
    record = httpx.get(f"{url}/patients/{patient}", headers=headers).json()
    assert record["histology"] == "absent"


def test_cli_query_prints_one_line_for_a_featureless_patient(gappy_store: Store) -> None:
    root = str(gappy_store.root)
    gappy_store.close()
    done = subprocess.run([CASEGRAPH, "query", "--store", root, "--patient", "A05"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "patient 'A05' has no patch features" in lines[0]
    assert "ingest its bags" in lines[0] and "Traceback" not in done.stderr
