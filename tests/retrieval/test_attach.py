"""Attaching new store patients to a trained MSRL version (a derived version, no retraining)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from casegraph.errors import InputError
from casegraph.ingest.pipeline import IngestRequest, ingest
from casegraph.ingest.store import Store
from casegraph.ingest.tables import read_mcat_table
from casegraph.models.data import CohortData
from casegraph.models.msrl import MSRLModel
from casegraph.retrieval.attach import attach_patients
from casegraph.retrieval.query import QueryEngine, QueryOptions
from tests.retrieval.conftest import build_store, write_bag

FAST = {"dim": 16, "proj_dim": 8, "batch_size": 8, "pretrain_steps": 5, "epochs": 2,
        "buffer_fraction": 0.5}
NEW_WITH_GENOMICS = ["N00", "N01", "N02", "N03"]
NEW_WSI_ONLY = ["W00", "W01"]


def _second_batch(root: Path, without_bags: tuple[str, ...] = ()) -> IngestRequest:
    """Cohort alpha grows: four patients with genomics, two with slides only."""
    folder = root / "batch2"
    header = "case_id,slide_id,survival_months,censorship,oncotree_code"
    with_genomics = [header + ",TP53_rnaseq,EGFR_rnaseq,TP53_cnv,KRAS_mut"]
    wsi_only = [header]
    for i, pid in enumerate(NEW_WITH_GENOMICS + NEW_WSI_ONLY):
        g = i % 2
        row = f"{pid},{pid}-S1.svs,{12.0 + i:.1f},{i % 3 == 0:d},X"
        if pid in NEW_WITH_GENOMICS:
            with_genomics.append(row + f",{g * 1.5 - 0.5:.2f},0.1,{g},{g}")
        else:
            wsi_only.append(row)
        if pid not in without_bags:
            write_bag(folder / "bags" / f"{pid}-S1.h5", g, seed=500 + i)
    tables = []
    for name, rows in (("alpha2", with_genomics), ("alpha3", wsi_only)):
        table = folder / f"tcga_{name}_all_clean.csv"
        table.write_text("\n".join(rows) + "\n", encoding="utf-8")
        tables.append(read_mcat_table(table, "alpha"))
    return IngestRequest(tables=tables, bag_dirs=[folder / "bags"], encoder="simulator")


def _trained(root: Path) -> tuple[Path, str]:
    torch.set_num_threads(1)
    store_dir = build_store(root)
    with Store.open(store_dir) as store:
        data = CohortData.from_store(store, "alpha", require_slides=True)
        model = MSRLModel("msrl", **FAST).fit(data.subset(range(14)), data.subset(range(14, 20)))
        version = model.save_version(store, "alpha")
    return store_dir, version


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store with a trained MSRL version of cohort alpha, then a second ingest batch."""
    root = tmp_path_factory.mktemp("attach")
    store_dir, version = _trained(root)
    with Store.open(store_dir) as store:
        ingest(store, _second_batch(root))
    return store_dir, version


@pytest.fixture
def store(trained: tuple[Path, str], tmp_path: Path) -> Iterator[Store]:
    copy = shutil.copytree(trained[0], tmp_path / "store")
    with Store.open(copy) as opened:
        yield opened


def _rows(store: Store, version: str) -> tuple:
    v = store.versions
    return (v.predictions(version, own_only=True).drop(columns="version_id").to_dict("list"),
            v.neighbours(version, own_only=True).to_dict("list"), v.buffer(version),
            v.embeddings(version, "fused", own_only=True)[0])


def test_attach_writes_a_derived_version_and_leaves_the_parent_alone(
        store: Store, trained: tuple[Path, str]) -> None:
    version = trained[1]
    parent_before = _rows(store, version)
    assert set(store.versions.unseen_patients(version, "alpha")) == set(NEW_WITH_GENOMICS + NEW_WSI_ONLY)
    report = attach_patients(store, version)
    assert report.version_id is not None and report.parent_id == version
    derived = store.versions.get(report.version_id)
    assert derived.parent_id == version and derived.batches == report.batches
    assert len(report.batches) == 1 and derived.counts["attached"] == 6
    assert _rows(store, version) == parent_before
    own = store.versions.predictions(report.version_id, own_only=True)
    assert sorted(own["patient_id"]) == sorted(NEW_WITH_GENOMICS + NEW_WSI_ONLY)
    assert dict(zip(own["patient_id"], own["inferred"], strict=True)) == {
        **{p: False for p in NEW_WITH_GENOMICS}, **{p: True for p in NEW_WSI_ONLY}}
    assert np.all(np.diff(np.stack(own["survival"].to_list()), axis=1) <= 1e-12)
    # only authentic cases become reference cases (fused rows); every new one has h
    assert sorted(store.versions.embeddings(report.version_id, "fused", own_only=True)[0]) \
        == NEW_WITH_GENOMICS
    assert store.versions.unseen_patients(report.version_id, "alpha") == []
    assert store.versions.buffer(report.version_id) == store.versions.buffer(version)
    again = attach_patients(store, report.version_id)
    assert again.version_id is None


def test_neighbours_after_attach_equal_the_query_against_the_parent(
        store: Store, trained: tuple[Path, str]) -> None:
    version = trained[1]
    report = attach_patients(store, version)
    assert report.version_id is not None
    edges = store.versions.neighbours(report.version_id, own_only=True)
    engine = QueryEngine(store)
    k = int(engine.model(version).config.k)
    for pid in NEW_WITH_GENOMICS + NEW_WSI_ONLY:
        result = engine.similar(pid, QueryOptions(k=k, method="msrl", model_version=version))
        mine = edges[edges["patient_id"] == pid].sort_values("rank")
        assert list(mine["neighbour_id"]) == [n.patient_id for n in result.neighbours]
        assert np.allclose(mine["weight"], [n.weight for n in result.neighbours])
    lineage = store.versions.neighbours(report.version_id)
    assert len(lineage) == len(store.versions.neighbours(version)) + len(edges)


def test_refresh_buffer_is_fifo_and_queries_reach_the_new_cases(
        store: Store, trained: tuple[Path, str]) -> None:
    version = trained[1]
    old = store.versions.buffer(version)
    report = attach_patients(store, version, refresh_buffer=True)
    assert report.version_id is not None
    new = store.versions.buffer(report.version_id)
    assert new[-len(NEW_WITH_GENOMICS):] == NEW_WITH_GENOMICS  # authentic cases at the tail
    assert len(new) == len(old) and new[: len(old) - 4] == old[4:]  # the oldest left
    assert (report.buffer_in, report.buffer_out) == (4, 4)
    engine = QueryEngine(store)
    answer = engine.similar("A03", QueryOptions(k=50, exact=True,
                                                model_version=report.version_id))
    assert set(NEW_WITH_GENOMICS) <= {n.patient_id for n in answer.neighbours}


def test_a_patient_the_encoder_cannot_read_writes_nothing(tmp_path: Path) -> None:
    store_dir, version = _trained(tmp_path)
    with Store.open(store_dir) as store:
        ingest(store, _second_batch(tmp_path, without_bags=("N01",)))
        before = store.versions.ids()
        with pytest.raises(InputError, match=r"patient N01 .*no slide features.*nothing was written"):
            attach_patients(store, version)
        assert store.versions.ids() == before
        report = attach_patients(store, version, skip_unfit=True)
        assert [p for p, _ in report.skipped] == ["N01"]
        assert "N01" not in report.attached and len(report.attached) == 5


def _cli_attach(store_dir: Path, crash: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CASEGRAPH_STORE": str(store_dir)}
    env.pop("CASEGRAPH_CRASH_AT", None)
    if crash:
        env["CASEGRAPH_CRASH_AT"] = crash
    return subprocess.run([sys.executable, "-c", "from casegraph.cli import main; main()",
                           "attach", "--refresh-buffer"],
                          env=env, capture_output=True, text=True, timeout=600)


def _content(store_dir: Path, version: str) -> tuple:
    with Store.open(store_dir, read_only=True) as store:
        children = store.versions.children(version)
        assert len(children) <= 1
        rows = _rows(store, children[0]) if children else None
        return rows, _rows(store, version)


@pytest.mark.parametrize("point", ["attach.in_transaction", "attach.after_version"])
def test_attach_killed_then_rerun_equals_an_uninterrupted_run(
        trained: tuple[Path, str], tmp_path: Path, point: str) -> None:
    store_dir, version = trained
    clean = shutil.copytree(store_dir, tmp_path / "clean")
    killed = shutil.copytree(store_dir, tmp_path / "killed")
    assert _cli_attach(clean).returncode == 0
    crashed = _cli_attach(killed, crash=point)
    assert crashed.returncode == -9, crashed.stderr
    rows, parent = _content(killed, version)
    if point == "attach.in_transaction":
        assert rows is None  # nothing of the derived version is visible
    assert parent == _content(clean, version)[1]
    if rows is None:
        assert _cli_attach(killed).returncode == 0
    assert _content(killed, version) == _content(clean, version)


def test_a_fusion_version_attaches_predictions_and_fused_embeddings(tmp_path: Path) -> None:
    from casegraph.models.versioning import predict_stored, train_version
    from casegraph.retrieval.index import IndexKey, open_index

    torch.set_num_threads(1)
    with Store.open(build_store(tmp_path)) as store:
        version = train_version(store, "alpha", "late_fusion", fold=None, epochs=2,
                                hidden=8, max_patches=16)
        parent_index = open_index(store, IndexKey(version, "fused"))
        ingest(store, _second_batch(tmp_path))
        with pytest.raises(InputError, match=r"patient W00 .*genomic"):
            attach_patients(store, version)  # a genomics + WSI model cannot read them
        report = attach_patients(store, version, skip_unfit=True)
        assert report.version_id is not None
        assert [p for p, _ in report.skipped] == NEW_WSI_ONLY
        own = store.versions.predictions(report.version_id, own_only=True)
        assert list(own["patient_id"]) == NEW_WITH_GENOMICS
        again = predict_stored(store, report.version_id, NEW_WITH_GENOMICS)
        np.testing.assert_allclose(own["risk"], again.risk, rtol=1e-6)
        derived_index = open_index(store, IndexKey(report.version_id, "fused"))
        assert len(derived_index.index) == len(parent_index.index) + 4
        assert derived_index.meta["derived_from"] == version
