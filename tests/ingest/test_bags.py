"""Bag IO: .h5 and .pt round trips, and each bad input with a real malformed file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from casegraph.errors import InputError
from casegraph.ingest.bags import Bag, parse_bag, read_bag, slide_key


def _features(n: int = 5, d: int = 3) -> np.ndarray:
    return np.arange(n * d, dtype=np.float32).reshape(n, d) / 7


def _write_h5(path: Path, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as handle:
        for name, data in datasets.items():
            handle.create_dataset(name, data=data)
    return path


def _both_readers(path: Path) -> list[Bag]:
    """read_bag (from the path) and parse_bag (from the bytes) must agree."""
    return [read_bag(path), parse_bag(path.read_bytes(), path)]


def test_h5_round_trip(tmp_path: Path) -> None:
    feats, coords = _features(), np.arange(10).reshape(5, 2)
    path = _write_h5(tmp_path / "TCGA-AB-1234-01Z-00-DX1.h5", features=feats, coords=coords)
    for bag in _both_readers(path):
        np.testing.assert_array_equal(bag.features, feats)
        assert bag.features.dtype == np.float32
        np.testing.assert_array_equal(bag.coords, coords)
        assert (bag.n_patches, bag.dim) == (5, 3)


def test_h5_chunked_float64_and_batch_axis(tmp_path: Path) -> None:
    feats = _features().astype(np.float64)[None]  # (1, N, D) as some extractors write
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("features", data=feats, chunks=(1, 1, 3), compression="gzip")
    for bag in _both_readers(path):
        np.testing.assert_allclose(bag.features, feats[0])
        assert bag.features.dtype == np.float32 and bag.coords is None


def test_pt_round_trip_tensor_and_dict(tmp_path: Path) -> None:
    feats = _features()
    torch.save(torch.from_numpy(feats), tmp_path / "a.pt")
    torch.save({"features": torch.from_numpy(feats), "coords": torch.zeros(5, 2)}, tmp_path / "b.pt")
    for name in ("a.pt", "b.pt"):
        for bag in _both_readers(tmp_path / name):
            np.testing.assert_array_equal(bag.features, feats)
    assert read_bag(tmp_path / "b.pt").coords is not None


def test_slide_key() -> None:
    assert slide_key("dir/TCGA-X.svs") == "TCGA-X"
    assert slide_key("TCGA-X.h5") == "TCGA-X"
    assert slide_key("TCGA-X") == "TCGA-X"


def _truncated(path: Path) -> Path:
    _write_h5(path, features=np.ones((200, 64), np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def _no_features(path: Path) -> Path:
    return _write_h5(path, embeddings=_features())


def _nan(path: Path) -> Path:
    feats = _features()
    feats[3, 1] = np.nan
    return _write_h5(path, features=feats)


def _inf(path: Path) -> Path:
    feats = _features()
    feats[2, 0] = -np.inf
    return _write_h5(path, features=feats)


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _wrong_ndim(path: Path) -> Path:
    return _write_h5(path, features=np.ones(7, np.float32))


def _coords_mismatch(path: Path) -> Path:
    return _write_h5(path, features=_features(), coords=np.zeros((4, 2), np.int64))


def _no_patches(path: Path) -> Path:
    return _write_h5(path, features=np.zeros((0, 8), np.float32))


def _not_hdf5(path: Path) -> Path:
    path.write_text("case_id,slide_id\nA,B\n", encoding="utf-8")
    return path


BAD_H5: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated": (_truncated, "truncated"),
    "no_features": (_no_features, "no 'features' dataset"),
    "nan": (_nan, "NaN or inf"),
    "inf": (_inf, "NaN or inf"),
    "empty": (_empty, "empty"),
    "wrong_ndim": (_wrong_ndim, "2-d"),
    "coords_mismatch": (_coords_mismatch, "coords shape"),
    "no_patches": (_no_patches, "no patches"),
    "not_hdf5": (_not_hdf5, "unreadable"),
}


@pytest.mark.parametrize("case", sorted(BAD_H5))
def test_bad_h5_names_file_and_problem(tmp_path: Path, case: str) -> None:
    make, message = BAD_H5[case]
    path = make(tmp_path / f"slide_{case}.h5")
    for reader in (read_bag, lambda p: parse_bag(p.read_bytes(), p)):
        with pytest.raises(InputError) as info:
            reader(path)
        text = str(info.value)
        assert f"slide_{case}.h5" in text
        assert message in text


def test_nan_error_names_the_patch(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="patch 3"):
        read_bag(_nan(tmp_path / "s.h5"))


def test_huge_finite_values_are_accepted(tmp_path: Path) -> None:
    feats = np.full((4, 2), 3e38, np.float32)  # column sums overflow; values are finite
    bag = read_bag(_write_h5(tmp_path / "s.h5", features=feats))
    assert bag.n_patches == 4


def test_unreadable_pt(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    torch.save(torch.ones(5, 3), path)
    path.write_bytes(path.read_bytes()[:40])
    for reader in (read_bag, lambda p: parse_bag(p.read_bytes(), p)):
        with pytest.raises(InputError, match=r"broken\.pt.*unreadable \.pt"):
            reader(path)


def test_pt_without_features_and_non_tensor(tmp_path: Path) -> None:
    torch.save({"feats": torch.ones(2, 2)}, tmp_path / "a.pt")
    torch.save([1, 2, 3], tmp_path / "b.pt")
    with pytest.raises(InputError, match=r"a\.pt.*without 'features'"):
        read_bag(tmp_path / "a.pt")
    with pytest.raises(InputError, match=r"b\.pt.*expected a tensor"):
        read_bag(tmp_path / "b.pt")


def test_missing_file_and_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_bag(tmp_path / "nope.h5")
    other = tmp_path / "s.npy"
    other.write_bytes(b"xx")
    with pytest.raises(InputError, match=r"s\.npy.*unsupported bag format"):
        read_bag(other)


def test_clam_style_one_row_chunks_written_in_batches(tmp_path: Path) -> None:
    """CLAM appends batches to 1-row-chunked datasets; features and coords interleave."""
    feats = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    path = tmp_path / "clam.h5"
    with h5py.File(path, "w") as handle:
        f = handle.create_dataset("features", shape=(0, 8), maxshape=(None, 8), chunks=(1, 8),
                                  dtype="f4")
        c = handle.create_dataset("coords", shape=(0, 2), maxshape=(None, 2), chunks=(1, 2),
                                  dtype="i8")
        for start in range(0, 300, 64):
            block = feats[start : start + 64]
            f.resize(f.shape[0] + len(block), axis=0)
            f[-len(block):] = block
            c.resize(c.shape[0] + len(block), axis=0)
            c[-len(block):] = np.arange(start, start + len(block))[:, None]
    for bag in _both_readers(path):
        np.testing.assert_array_equal(bag.features, feats)
        np.testing.assert_array_equal(bag.coords[:, 0], np.arange(300))
