"""Endpoints in the models layer: CohortData by endpoint, the CV runner scores the chosen
endpoint and names it in the run's identity, a version records the endpoint it fits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from casegraph.errors import InputError
from casegraph.ingest.outcomes import OutcomeRow
from casegraph.ingest.pipeline import IngestRequest, ingest
from casegraph.ingest.store import Store
from casegraph.ingest.tables import CohortTable
from casegraph.models.cv import CVConfig, run_cv, stored_folds
from casegraph.models.data import CohortData
from casegraph.models.results import ResultStore
from casegraph.models.versioning import train_version
from tests.models.synthetic import planted_cohort, write_to_store

N = 36


def _dss(data: CohortData) -> tuple[np.ndarray, np.ndarray]:
    """A DSS unlike OS: half the times, and events only where OS had one and i is even
    (every fourth patient has no DSS value at all)."""
    time = data.target.time * 0.5
    event = data.target.event & (np.arange(len(data)) % 2 == 0)
    return time, event


@pytest.fixture
def endpoint_store(tmp_path: Path) -> Iterator[Store]:
    data = planted_cohort(N, seed=3)
    store = Store.open(tmp_path / "store")
    write_to_store(store, data)
    time, event = _dss(data)
    rows = [OutcomeRow(p, "DSS", float(t), bool(e))
            for i, (p, t, e) in enumerate(zip(data.patient_ids, time, event, strict=True))
            if i % 4 != 3]
    table = CohortTable(  # the same patients again, now with a DSS column's rows
        source=Path("dss.csv"), cohort="synth", patient_ids=list(data.patient_ids),
        time=data.target.time, event=data.target.event, attributes=[{} for _ in range(N)],
        slides=[], feature_names=[], feature_genes=[], feature_modalities=[],
        genomics=np.zeros((N, 0), np.float32), outcomes=rows)
    report = ingest(store, IngestRequest(tables=[table]))
    assert report.new_patients == 0 and report.new_outcomes == len(rows)
    yield store
    store.close()


def test_cohort_data_by_endpoint_has_that_endpoints_targets(endpoint_store: Store) -> None:
    os_data = CohortData.from_store(endpoint_store, "synth")
    dss_data = CohortData.from_store(endpoint_store, "synth", endpoint="dss")
    assert os_data.endpoint == "OS" and dss_data.endpoint == "DSS"
    assert len(os_data) == N and len(dss_data) == N - N // 4  # no DSS value: left out
    time, event = _dss(os_data)
    kept = [i for i in range(N) if i % 4 != 3]
    assert dss_data.patient_ids == [os_data.patient_ids[i] for i in kept]
    np.testing.assert_allclose(dss_data.target.time, time[kept])
    np.testing.assert_array_equal(dss_data.target.event, event[kept])
    assert dss_data.target.event.sum() < os_data.select(dss_data.patient_ids).target.event.sum()
    same = os_data.select(dss_data.patient_ids).with_endpoint(endpoint_store, "DSS", "synth")
    np.testing.assert_array_equal(same.target.time, dss_data.target.time)
    assert same.genomics_flat().tobytes() == dss_data.genomics_flat().tobytes()


def test_a_cv_run_scores_the_chosen_endpoint_under_its_own_id(endpoint_store: Store) -> None:
    results = ResultStore(endpoint_store)
    run_ids = {}
    for endpoint in ("OS", "DSS"):
        data = CohortData.from_store(endpoint_store, "synth", endpoint=endpoint)
        folds = stored_folds(data, endpoint_store, "mcat")
        config = CVConfig(model="coxnet", cohort="synth", endpoint=endpoint)
        out = run_cv(data, config, folds, results=results)
        assert len(out) == 3
        run_ids[endpoint] = config.run_id()
        stored = results.predictions(config.run_id()).set_index("patient_id")
        truth = dict(zip(data.patient_ids, data.target.time, strict=True))
        assert all(stored.loc[p, "time"] == truth[p] for p in stored.index)
    assert run_ids["OS"] != run_ids["DSS"]
    summary = results.summary().set_index("run_id")
    assert summary.loc[run_ids["DSS"], "options"].endswith("endpoint=DSS")
    assert "endpoint" not in summary.loc[run_ids["OS"], "options"]


def test_the_endpoint_is_part_of_the_run_id_even_on_equal_data() -> None:
    data = planted_cohort(12, seed=1)
    from casegraph.models.cv import kfold_folds

    folds = kfold_folds(data, 3)
    os_config = CVConfig(model="snn", cohort="c").for_data(data, folds)
    dss_config = replace(os_config, endpoint="DSS")
    assert os_config.run_id() != dss_config.run_id()
    with pytest.raises(InputError, match="configured for endpoint DSS but the data hold OS"):
        run_cv(data, replace(dss_config), folds)


def test_a_missing_endpoint_names_the_cohort_and_its_endpoints(endpoint_store: Store) -> None:
    with pytest.raises(InputError, match=r"cohort 'synth' has no PFI outcomes \(it has: OS, "
                                         r"DSS\)"):
        CohortData.from_store(endpoint_store, "synth", endpoint="PFI")


def test_a_version_records_and_fits_its_endpoint(endpoint_store: Store) -> None:
    os_version = train_version(endpoint_store, "synth", model="coxnet", fold=0)
    dss_version = train_version(endpoint_store, "synth", model="coxnet", fold=0, endpoint="DSS")
    assert endpoint_store.versions.get(os_version).config["endpoint"] == "OS"
    dss = endpoint_store.versions.get(dss_version)
    assert dss.config["endpoint"] == "DSS"
    fitted = set(endpoint_store.versions.fitted_on(dss_version))
    with_dss = set(endpoint_store.outcomes.of("DSS", "synth")["patient_id"])
    assert fitted and fitted <= with_dss
    assert len(fitted) < len(endpoint_store.versions.fitted_on(os_version))
    with pytest.raises(InputError, match="msrl versions are trained on OS only"):
        train_version(endpoint_store, "synth", model="msrl", fold=0, endpoint="DSS")
