"""Patch coords and bag-file provenance kept at registration; hashes across algorithms."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from casegraph.errors import InputError
from casegraph.ingest.bags import provenance_attributes, read_bag
from casegraph.ingest.doctor import check_bag_files
from casegraph.ingest.pipeline import IngestReport, IngestRequest, ingest
from casegraph.ingest.store import Store
from casegraph.ingest.tables import read_mcat_table
from tests.ingest.helpers import write_bags, write_table

TRIDENT_COORD_ATTRS = {"patch_size": 256, "patch_size_level0": 512, "level0_magnification": 40,
                       "target_magnification": 20, "overlap": 0, "name": "P1-A"}


def _trident_bag(path: Path, n: int = 7, d: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A bag laid out as TRIDENT writes one: attributes on coords, features and the file."""
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(n, d)).astype(np.float32)
    coords = np.stack([np.arange(n) * 512, np.arange(n)[::-1] * 512], axis=1).astype(np.int64)
    with h5py.File(path, "w") as handle:
        handle.attrs["encoder"] = "conch_v15"
        handle.attrs["thumbnail"] = np.zeros(500)  # a long array: not provenance
        handle.create_dataset("features", data=feats)
        handle["features"].attrs["name"] = b"P1-A.svs"  # clashes with coords' name
        handle["features"].attrs["embedding_dim"] = np.int64(d)
        handle.create_dataset("coords", data=coords)
        for key, value in TRIDENT_COORD_ATTRS.items():
            handle["coords"].attrs[key] = value
    return feats, coords


def _ingest(store: Store, tmp_path: Path, bag_dir: Path) -> IngestReport:
    table = read_mcat_table(write_table(tmp_path / "in"), "tiny")
    return ingest(store, IngestRequest(tables=[table], bag_dirs=[bag_dir], k=2))


def test_coords_and_provenance_kept_at_ingest(store: Store, tmp_path: Path) -> None:
    bags = tmp_path / "bags"
    bags.mkdir()
    feats, coords = _trident_bag(bags / "P1-A.h5")
    assert feats.shape == (7, 4)
    torch.save({"features": torch.ones(3, 4), "coords": torch.tensor([[0, 1], [2, 3], [4, 5]]),
                "encoder": "uni"}, bags / "P1-B.pt")
    torch.save(torch.ones(2, 4), bags / "P2-A.pt")
    _ingest(store, tmp_path, bags)

    got = store.slide_coords("P1-A")
    assert got is not None and got.dtype == np.int32
    np.testing.assert_array_equal(got, coords)  # same row order as the bag's features
    assert read_bag(bags / "P1-A.h5").features.shape[0] == got.shape[0]
    provenance = store.slide_provenance("P1-A")
    for key in ("patch_size", "patch_size_level0", "level0_magnification", "target_magnification"):
        assert provenance[key] == TRIDENT_COORD_ATTRS[key]
    assert provenance["encoder"] == "conch_v15" and provenance["embedding_dim"] == 4
    assert provenance["coords.name"] == "P1-A" and provenance["features.name"] == "P1-A.svs"
    assert "name" not in provenance and "thumbnail" not in provenance

    np.testing.assert_array_equal(store.slide_coords("P1-B"), [[0, 1], [2, 3], [4, 5]])
    assert store.slide_provenance("P1-B") == {"encoder": "uni"}
    assert store.slide_coords("P2-A") is None and store.slide_provenance("P2-A") == {}
    assert store.slide_coords("P3-A") is None and store.slide_provenance("P3-A") == {}  # no bag
    assert store.slide_coords("nope") is None and store.slide_provenance("nope") == {}


def test_provenance_values_are_json_scalars() -> None:
    attrs = {"f": np.float32(0.5), "nan": float("nan"), "flag": np.bool_(True),
             "list": np.array([1, 2]), "bytes": b"x", "obj": object()}
    out = provenance_attributes([("file", attrs)])
    assert out == {"f": 0.5, "flag": True, "list": [1, 2], "bytes": "x"}
    json.dumps(out)


def test_coords_beyond_int32_are_an_error(store: Store, tmp_path: Path) -> None:
    bags = tmp_path / "bags"
    bags.mkdir()
    with h5py.File(bags / "P1-A.h5", "w") as handle:
        handle["features"] = np.ones((2, 3), np.float32)
        handle["coords"] = np.array([[0, 0], [2**40, 0]], np.int64)
    with pytest.raises(InputError, match="int32"):
        _ingest(store, tmp_path, bags)
    assert store.counts()["slides"] == 0


def _make_old_store(store: Store, bags: Path) -> None:
    """Turn a fresh store into what an older casegraph wrote: sha256 digests without an
    algorithm column or provenance, summaries files without coords."""
    for slide_id, path in store.con.execute(
            "SELECT slide_id, feature_path FROM slides WHERE feature_path IS NOT NULL").fetchall():
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        store.con.execute("UPDATE slide_summaries SET sha256 = ? WHERE slide_id = ?",
                          [digest, slide_id])
        store.con.execute("UPDATE slides SET sha256 = ? WHERE slide_id = ?", [digest, slide_id])
    store.con.execute("ALTER TABLE slides DROP COLUMN hash_algorithm")
    store.con.execute("ALTER TABLE slides DROP COLUMN provenance")
    for file in store.summaries_dir.glob("*.parquet"):
        table = pq.read_table(file)
        keep = [c for c in table.column_names if c not in ("coords", "coords_width",
                                                            "content_hash", "hash_algorithm")]
        table = table.select(keep).append_column("sha256", pa.array(["?"] * table.num_rows))
        pq.write_table(table, file)


def test_old_store_keeps_working_and_reingest_is_a_noop(tmp_path: Path) -> None:
    bags = tmp_path / "bags"
    write_bags(bags, ["P1-A", "P1-B", "P2-A"])
    with Store.open(tmp_path / "store") as store:
        _ingest(store, tmp_path, bags)
        _make_old_store(store, bags)
    with Store.open(tmp_path / "store", read_only=True) as old:  # not migrated
        assert old.slide_provenance("P1-A") == {} and old.slide_coords("P1-A") is None
        assert check_bag_files(old) == []  # doctor re-hashes with sha256
    with Store.open(tmp_path / "store") as store:  # migrated: old rows say sha256
        assert store.slide_hashes()[0][3] == "sha256"
        assert store.slide_coords("P1-A") is None and store.slide_provenance("P1-A") == {}
        stat = (bags / "P1-A.h5").stat()
        os.utime(bags / "P1-A.h5", (stat.st_atime, stat.st_mtime + 10))  # same bytes, new time
        report = _ingest(store, tmp_path, bags)
        assert not report.changed  # compared under sha256: nothing to record
        assert check_bag_files(store) == []
        write_bags(bags, ["P2-A"], seed=9)  # new bytes: registered under the new algorithm
        report = _ingest(store, tmp_path, bags)
        assert report.changed and report.bags_registered == 1
        algorithms = {row[0]: row[3] for row in store.slide_hashes()}
        assert algorithms["P2-A"] == "xxh3_128" and algorithms["P1-A"] == "sha256"
        assert store.slide_coords("P2-A") is not None
        assert check_bag_files(store) == []
        assert set(store.slide_summaries(["P1-A", "P2-A"], k=2, seed=0)) == {"P1-A", "P2-A"}
        with open(bags / "P1-A.h5", "r+b") as handle:  # a changed old slide is found
            handle.seek(-1, os.SEEK_END)
            handle.write(b"\x01")
        assert [p for p in check_bag_files(store) if "P1-A" in p and "sha256" in p]
