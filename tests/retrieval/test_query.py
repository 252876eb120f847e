"""WSI-only queries through the Python API (the model-free fallback path)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

import casegraph.retrieval as retrieval
from casegraph.errors import InputError
from casegraph.ingest.store import Store
from casegraph.retrieval.query import QueryEngine, QueryOptions
from casegraph.retrieval.report import plot_km, print_result
from tests.retrieval.conftest import write_bag


def test_fallback_answers_and_says_so(tiny_store: Store, tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "new.h5", group=1, seed=11)
    result = retrieval.query(tiny_store, [bag], k=8)
    assert result.method == "embedding-knn"
    assert result.fallback_reason and "MSRL" in result.fallback_reason
    assert any("no trained MSRL model" in n for n in result.notes)
    assert len(result.neighbours) == 8 and [n.rank for n in result.neighbours] == list(range(1, 9))
    assert sum(n.oncotree_code == "HIGH" for n in result.neighbours) >= 7
    assert all(a.similarity >= b.similarity for a, b in zip(result.neighbours,
                                                            result.neighbours[1:], strict=False))
    assert result.query_patient_id is None and result.n_patches == 24
    assert [i.status for i in result.inputs] == ["unknown", "absent"]


def test_risk_orders_short_and_long_survivors(tiny_store: Store, tmp_path: Path) -> None:
    engine = QueryEngine(tiny_store)
    short = engine.query([write_bag(tmp_path / "s.h5", 1, seed=21)])
    long = engine.query([write_bag(tmp_path / "l.h5", 0, seed=22)])
    assert short.risk > long.risk
    assert short.survival.survival[0] < long.survival.survival[0]
    km = short.neighbourhood_km
    assert km.times == sorted(km.times) and km.at_risk[0] == 10
    assert all(0 <= s <= 1 for s in km.survival)


def test_stored_patient_query_excludes_its_case_and_reports_outcomes(tiny_store: Store) -> None:
    result = retrieval.query(tiny_store, patient_id="A00", k=5)
    ids = [n.patient_id for n in result.neighbours]
    assert "A00" not in ids and result.query_patient_id == "A00"
    assert [i.name for i in result.inputs[:2]] == ["A00-S1", "A00-S2"]
    assert result.inputs[0].status == "simulated"
    first = result.neighbours[0]
    assert first.time > 0 and isinstance(first.event, bool)
    alpha = [n for n in result.neighbours if n.cohort == "alpha"]
    assert all(n.genomic_groups and n.genomics == "authentic" for n in alpha)
    beta = [n for n in result.neighbours if n.cohort == "beta"]
    assert all(not n.genomic_groups and n.genomics == "absent" for n in beta)


def test_uploading_a_stored_slide_is_recognised(tiny_store: Store) -> None:
    path = tiny_store.slides().set_index("slide_id").at["B07-S1", "feature_path"]
    result = retrieval.query(tiny_store, [path], k=4)
    assert result.query_patient_id == "B07"
    assert "B07" not in {n.patient_id for n in result.neighbours}
    assert result.inputs[0].status == "authentic"


def test_filters_always_give_k_when_k_exist(tiny_store: Store, tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "q.h5", group=1, seed=3)
    only_beta = retrieval.query(tiny_store, [bag], k=15, cohorts=("beta",))
    assert len(only_beta.neighbours) == 15 and {n.cohort for n in only_beta.neighbours} == {"beta"}
    with_genomics = retrieval.query(tiny_store, [bag], k=20, require=("genomics",))
    assert len(with_genomics.neighbours) == 20
    assert all(n.genomics == "authentic" for n in with_genomics.neighbours)
    too_many = retrieval.query(tiny_store, [bag], k=25, n_candidates=25, cohorts=("alpha",))
    assert len(too_many.neighbours) == 20
    assert any("only 20 patients" in n for n in too_many.notes)
    nothing = retrieval.query(tiny_store, [bag], k=3, cohorts=("alpha",), require=("histology",))
    assert nothing.neighbours == [] and nothing.neighbourhood_km.times == []


def test_several_files_are_one_patient(tiny_store: Store, tmp_path: Path) -> None:
    bags = [write_bag(tmp_path / f"s{i}.h5", 0, seed=30 + i, n=10) for i in range(2)]
    assert retrieval.query(tiny_store, bags, k=3).n_patches == 20


def test_bad_queries_are_input_errors(tiny_store: Store, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothing to query"):
        retrieval.query(tiny_store)
    with pytest.raises(InputError, match="unknown patient"):
        retrieval.query(tiny_store, patient_id="nope")
    with pytest.raises(InputError, match="8-d patch features"):
        retrieval.query(tiny_store, [write_bag(tmp_path / "d.h5", 0, seed=1, dim=8)])
    mixed = [write_bag(tmp_path / "a.h5", 0, seed=1), write_bag(tmp_path / "b.h5", 0, 1, dim=8)]
    with pytest.raises(InputError, match="different feature dims"):
        retrieval.query(tiny_store, mixed)
    bag = write_bag(tmp_path / "q.h5", 0, seed=1)
    for options, message in [({"k": 0}, "k must be"), ({"k": 5, "n_candidates": 2}, ">= k"),
                             ({"method": "magic"}, "unknown method"),
                             ({"cohorts": ("gamma",)}, "unknown cohort"),
                             ({"require": ("proteomics",)}, "unknown modality"),
                             ({"method": "msrl"}, "no trained MSRL"),
                             ({"model_version": "v9"}, "not an MSRL version")]:
        with pytest.raises(InputError, match=message):
            retrieval.query(tiny_store, [bag], **options)


def test_simulator_attributes_mark_an_upload_as_simulated(tiny_store: Store,
                                                          tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "sim.h5", 0, seed=4)
    with h5py.File(bag, "a") as handle:
        handle.attrs["generator"] = "casegraph simulator"
    assert retrieval.query(tiny_store, [bag], k=2).inputs[0].status == "simulated"


def test_persist_writes_the_query_case_into_the_case_graph(tiny_store: Store) -> None:
    from casegraph.graph import open_graph_store
    from casegraph.graph.sync import sync_graph

    with open_graph_store(tiny_store, "embedded") as graph:
        sync_graph(tiny_store, graph)
    result = QueryEngine(tiny_store).query((), "A02", QueryOptions(k=3, persist=True))
    assert result.persisted_to_graph
    case = tiny_store.con.execute("SELECT case_id, version_id FROM graph_query_cases").fetchall()
    assert len(case) == 1 and case[0][0].startswith("query-A02-") and case[0][1] == "slide-mean"
    edges = tiny_store.con.execute(
        "SELECT neighbour_id FROM graph_query_edges ORDER BY rank").fetchall()
    assert [e[0] for e in edges] == [n.patient_id for n in result.neighbours]


def test_persist_on_a_read_only_store_says_why(tiny_store: Store) -> None:
    root = tiny_store.root
    tiny_store.close()
    with Store.open(root, read_only=True) as store:
        result = QueryEngine(store).query((), "A02", QueryOptions(k=2, persist=True))
    assert not result.persisted_to_graph and any("read-only" in n for n in result.notes)


def test_reports(tiny_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = retrieval.query(tiny_store, patient_id="A05", k=3)
    print_result(result)
    out = capsys.readouterr().out
    assert "embedding-knn" in out and "most similar" in out
    png = plot_km(result, tmp_path / "km.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    again = type(result).model_validate_json(result.model_dump_json())
    assert again == result
    assert np.isfinite(result.risk)


@pytest.mark.parametrize("columns", ["40", "80"])
def test_neighbour_table_never_truncates_patient_ids(tiny_store: Store, columns: str,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", columns)  # what rich sees in a pipe or an 80-column log
    result = retrieval.query(tiny_store, patient_id="A05", k=3)
    long_ids = [f"TCGA-BC-{i:04d}-01Z-00-DX1" for i in range(3)]
    result.neighbours = [n.model_copy(update={"patient_id": p})
                         for n, p in zip(result.neighbours, long_ids, strict=True)]
    print_result(result)
    out = capsys.readouterr().out
    assert all(p in out for p in long_ids)
