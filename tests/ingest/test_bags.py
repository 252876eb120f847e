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


# --------------------------------------------------------------- bounded memory (limits)
def _zeros_h5_gzip(path: Path, n: int, d: int, rows_per_chunk: int = 10_000) -> Path:
    """A gzip-compressed N x D float32 zeros dataset written chunk by chunk as pre-compressed
    bytes: the file is small (1.5 M x 256 is ~1.5 MB) and the test never holds N x D."""
    import zlib

    chunk = zlib.compress(np.zeros((rows_per_chunk, d), np.float32).tobytes(), 6)
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("features", shape=(n, d), dtype="f4",
                                        chunks=(rows_per_chunk, d), compression="gzip")
        for start in range(0, n, rows_per_chunk):
            dataset.id.write_direct_chunk((start, 0), chunk)
    return path


def test_a_compressed_bomb_is_refused_without_allocating_it(tmp_path: Path) -> None:
    import tracemalloc

    from casegraph.ingest.bags import BagTooLarge

    bomb = _zeros_h5_gzip(tmp_path / "bomb.h5", 1_500_000, 256)
    assert bomb.stat().st_size < 3_000_000
    tracemalloc.start()
    try:
        for read in (lambda: read_bag(bomb), lambda: parse_bag(bomb.read_bytes(), bomb)):
            with pytest.raises(BagTooLarge, match="1,500,000 patches, more than the limit of "
                                                  "250,000") as caught:
                read()
            assert "bomb.h5" in str(caught.value) and "CASEGRAPH_MAX_BAG_PATCHES" in str(
                caught.value)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB while refusing"


def _h5_of(path: Path, shape: tuple[int, ...], dtype: str = "f4", **extra: np.ndarray) -> Path:
    with h5py.File(path, "w") as handle:
        handle.create_dataset("features", shape=shape, dtype=dtype, compression="gzip")
        for name, data in extra.items():
            handle.create_dataset(name, data=data, compression="gzip")
    return path


@pytest.mark.parametrize(("shape", "dtype", "message"), [
    ((101, 4), "f4", "101 patches"),                 # over the patch limit
    ((1, 101, 4), "f4", "101 patches"),              # the same behind a batch axis
    ((50, 60), "f4", "12,000 bytes"),                # over the byte limit (50 x 60 x 4)
    ((50, 30), "f8", "12,000 bytes"),                # float64 counts 8 bytes a value
    ((50, 30), "i2", "6,000 bytes"),                 # small ints count as the float32 copy
])
def test_h5_limits_are_checked_from_the_metadata(tmp_path: Path, shape: tuple[int, ...],
                                                 dtype: str, message: str) -> None:
    from casegraph.config import BagLimits
    from casegraph.ingest.bags import BagTooLarge

    limits = BagLimits(max_patches=100, max_bytes=5_000)
    path = _h5_of(tmp_path / "big.h5", shape, dtype)
    for read in (lambda: read_bag(path, limits), lambda: parse_bag(path.read_bytes(), path,
                                                                    limits)):
        with pytest.raises(BagTooLarge, match=message):
            read()
    assert read_bag(_h5_of(tmp_path / "ok.h5", (100, 12)), limits).n_patches == 100


def test_bad_layouts_are_refused_before_reading(tmp_path: Path) -> None:
    strings = tmp_path / "strings.h5"
    with h5py.File(strings, "w") as handle:
        handle["features"] = np.array([[b"a", b"b"]])
    with pytest.raises(InputError, match="numeric"):
        read_bag(strings)
    with pytest.raises(InputError, match="2-d"):
        read_bag(_h5_of(tmp_path / "4d.h5", (2, 3, 4, 5)))
    # a huge (compressed) coords dataset beside small features is never read
    coords = _h5_of(tmp_path / "coords.h5", (10, 4), coords=np.zeros((10, 100_000), np.int64))
    with pytest.raises(InputError, match="coords shape"):
        read_bag(coords)


def test_pt_limits_count_patches_and_the_declared_zip_size(tmp_path: Path) -> None:
    import io
    import zipfile

    from casegraph.config import BagLimits
    from casegraph.ingest.bags import BagTooLarge

    limits = BagLimits(max_patches=100, max_bytes=5_000)
    many = tmp_path / "many.pt"
    torch.save(torch.zeros(101, 2), many)
    with pytest.raises(BagTooLarge, match="101 patches"):
        read_bag(many, limits)
    # torch also loads a deflated .pt: its small file inflates to the declared size
    plain = io.BytesIO()
    torch.save({"features": torch.zeros(100, 40)}, plain)
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(deflated, "w",
                                                           zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            out.writestr(info.filename, source.read(info.filename))
    assert deflated.stat().st_size < 5_000
    for read in (lambda: read_bag(deflated, limits),
                 lambda: parse_bag(deflated.read_bytes(), deflated, limits)):
        with pytest.raises(BagTooLarge, match="once decompressed"):
            read()
    assert read_bag(deflated).n_patches == 100  # the default limits admit it


def test_limits_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    from casegraph.config import bag_limits
    from casegraph.errors import CasegraphError
    from casegraph.ingest.bags import BagTooLarge

    path = _h5_of(tmp_path / "b.h5", (30, 4))
    monkeypatch.setenv("CASEGRAPH_MAX_BAG_PATCHES", "2_9")
    with pytest.raises(BagTooLarge, match="limit of 29"):
        read_bag(path)
    monkeypatch.setenv("CASEGRAPH_MAX_BAG_PATCHES", "lots")
    with pytest.raises(CasegraphError, match="CASEGRAPH_MAX_BAG_PATCHES='lots'"):
        bag_limits()
    monkeypatch.delenv("CASEGRAPH_MAX_BAG_PATCHES")
    monkeypatch.setenv("CASEGRAPH_MAX_BAG_BYTES", "400")
    with pytest.raises(BagTooLarge, match="480 bytes"):
        read_bag(path)
