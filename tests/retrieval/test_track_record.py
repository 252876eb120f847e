"""Every WSI-only answer carries its track record, and ``method=auto`` chooses by it.

One tiny store (cohort alpha, 20 patients, seeded 5-fold CV) with an MSRL version whose
CV run and mean-pooling ABMIL baseline ``versions track-record --run-cv`` ran and
recorded, an attention ABMIL version (a non-MSRL WSI-only answer) recorded the same way, a
neighbour_km run (the embedding-knn answer, cross-validated), and an ``msrl_h`` version
nobody cross-validated.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from casegraph.api import cross_validate
from casegraph.api import query as cg_query
from casegraph.cli import app
from casegraph.ingest.cv_results import FoldRow
from casegraph.ingest.pipeline import IngestRequest, ingest
from casegraph.ingest.store import Store
from casegraph.ingest.tables import read_mcat_table
from casegraph.models.data import CohortData
from casegraph.models.msrl import MSRLModel
from casegraph.models.versioning import train_version
from casegraph.retrieval.query import QueryEngine, QueryOptions
from casegraph.retrieval.track_record import RunLookup, link_version, version_record
from tests.retrieval.conftest import _write_cohort, build_store, serve

FAST = {"dim": 16, "proj_dim": 8, "batch_size": 8, "pretrain_steps": 5, "epochs": 2}
BASELINE = {"epochs": 2, "hidden": 16}
RECORD_KEYS = {"method", "version", "cohort", "folds", "harrell_c", "uno_c", "ibs",
               "baseline", "calibration"}


def _version(store: Store, variant: str) -> str:
    data = CohortData.from_store(store, "alpha", require_slides=True)
    model = MSRLModel(variant, **FAST).fit(data.subset(range(14)), data.subset(range(14, 20)))
    return model.save_version(store, "alpha")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.set_num_threads(1)
    root = build_store(tmp_path_factory.mktemp("track"))
    with Store.open(root) as store:
        msrl = _version(store, "msrl")
        report = link_version(store, msrl, run_cv=True, baseline_options=BASELINE)
        abmil = train_version(store, "alpha", "abmil", fold=None, **BASELINE)
        link_version(store, abmil, run_cv=True, baseline_options=BASELINE)
        knn = cross_validate(store, "neighbour_km", "alpha", splits="k-fold", k=3).run_id
        unvalidated = _version(store, "msrl_h")
    return {"root": root, "msrl": msrl, "report": report, "knn": knn, "msrl_h": unvalidated,
            "abmil": abmil}


@pytest.fixture
def store(built: dict[str, Any], tmp_path: Path) -> Iterator[Store]:
    with Store.open(shutil.copytree(built["root"], tmp_path / "store")) as opened:
        yield opened


def _stored(store: Store, run_id: str) -> dict[str, tuple[float, float, int]]:
    folds = store.cv_results.fold_results(run_id)
    out = {}
    for key, column in (("harrell_c", "c_index"), ("uno_c", "c_index_uno"), ("ibs", "ibs")):
        values = folds[column].dropna().to_numpy(dtype=float)
        out[key] = (float(values.mean()), float(values.std()), int(values.size))
    return out


def _same(summary: Any, stored: tuple[float, float, int]) -> bool:
    return (summary.mean == pytest.approx(stored[0]) and summary.sd == pytest.approx(stored[1])
            and summary.n == stored[2])


def test_the_answer_carries_the_stored_fold_numbers(store: Store, built: dict) -> None:
    method_run = store.cv_results.version_links(built["msrl"])["method"]
    baseline_run = store.cv_results.version_links(built["msrl"])["baseline"]
    result = QueryEngine(store).query((), "A01", QueryOptions(k=3, model_version=built["msrl"]))
    record = result.track_record
    assert record is not None and record.run_id == method_run and record.linked == "recorded"
    assert (record.method, record.version, record.cohort, record.folds) == (
        "msrl", built["msrl"], "alpha", "k-fold, 5 folds")
    stored = _stored(store, method_run)
    assert all(_same(getattr(record, k), stored[k]) for k in ("harrell_c", "uno_c", "ibs"))
    assert record.baseline is not None and record.baseline.run_id == baseline_run
    assert record.baseline.method == "abmil[pooling=mean]"
    assert _same(record.baseline.harrell_c, _stored(store, baseline_run)["harrell_c"])
    calibration = record.calibration
    assert calibration is not None and calibration.times == result.survival.times
    assert calibration.n_neighbours == 3 and "95% band" in calibration.note
    assert all(lo <= s <= hi for lo, s, hi in zip(calibration.lower, calibration.neighbourhood_km,
                                                  calibration.upper, strict=True))


def test_msrl_ibs_is_finite(store: Store, built: dict) -> None:
    """Issue 16: IBS was NaN for every MSRL run."""
    run = store.cv_results.version_links(built["msrl"])["method"]
    ibs = store.cv_results.fold_results(run)["ibs"].to_numpy(dtype=float)
    assert len(ibs) == 5 and np.isfinite(ibs).all()


def test_auto_picks_the_better_validated_method_and_says_why(store: Store,
                                                             built: dict) -> None:
    result = QueryEngine(store).query((), "A01", QueryOptions(k=3))
    choice = result.method_choice
    assert choice is not None and choice.cohort == "alpha"
    by_key = {(c.method, c.version): c for c in choice.candidates}
    assert list(by_key) == [("msrl-gsl", built["msrl_h"]), ("msrl-gsl", built["msrl"]),
                            ("wsi-model", built["abmil"]), ("embedding-knn", None)]
    assert by_key[("msrl-gsl", built["msrl_h"])].harrell_c is None  # never validated
    scored = {key: c.harrell_c.mean for key, c in by_key.items() if c.harrell_c}
    assert len(scored) == 3
    best = max(scored, key=lambda key: scored[key])
    assert sorted(scored.values())[-2] != pytest.approx(scored[best], abs=5e-4)  # no tie
    assert (choice.method, choice.version) == best
    assert (result.method, result.model_version) == best
    assert "best validated Harrell C on cohort alpha" in choice.reason
    assert f"without a finished run: msrl-gsl ({built['msrl_h']})" in choice.reason
    assert result.track_record is not None
    assert result.track_record.run_id == by_key[best].run_id


def _validates_best(store: Store, run_id: str) -> None:
    """Rewrite the run's folds with C = 0.99: a store where this run validated best."""
    predictions = store.cv_results.predictions(run_id, with_survival=True)
    for row in store.cv_results.fold_results(run_id).itertuples():
        metrics = {"c_index": 0.99, "c_index_uno": row.c_index_uno, "ibs": row.ibs}
        store.cv_results.save_fold(
            FoldRow(run_id, int(row.fold), int(row.n_train), int(row.n_eval), metrics, 0.0),
            predictions[predictions["fold"] == row.fold])


def test_a_wsi_model_answers_with_its_prediction_and_knn_neighbours(store: Store,
                                                                     built: dict) -> None:
    abmil_run = store.cv_results.version_links(built["abmil"])["method"]
    _validates_best(store, abmil_run)
    bag = built["root"].parent / "data" / "bags_A" / "A01-S1.h5"
    result = QueryEngine(store).query([bag], None, QueryOptions(k=3, cohorts=("alpha",)))
    assert result.method_choice is not None and result.method_choice.method == "wsi-model"
    assert (result.method, result.model_version) == ("wsi-model", built["abmil"])
    assert result.track_record is not None and result.track_record.run_id == abmil_run
    assert result.track_record.harrell_c is not None
    assert result.track_record.harrell_c.mean == pytest.approx(0.99)
    assert len(result.neighbours) == 3 and all(n.cohort == "alpha" for n in result.neighbours)
    assert result.survival.times == sorted(result.survival.times)
    assert len(result.survival.times) == len(result.survival.survival) == 4
    assert result.notes[0].startswith(f"risk and survival from model version {built['abmil']}")


def test_a_tie_falls_back_to_the_default_and_says_so(store: Store, built: dict) -> None:
    """The MSRL run and the neighbour_km run validated equally well: a tie."""
    _validates_best(store, store.cv_results.version_links(built["msrl"])["method"])
    _validates_best(store, built["knn"])
    result = QueryEngine(store).query((), "A01", QueryOptions(k=3))
    assert result.method_choice is not None and "tie on validated Harrell C" in \
        result.method_choice.reason
    # the order among the tied: MSRL versions newest first, other versions, embedding-knn
    assert (result.method, result.model_version) == ("msrl-gsl", built["msrl"])


def test_a_version_without_runs_says_so_in_one_line(store: Store, built: dict) -> None:
    version = built["msrl_h"]
    result = QueryEngine(store).query((), "A01", QueryOptions(k=3, method="msrl",
                                                              model_version=version))
    record = result.track_record
    assert record is not None and record.harrell_c is None and record.run_id is None
    assert record.note == ("no validated track record: run `casegraph versions track-record "
                           f"{version} --run-cv`")
    assert result.method_choice is None  # a named version: nothing was chosen


def test_a_run_found_by_configuration_is_matched_then_recorded(store: Store,
                                                               built: dict) -> None:
    """Without the recorded link the same run is found by model, options, cohort and
    folds; `track-record` (no --run-cv) checks its data fingerprint and records it."""
    method_run = built["report"].record.run_id
    fresh = _version(store, "msrl")  # the same options: the same run backs it
    assert version_record(RunLookup(store), fresh).linked == "matched"
    report = link_version(store, fresh)
    assert report.record.run_id == method_run and report.record.linked == "recorded"
    assert any("matches the version and the data" in line for line in report.lines)


def test_a_run_on_data_that_changed_is_not_recorded(store: Store, built: dict,
                                                    tmp_path: Path) -> None:
    """Three more alpha patients: the run's data fingerprint no longer matches the cohort,
    so track-record records nothing (answers still show the run, found by configuration,
    as ``matched``)."""
    table = _write_cohort(tmp_path, "N", 3, genomics=True, offset=7)
    ingest(store, IngestRequest(tables=[read_mcat_table(table, "alpha")],
                                bag_dirs=[tmp_path / "bags_N"], encoder="simulator"))
    fresh = _version(store, "msrl")
    report = link_version(store, fresh)
    assert any("its data changed since" in line for line in report.lines), report.lines
    assert store.cv_results.version_links(fresh) == {}
    assert report.record.linked == "matched"


def test_the_python_api_answer_carries_it(store: Store, built: dict) -> None:
    result = cg_query(store, patient="A01", k=3, model_version=built["msrl"])
    assert result.track_record is not None and result.track_record.linked == "recorded"


def test_cli_track_record_and_query_json(built: dict, tmp_path: Path) -> None:
    root = shutil.copytree(built["root"], tmp_path / "store")
    runner = CliRunner()
    shown = runner.invoke(app, ["versions", "track-record", built["msrl"], "--store",
                                str(root), "--json"])
    assert shown.exit_code == 0, shown.output
    assert set(json.loads(shown.output)) >= RECORD_KEYS
    text = runner.invoke(app, ["versions", "track-record", built["msrl_h"], "--store",
                               str(root)])
    assert text.exit_code == 0, text.output
    assert f"no validated track record: run `casegraph versions track-record " \
           f"{built['msrl_h']} --run-cv`" in text.output
    queried = runner.invoke(app, ["query", "--patient", "A01", "--k", "3", "--store",
                                  str(root), "--json"])
    assert queried.exit_code == 0, queried.output
    answer = json.loads(queried.output)
    assert set(answer["track_record"]) >= RECORD_KEYS
    assert {"method", "reason", "candidates"} <= set(answer["method_choice"])
    printed = runner.invoke(app, ["query", "--patient", "A01", "--k", "3", "--store",
                                  str(root)])
    assert "method choice: auto:" in printed.output and "track record of" in printed.output


def test_rest_answers_carry_the_same_shape(built: dict, tmp_path: Path) -> None:
    root = shutil.copytree(built["root"], tmp_path / "store")
    bag = (built["root"].parent / "data" / "bags_A" / "A01-S1.h5").read_bytes()
    with serve(root) as server, httpx.Client(base_url=server.url, headers=server.headers,
                                              timeout=120) as client:
        similar = client.get("/patients/A01/similar", params={"k": 3})
        posted = client.post("/query", files=[("files", ("q.h5", bag))],
                             data={"k": "3", "method": "auto"})
        patient = client.post("/query", data={"k": "3", "patient_id": "A02"})
        stored_record = client.get(f"/versions/{built['msrl']}/track-record")
        missing = client.get("/versions/no-such-version/track-record")
    assert stored_record.status_code == 200, stored_record.text
    assert stored_record.json()["linked"] == "recorded"
    assert stored_record.json()["calibration"] is None and missing.status_code == 404
    for response in (similar, posted, patient):
        assert response.status_code == 200, response.text
        body = response.json()
        record = body["track_record"]
        assert set(record) >= RECORD_KEYS
        assert {"mean", "sd", "n"} == set(record["harrell_c"] or {"mean": 0, "sd": 0, "n": 0})
        assert {"method", "harrell_c"} <= set(record["baseline"] or {"method", "harrell_c"})
        assert {"method", "reason", "candidates"} <= set(body["method_choice"])
    assert similar.json()["method_choice"]["cohort"] == "alpha"
    # a new patient's slide with two cohorts in the store: no cohort, the stated default
    assert "cohort is unknown" in posted.json()["method_choice"]["reason"]
