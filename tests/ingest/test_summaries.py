"""Per-slide summaries: k-means, one-read registration, Parquet round trip."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import xxhash

from casegraph.errors import InputError, StoreError
from casegraph.ingest.summaries import (
    SummaryRow,
    read_and_hash,
    read_summary_rows,
    register_bag,
    register_bags,
    summarize_features,
    write_summary_file,
)


def _planted(n_per: int = 300, d: int = 16, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)).astype(np.float32) * 10
    labels = np.repeat(np.arange(k), n_per)
    x = centres[labels] + rng.standard_normal((k * n_per, d)).astype(np.float32)
    return x[rng.permutation(len(x))], centres


def _write_h5(path: Path, feats: np.ndarray) -> Path:
    with h5py.File(path, "w") as handle:
        handle.create_dataset("features", data=feats)
        handle.create_dataset("coords", data=np.zeros((len(feats), 2), np.int64))
    return path


def test_shapes_and_mean() -> None:
    x, _ = _planted()
    mean, centres = summarize_features(x, k=6, seed=0)
    assert mean.shape == (16,) and centres.shape == (6, 16)
    assert mean.dtype == np.float32 and centres.dtype == np.float32
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-5, atol=1e-5)


def test_deterministic_for_a_seed_and_seed_matters() -> None:
    x, _ = _planted()
    a = summarize_features(x, k=5, seed=3, max_points=500)
    b = summarize_features(x, k=5, seed=3, max_points=500)
    c = summarize_features(x, k=5, seed=4, max_points=500)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_recovers_planted_clusters() -> None:
    x, truth = _planted(k=4)
    _, centres = summarize_features(x, k=4, seed=1, max_points=800)
    distance = np.linalg.norm(truth[:, None] - centres[None], axis=2)  # (true, found)
    assert np.all(distance.min(axis=1) < 0.5)  # every true centre found
    assert len(set(distance.argmin(axis=1).tolist())) == 4  # by distinct centres


def test_centres_sorted_by_cluster_size() -> None:
    rng = np.random.default_rng(0)
    big = rng.standard_normal((300, 4)).astype(np.float32)
    small = rng.standard_normal((30, 4)).astype(np.float32) + 50
    _, centres = summarize_features(np.vstack([small, big]), k=2, seed=0)
    assert np.linalg.norm(centres[0]) < 5 < np.linalg.norm(centres[1])


def test_fewer_patches_than_k_repeats_centres() -> None:
    x = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)
    _, centres = summarize_features(x, k=5, seed=0)
    assert centres.shape == (5, 2)
    assert {tuple(r) for r in centres.tolist()} == {(0.0, 1.0), (2.0, 3.0)}


def test_identical_patches() -> None:
    x = np.ones((50, 3), np.float32)
    _, centres = summarize_features(x, k=6, seed=0)
    np.testing.assert_array_equal(centres, np.ones((6, 3), np.float32))


def test_register_bag_hash_is_the_file_hash_with_its_algorithm(tmp_path: Path) -> None:
    x, _ = _planted()
    path = _write_h5(tmp_path / "slide.h5", x)
    record = register_bag(path, k=6, seed=0)
    assert record.hash_algorithm == "xxh3_128"
    assert record.content_hash == xxhash.xxh3_128(path.read_bytes()).hexdigest()
    both = register_bag(path, k=6, seed=0, algorithms=("xxh3_128", "sha256"))
    assert both.content_hash == record.content_hash
    assert both.hashes["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (record.n_patches, record.dim) == x.shape
    mean, centres = summarize_features(x, k=6, seed=0)
    np.testing.assert_array_equal(record.mean, mean)
    np.testing.assert_array_equal(record.centres, centres)


def test_read_and_hash_small_chunks(tmp_path: Path) -> None:
    path = tmp_path / "blob.h5"
    path.write_bytes(bytes(range(256)) * 1000)
    buffer, digests = read_and_hash(path, ("sha256", "xxh3_128"), chunk_size=1000)
    assert buffer.tobytes() == path.read_bytes()
    assert digests == {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                       "xxh3_128": xxhash.xxh3_128(path.read_bytes()).hexdigest()}


def test_register_bags_keeps_order_and_raises_bad_file(tmp_path: Path) -> None:
    paths = [_write_h5(tmp_path / f"s{i}.h5", _planted(n_per=20, seed=i)[0]) for i in range(5)]
    serial = [register_bag(p) for p in paths]
    threaded = list(register_bags(paths, threads=2))
    assert [r.content_hash for r in threaded] == [r.content_hash for r in serial]
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"")
    with pytest.raises(InputError, match=r"bad\.h5.*empty"):
        list(register_bags([*paths, bad], threads=2))


def test_parquet_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [SummaryRow(f"slide-{i}", f"{i:064x}", 3, 0,
                       rng.standard_normal(d).astype(np.float32),
                       rng.standard_normal((3, d)).astype(np.float32))
            for i, d in enumerate([8, 8, 5])]
    name = write_summary_file(tmp_path / "summaries", "batch-1", rows)
    assert (tmp_path / "summaries" / name).is_file()
    assert not list((tmp_path / "summaries").glob(".*tmp"))
    refs = [("slide-2", name, 2), ("slide-0", name, 0)]
    out = read_summary_rows(tmp_path / "summaries", refs)
    assert set(out) == {"slide-0", "slide-2"}
    for i in (0, 2):
        np.testing.assert_array_equal(out[f"slide-{i}"][0], rows[i].mean)
        np.testing.assert_array_equal(out[f"slide-{i}"][1], rows[i].centres)
    with pytest.raises(StoreError, match="not slide"):
        read_summary_rows(tmp_path / "summaries", [("slide-1", name, 0)])


def test_store_slide_summaries_reads_them(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    x, _ = _planted(n_per=30)
    record = register_bag(_write_h5(tmp_path / "S1.h5", x), k=4, seed=0)
    name = write_summary_file(store.summaries_dir, "b1", [SummaryRow.from_record("S1", record, 4, 0)])
    with store.transaction() as con:
        con.execute("INSERT INTO slides (slide_id, patient_id, sha256) VALUES ('S1', 'P1', ?)",
                    [record.content_hash])
        con.execute("INSERT INTO slide_summaries VALUES ('S1', ?, 4, 0, ?, 0)",
                    [record.content_hash, name])
    got = store.slide_summaries(["S1"], k=4, seed=0)
    np.testing.assert_array_equal(got["S1"][1], record.centres)
    assert store.slide_summaries(["S1"], k=6, seed=0) == {}


def test_register_pt_bag(tmp_path: Path) -> None:
    import torch

    x, _ = _planted(n_per=10)
    path = tmp_path / "slide.pt"
    torch.save(torch.from_numpy(x), path)
    record = register_bag(path, k=3, seed=0)
    assert record.content_hash == xxhash.xxh3_128(path.read_bytes()).hexdigest()
    assert (record.n_patches, record.dim, record.centres.shape) == (40, 16, (3, 16))
