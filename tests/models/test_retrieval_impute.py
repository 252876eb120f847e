"""Retrieval imputation (WSI-only baseline): neighbours' authentic genomics, scored."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from casegraph.models.data import CohortData
from casegraph.models.metrics import harrell_c
from casegraph.models.registry import build_model
from casegraph.models.retrieval_impute import RetrievalImputationModel
from tests.models.fusion_data import planted_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> CohortData:
    return planted_cohort(tmp_path_factory.mktemp("impute"), n=120, dim=16)


def test_imputed_genomics_are_the_weighted_neighbour_mean(cohort: CohortData) -> None:
    model = build_model("retrieval_impute", k=3, weighting="uniform").fit(cohort.subset(range(80)))
    assert isinstance(model, RetrievalImputationModel)
    held_out = cohort.subset(range(80, 90))
    rows, weights = model.neighbours(held_out)
    assert rows.shape == (10, 3) and np.allclose(weights, 1 / 3)
    imputed = model.impute(held_out)
    expected = model.reference_genomics_[1][rows].mean(axis=1)
    np.testing.assert_allclose(imputed[1], expected, rtol=1e-5)


def test_a_reference_patient_is_never_its_own_neighbour(cohort: CohortData) -> None:
    train = cohort.subset(range(40))
    model = build_model("retrieval_impute", k=5).fit(train)
    rows, weights = model.neighbours(train)
    assert not np.any(rows == np.arange(40)[:, None])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)


def test_planted_signal_beats_chance_from_slides_alone(cohort: CohortData) -> None:
    train, test = cohort.subset(range(80)), cohort.subset(range(80, 120))
    model = build_model("retrieval_impute", k=10).fit(train)
    # the test patients' genomics are never read: wipe them
    blind = replace(test, genomics=[np.full_like(g, np.nan) for g in test.genomics])
    pred = model.predict(blind)
    assert harrell_c(pred.risk, test.target) > 0.65
    assert pred.survival is not None and np.all(np.diff(pred.survival, axis=1) <= 1e-9)


def test_without_histology_signal_it_is_near_chance(tmp_path: Path, cohort: CohortData) -> None:
    rng = np.random.default_rng(0)
    shuffled = cohort.subset(rng.permutation(len(cohort)))
    # bags of other patients: slides carry no information about this patient's outcome
    null = replace(cohort, bags=shuffled.bags, slide_ids=shuffled.slide_ids)
    train, test = null.subset(range(80)), null.subset(range(80, 120))
    pred = build_model("retrieval_impute", k=10).fit(train).predict(test)
    assert abs(harrell_c(pred.risk, test.target) - 0.5) < 0.15


def test_a_stored_version_answers_from_slides_and_refuses_genomics(tmp_path: Path) -> None:
    from casegraph.errors import InputError
    from casegraph.ingest.store import Store
    from casegraph.models.versioning import predict_external, train_version
    from tests.retrieval.conftest import build_store, write_bag

    with Store.open(build_store(tmp_path)) as store:
        version = train_version(store, "alpha", "retrieval_impute", fold=None, k=3)
        bag = write_bag(tmp_path / "new.h5", 1, seed=77)
        pred, coverage, _ = predict_external(store, version, [bag], None)
        assert coverage is None and np.isfinite(pred.risk).all()
        with pytest.raises(InputError, match="drop --genomics"):
            predict_external(store, version, [bag], {"TP53_rnaseq": 1.0})


def test_neighbour_km_is_the_weighted_km_of_the_nearest_slides(cohort: CohortData) -> None:
    from casegraph.models.neighbour_outcome import NeighbourOutcomeModel
    from casegraph.models.neighbourhood import neighbour_prediction

    train, test = cohort.subset(range(80)), cohort.subset(range(80, 120))
    model = build_model("neighbour_km", k=10)
    assert isinstance(model, NeighbourOutcomeModel)
    pred = model.fit(train).predict(test)
    rows, weights = build_model("retrieval_impute", k=10).fit(train).neighbours(test)
    risk, surv = neighbour_prediction(train.target.time[rows[0]], train.target.event[rows[0]],
                                      weights[0], model._bin_ends())
    assert pred.survival is not None
    np.testing.assert_allclose(pred.survival[0], surv, rtol=1e-6)
    assert pred.risk[0] == pytest.approx(risk)
    assert harrell_c(pred.risk, test.target) > 0.6
