"""Patch-feature bags: CLAM/TRIDENT ``.h5`` (``features`` N x D, ``coords`` N x 2) and ``.pt``.

A ``.pt`` file holds either a tensor (N, D) or a dict with ``features`` (and optional
``coords``). Every failure becomes an :class:`~casegraph.errors.InputError` naming the file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from casegraph.errors import InputError

BAG_SUFFIXES = (".h5", ".pt")


@dataclass
class Bag:
    """One slide's patches: ``features`` (N, D) float32, ``coords`` (N, 2) int or None."""

    path: Path
    features: npt.NDArray[np.float32]
    coords: npt.NDArray[np.int64] | None

    @property
    def n_patches(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def slide_key(name: str) -> str:
    """Normalise a slide id or file name: drop directories and ``.svs``/``.h5``/``.pt``."""
    base = Path(name).name
    for suffix in (".h5", ".pt", ".svs", ".tif", ".tiff", ".ndpi", ".mrxs"):
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
    return base


def read_bag(path: str | Path) -> Bag:
    """Read and validate one bag file (``.h5`` or ``.pt``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("patch-feature file not found", file=path,
                         fix="check the path, or re-run ingest with the moved files")
    if path.stat().st_size == 0:
        raise InputError("patch-feature file is empty", file=path, fix="re-extract the features")
    if path.suffix == ".h5":
        return parse_bag(np.fromfile(path, dtype=np.uint8), path)
    if path.suffix == ".pt":
        features, coords = _read_pt(path, path)
        return Bag(path=path, features=_validate_features(features, path), coords=coords)
    raise _unsupported(path)


def parse_bag(data: npt.NDArray[np.uint8] | bytes, path: str | Path) -> Bag:
    """Parse a bag from the bytes of the file at ``path`` (already read, e.g. for hashing).

    For an uncompressed contiguous float32 ``features`` dataset (what CLAM and the
    simulator write) the features are a zero-copy view into ``data``.
    """
    path = Path(path)
    # bytes are immutable: copy them so that the features are a writable array, as always
    buffer = np.frombuffer(bytearray(data), dtype=np.uint8) if isinstance(data, bytes) else data
    if buffer.size == 0:
        raise InputError("patch-feature file is empty", file=path, fix="re-extract the features")
    if path.suffix == ".h5":
        features, coords = _read_h5(_BufferFile(buffer), path, buffer)
    elif path.suffix == ".pt":
        features, coords = _read_pt(io.BytesIO(buffer.tobytes()), path)
    else:
        raise _unsupported(path)
    return Bag(path=path, features=_validate_features(features, path), coords=coords)


def _unsupported(path: Path) -> InputError:
    return InputError(f"unsupported bag format {path.suffix!r}", file=path,
                      fix="use CLAM/TRIDENT .h5 or .pt files")


class _BufferFile(io.RawIOBase):
    """A read-only file over an in-memory byte buffer, without copying it (for h5py)."""

    def __init__(self, buffer: npt.NDArray[np.uint8]) -> None:
        super().__init__()
        self._view = memoryview(buffer.data).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, target: Any) -> int:
        out = memoryview(target).cast("B")
        n = max(0, min(len(out), len(self._view) - self._pos))
        out[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n


def _read_h5(
    source: Path | io.RawIOBase, path: Path, buffer: npt.NDArray[np.uint8] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    import h5py

    try:
        with h5py.File(source, "r") as handle:
            if "features" not in handle:
                raise InputError(f"no 'features' dataset (found: {sorted(handle.keys())})",
                                 file=path, column="features",
                                 fix="write CLAM/TRIDENT .h5 with a 'features' N x D dataset")
            dataset = handle["features"]
            if not isinstance(dataset, h5py.Dataset):
                raise InputError("'features' is a group, not a dataset", file=path,
                                 column="features")
            features = _read_dataset(handle, "features", buffer)
            coords = _read_dataset(handle, "coords", buffer) if "coords" in handle else None
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"unreadable or truncated HDF5 file ({exc.__class__.__name__}: {exc})",
                         file=path, fix="re-extract or re-copy the file") from None
    if features.ndim == 3 and features.shape[0] == 1:  # some extractors keep a batch axis
        features = features[0]
    if coords is not None and coords.ndim == 3 and coords.shape[0] == 1:
        coords = coords[0]
    if coords is not None and (coords.ndim != 2 or coords.shape[0] != features.shape[0]):
        raise InputError(f"coords shape {coords.shape} does not match features {features.shape}",
                         file=path, column="coords",
                         fix="write one (x, y) row per patch in 'coords'")
    return features, None if coords is None else coords.astype(np.int64)


def _dataset_view(dataset: Any, buffer: npt.NDArray[np.uint8] | None) -> np.ndarray | None:
    """A 2-d numeric dataset straight from the file bytes, when the layout allows (else None).

    Contiguous and uncompressed: a zero-copy view. Chunked but unfiltered with
    full-width chunks (CLAM writes 1-row chunks): a copy of each chunk's bytes, much
    faster than HDF5's per-chunk reads through a Python file object.
    """
    dtype = dataset.dtype
    if (buffer is None or dataset.ndim != 2 or dtype.kind not in "fiu"
            or dtype.byteorder == ">" or dataset.size == 0):
        return None
    n, d = dataset.shape
    if dataset.chunks is None:
        offset = dataset.id.get_offset()
        if offset is None or offset + dtype.itemsize * n * d > buffer.size:
            return None
        return np.frombuffer(buffer, dtype=dtype, count=n * d, offset=offset).reshape(n, d)
    return _unfiltered_chunks(dataset, buffer, n, d)


def _unfiltered_chunks(dataset: Any, buffer: npt.NDArray[np.uint8], n: int, d: int
                       ) -> np.ndarray | None:
    rows_per_chunk, width = dataset.chunks
    if width != d or dataset.id.get_create_plist().get_nfilters():
        return None
    chunks: list[tuple[int, int]] = []
    try:
        dataset.id.chunk_iter(lambda info: chunks.append((info.chunk_offset[0], info.byte_offset)))
    except (AttributeError, RuntimeError):  # older HDF5 without chunk iteration
        return None
    if len(chunks) != -(-n // rows_per_chunk):  # unallocated chunks hold fill values
        return None
    rows, offsets = np.array(sorted(chunks), dtype=np.int64).T
    row_bytes = dataset.dtype.itemsize * d
    chunk_bytes = rows_per_chunk * row_bytes
    sizes = np.minimum(rows_per_chunk, n - rows) * row_bytes
    if np.any(offsets + sizes > buffer.size):
        return None
    # copy runs of chunks that lie back to back in the file (CLAM writes them in batches)
    breaks = np.flatnonzero(np.diff(offsets) != chunk_bytes) + 1
    out = np.empty((n, d), dtype=dataset.dtype)
    flat = out.reshape(-1).view(np.uint8)
    for start, stop in zip(np.r_[0, breaks], np.r_[breaks, len(rows)], strict=True):
        first, nbytes = int(rows[start]) * row_bytes, int(sizes[start:stop].sum())
        flat[first : first + nbytes] = buffer[offsets[start] : offsets[start] + nbytes]
    return out


def _read_dataset(handle: Any, name: str, buffer: npt.NDArray[np.uint8] | None) -> np.ndarray:
    dataset = handle[name]
    view = _dataset_view(dataset, buffer)
    return np.asarray(dataset[()]) if view is None else view


def _read_pt(source: Path | BinaryIO, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    import torch

    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise InputError(f"unreadable .pt file ({exc.__class__.__name__})", file=path,
                         fix="save a tensor (N, D) or {'features': tensor} with torch.save") from None
    coords = None
    if isinstance(obj, dict):
        if "features" not in obj:
            raise InputError(f"dict without 'features' (keys: {sorted(obj)})", file=path,
                             column="features")
        coords = obj.get("coords")
        obj = obj["features"]
    if not isinstance(obj, torch.Tensor):
        raise InputError(f"expected a tensor, found {type(obj).__name__}", file=path)
    feats = obj.detach().float().numpy()
    if feats.ndim == 3 and feats.shape[0] == 1:
        feats = feats[0]
    c = None if coords is None else np.asarray(coords, dtype=np.int64)
    if c is not None and (c.ndim != 2 or c.shape[0] != feats.shape[0]):
        raise InputError(f"coords shape {c.shape} does not match features {feats.shape}",
                         file=path, column="coords",
                         fix="save one (x, y) row per patch in 'coords'")
    return feats, c


def _validate_features(features: np.ndarray, path: Path) -> npt.NDArray[np.float32]:
    if features.ndim != 2:
        raise InputError(f"features must be 2-d (N patches x D), got shape {features.shape}",
                         file=path, column="features")
    if features.shape[0] == 0:
        raise InputError("bag has no patches", file=path, column="features",
                         fix="re-run patching; a slide needs at least one tissue patch")
    if not (np.issubdtype(features.dtype, np.floating) or np.issubdtype(features.dtype, np.integer)):
        raise InputError(f"features must be numeric, got dtype {features.dtype}", file=path,
                         column="features")
    feats = np.asarray(features, dtype=np.float32)
    # A column sum is finite when every value is (bar float32 overflow, checked below);
    # it costs a tenth of an element-wise isfinite over the whole bag.
    with np.errstate(over="ignore", invalid="ignore"):
        column_sums = feats.sum(axis=0)
    if np.isfinite(column_sums).all():
        return feats
    finite = np.isfinite(feats)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise InputError("features contain NaN or inf", file=path, row=f"patch {row}",
                         column="features", fix="re-extract the slide's features")
    return feats
