"""Store-level indexes: build, reload, sync, check against the DuckDB rows, rebuild."""

from __future__ import annotations

import json

import numpy as np
import pytest

from casegraph.errors import StoreError
from casegraph.ingest.store import Store
from casegraph.ingest.versions import NewVersion
from casegraph.retrieval.index import (
    SLIDE_MEAN,
    IndexKey,
    build_index,
    check_indexes,
    index_keys,
    open_index,
    rebuild_indexes,
    sync_index,
)

KEY = IndexKey(SLIDE_MEAN, "wsi")


def _add_model_embeddings(store: Store, version: str, ids: list[str], dim: int = 4) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(ids), dim)).astype(np.float32)
    store.versions.create(NewVersion(model="baseline", cohort="alpha", config={},
                                     embeddings={"wsi": (ids, vectors)}, version_id=version))


def test_keys_cover_model_embeddings_and_the_fallback(tiny_store: Store) -> None:
    assert index_keys(tiny_store) == [KEY]
    _add_model_embeddings(tiny_store, "v1", ["A01", "A02", "B03"])
    assert index_keys(tiny_store) == [IndexKey("v1", "wsi"), KEY]
    loaded = build_index(tiny_store, IndexKey("v1", "wsi"))
    assert sorted(loaded.index.ids()) == ["A01", "A02", "B03"]


def test_fallback_index_holds_every_patient_with_a_bag_and_survives_reload(
        tiny_store: Store) -> None:
    built = build_index(tiny_store, KEY)
    assert len(built.index) == 40 and built.center is not None
    again = open_index(tiny_store, KEY, build=False)
    assert again.index.ids() == built.index.ids()
    np.testing.assert_allclose(again.center, built.center)
    meta = json.loads((KEY.directory(tiny_store) / "meta.json").read_text())
    assert meta["type"] == "flat" and meta["n"] == 40
    assert check_indexes(tiny_store) == []


def test_missing_index_is_built_on_open_or_refused(tiny_store: Store) -> None:
    with pytest.raises(StoreError, match="index rebuild"):
        open_index(tiny_store, KEY, build=False)
    assert len(open_index(tiny_store, KEY).index) == 40


def test_check_finds_removed_and_new_patients_and_sync_repairs(tiny_store: Store) -> None:
    build_index(tiny_store, KEY)
    with tiny_store.transaction() as con:
        con.execute("DELETE FROM slide_summaries WHERE slide_id = 'B05-S1'")
        con.execute("DELETE FROM slides WHERE patient_id = 'B05'")
        con.execute("DELETE FROM patients WHERE patient_id = 'B05'")
    problems = check_indexes(tiny_store)
    assert len(problems) == 1 and "not in the patients table" in problems[0]
    assert sync_index(tiny_store, KEY) == (0, 1)
    assert check_indexes(tiny_store) == []
    loaded = open_index(tiny_store, KEY, build=False)
    loaded.index.remove(["A04"])
    loaded.index.save(KEY.directory(tiny_store), extra_meta=loaded.meta,
                      arrays={"center": loaded.center})
    assert any("not indexed" in p for p in check_indexes(tiny_store))
    assert sync_index(tiny_store, KEY) == (1, 0)
    assert check_indexes(tiny_store) == []


def test_check_reports_orphans_corruption_and_changed_vectors(tiny_store: Store) -> None:
    build_index(tiny_store, KEY)
    orphan = IndexKey("gone", "wsi").directory(tiny_store)
    orphan.mkdir(parents=True)
    (KEY.directory(tiny_store) / "index.faiss").write_bytes(b"garbage")
    problems = check_indexes(tiny_store)
    assert any("orphan" in p for p in problems)
    assert any("cannot read" in p for p in problems)
    rebuild_indexes(tiny_store)
    assert check_indexes(tiny_store) == [] and not orphan.exists()
    loaded = open_index(tiny_store, KEY, build=False)
    vec = loaded.index.vectors(["A01"])
    loaded.index.remove(["A01"])
    loaded.index.add(["A01"], -vec)
    loaded.index.save(KEY.directory(tiny_store), extra_meta=loaded.meta,
                      arrays={"center": loaded.center})
    assert any("differ" in p for p in check_indexes(tiny_store))


def test_large_stores_get_an_approximate_index(tiny_store: Store) -> None:
    loaded = rebuild_indexes(tiny_store, exact_threshold=10)[0]
    assert loaded.index.kind == "ivf"
    assert open_index(tiny_store, KEY).index.params["nlist"] == loaded.index.params["nlist"]
