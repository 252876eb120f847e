"""WSI-only queries through a trained (tiny) MSRL model version."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from casegraph.ingest.store import Store
from casegraph.models.data import CohortData
from casegraph.models.msrl import MSRLModel
from casegraph.retrieval import msrl_adapter
from casegraph.retrieval.index import IndexKey, check_indexes, index_keys
from casegraph.retrieval.query import QueryEngine, QueryOptions
from tests.retrieval.conftest import build_store, write_bag

FAST = {"dim": 16, "proj_dim": 8, "batch_size": 8, "pretrain_steps": 5, "epochs": 2}


@pytest.fixture(scope="module")
def msrl_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, str, Path]]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("msrl-retrieval")
    store = Store.open(build_store(root))
    data = CohortData.from_store(store, "alpha", require_slides=True)
    train, held_out = data.subset(range(14)), data.subset(range(14, 20))
    model = MSRLModel("msrl", **FAST).fit(train, held_out)
    version = model.save_version(store, "alpha")
    multi = MSRLModel("msrl_multi", **FAST).fit(train, held_out)
    multi.save_version(store, "alpha")
    yield store, version, root
    store.close()


def test_auto_uses_msrl_and_says_genomics_were_inferred(msrl_store: tuple) -> None:
    store, version, root = msrl_store
    assert msrl_adapter.msrl_versions(store) == [version]  # msrl_multi cannot answer WSI-only
    assert IndexKey(version, "gsl") in index_keys(store)
    result = QueryEngine(store).query([write_bag(root / "q.h5", 1, seed=9)],
                                      options=QueryOptions(k=4, n_candidates=10, expand=0))
    assert result.method == "msrl-gsl" and result.model_version == version
    assert result.fallback_reason is None and result.n_candidates == 10
    assert len(result.neighbours) == 4 and all(n.cohort == "alpha" for n in result.neighbours)
    assert result.inputs[-1].status == "inferred"
    assert len(result.survival.survival) == 4 and np.all(np.diff(result.survival.survival) <= 0)
    assert all(np.isfinite(n.similarity) for n in result.neighbours)
    assert abs(sum(n.weight for n in result.neighbours) - 1) < 1e-6
    assert check_indexes(store) == []


def test_exact_path_uses_the_buffer_and_excludes_the_query_case(msrl_store: tuple) -> None:
    store, version, _ = msrl_store
    engine = QueryEngine(store)
    buffer = set(engine.model(version).buffer_ids)
    member = sorted(buffer)[0]
    exact = engine.query((), member, QueryOptions(k=5, exact=True))
    assert member not in {n.patient_id for n in exact.neighbours}
    assert {n.patient_id for n in exact.neighbours} <= buffer
    assert exact.n_candidates == len(buffer) - 1
    pruned = engine.query((), member, QueryOptions(k=5, n_candidates=8, expand=0))
    assert member not in {n.patient_id for n in pruned.neighbours}
    assert pruned.n_candidates == 8
    expanded = engine.query((), member, QueryOptions(k=3, n_candidates=3))
    assert 3 < expanded.n_candidates <= 19 and member not in {
        n.patient_id for n in expanded.neighbours}


def test_filters_and_forced_fallback(msrl_store: tuple) -> None:
    store, _, root = msrl_store
    engine = QueryEngine(store)
    bag = write_bag(root / "q2.h5", 0, seed=10)
    none_left = engine.query([bag], options=QueryOptions(k=3, require=("histology",)))
    assert none_left.neighbours == [] and none_left.method == "msrl-gsl"
    knn = engine.query([bag], options=QueryOptions(k=3, method="knn"))
    assert knn.method == "embedding-knn" and "requested" in (knn.fallback_reason or "")
    beta_query = engine.query((), "B02", QueryOptions(k=3, n_candidates=5))
    assert {n.cohort for n in beta_query.neighbours} == {"alpha"}  # the model's references


def test_both_methods_end_their_time_points_at_the_reference_follow_up(msrl_store: tuple
                                                                       ) -> None:
    store, version, root = msrl_store
    engine = QueryEngine(store)
    bag = write_bag(root / "q3.h5", 1, seed=12)
    msrl = engine.query([bag], options=QueryOptions(k=3, n_candidates=5))
    knn = engine.query([bag], options=QueryOptions(k=3, method="knn"))
    model = engine.model(version)
    times = engine.catalog.table["time"]
    reference_max = float(times[times.index.isin(list(model.reference_ids_))].max())
    assert msrl.method == "msrl-gsl" and msrl.survival.times[-1] == pytest.approx(reference_max)
    assert knn.survival.times[-1] == pytest.approx(float(times.max()))
    edges = np.asarray(model.bin_edges_, dtype=np.float64)
    assert msrl.survival.times[:-1] == pytest.approx(edges[1:-1].tolist())


def test_pooled_bag_gives_the_full_bag_answer(msrl_store: tuple) -> None:
    """The query hands MSRL's mean encoder the bag's patch mean as a one-row bag (and the
    engine takes that mean from the read's column sums): same neighbours, same risk and
    survival as the model's own call on the whole bag."""
    from casegraph.ingest.bags import read_bag
    from casegraph.retrieval.msrl_query import answer_wsi_only

    store, version, root = msrl_store
    engine = QueryEngine(store)
    model = engine.model(version)
    loaded = engine.index(IndexKey(version, "gsl"))
    bag = read_bag(write_bag(root / "q4.h5", 1, seed=13))
    opts = QueryOptions(k=5, n_candidates=8)
    assert bag.column_sums is not None
    mean = np.true_divide(bag.column_sums, bag.n_patches, dtype=np.float32)
    assert np.array_equal(mean, bag.features.mean(axis=0))
    pooled = answer_wsi_only(model, loaded, bag.features, opts, mean=mean)
    assert np.array_equal(pooled.vector, answer_wsi_only(model, loaded, bag.features,
                                                         opts).vector)
    full = model.query_wsi_only(bag.features, _candidates(model, loaded, pooled.vector, opts),
                                k=5)
    assert [p for p, _ in full.neighbours] == [p for p, _ in pooled.neighbours]
    assert [w for _, w in full.neighbours] == pytest.approx([w for _, w in pooled.neighbours],
                                                             abs=1e-6)
    assert full.risk == pytest.approx(pooled.risk, abs=1e-6)
    assert full.survival == pytest.approx(pooled.survival, abs=1e-6)
    h_full = model.embed_wsi([bag.features])
    assert msrl_adapter.embed(model, mean[None]) == pytest.approx(h_full, abs=1e-6)


def _candidates(model: object, loaded: object, vector: np.ndarray, opts: QueryOptions
                ) -> list[str]:
    from casegraph.retrieval.msrl_query import candidate_ids

    return candidate_ids(model, loaded, vector, opts, None, frozenset())  # type: ignore[arg-type]
