"""Patch-feature bags: CLAM/TRIDENT ``.h5`` (``features`` N x D, ``coords`` N x 2) and ``.pt``.

A ``.pt`` file holds either a tensor (N, D) or a dict with ``features`` (and optional
``coords``). Every failure becomes an :class:`~casegraph.errors.InputError` naming the file.

Provenance: the HDF5 attributes of the file, of ``features`` and of ``coords`` (TRIDENT's
``patch_size_level0``, ``patch_size``, ``level0_magnification``, CLAM's ``patch_level``,
encoder names, ...) and a ``.pt`` dict's scalar entries become :attr:`Bag.attrs`
(:func:`provenance_attributes`).

Memory is bounded (:class:`~casegraph.config.BagLimits`, env ``CASEGRAPH_MAX_BAG_PATCHES``
and ``CASEGRAPH_MAX_BAG_BYTES``): an HDF5 dataset's shape and dtype are checked before a
byte of it is read or decompressed, a ``.pt`` zip's declared uncompressed size before it is
loaded; a bag over a limit is a :class:`BagTooLarge` (the service answers 413).
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from casegraph.config import BagLimits, bag_limits
from casegraph.errors import InputError

BAG_SUFFIXES = (".h5", ".pt")
COORD_BYTES_PER_PATCH = 2 * 8  # (x, y) int64, allowed beside the features in a .pt file
LIMIT_FIX = "subsample the slide's patches, or raise the limit ({env}) where memory allows"


class BagTooLarge(InputError):
    """A bag (or one query's bags together) over a :class:`BagLimits` limit."""


def check_bag_size(n_patches: int, nbytes: int, limits: BagLimits, where: str | Path,
                   what: str = "bag") -> None:
    """Refuse ``n_patches`` / ``nbytes`` of decompressed features above ``limits``."""
    if n_patches > limits.max_patches:
        raise BagTooLarge(f"{what} has {n_patches:,} patches, more than the limit of "
                          f"{limits.max_patches:,}", file=where, column="features",
                          fix=LIMIT_FIX.format(env="CASEGRAPH_MAX_BAG_PATCHES"))
    if nbytes > limits.max_bytes:
        raise BagTooLarge(f"{what} holds {nbytes:,} bytes of features once decompressed, more "
                          f"than the limit of {limits.max_bytes:,}", file=where,
                          column="features", fix=LIMIT_FIX.format(env="CASEGRAPH_MAX_BAG_BYTES"))


@dataclass
class Bag:
    """One slide's patches: ``features`` (N, D) float32, ``coords`` (N, 2) int or None,
    ``attrs`` the file's provenance attributes (JSON-ready scalars and short lists)."""

    path: Path
    features: npt.NDArray[np.float32]
    coords: npt.NDArray[np.int64] | None
    attrs: dict[str, object] = field(default_factory=dict)
    # (D,) float32 sums over the patches, from the validation pass (None when they
    # overflowed): the mean embedding reuses them instead of a second pass over the bag.
    column_sums: npt.NDArray[np.float32] | None = None

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


def read_bag(path: str | Path, limits: BagLimits | None = None) -> Bag:
    """Read and validate one bag file (``.h5`` or ``.pt``), within ``limits`` (default: env)."""
    path = Path(path)
    limits = limits or bag_limits()
    if not path.is_file():
        raise InputError("patch-feature file not found", file=path,
                         fix="check the path, or re-run ingest with the moved files")
    if path.stat().st_size == 0:
        raise InputError("patch-feature file is empty", file=path, fix="re-extract the features")
    if path.suffix == ".h5":
        return parse_bag(np.fromfile(path, dtype=np.uint8), path, limits)
    if path.suffix == ".pt":
        features, coords, attrs = _read_pt(path, path, limits)
        feats, sums = _validate_features(features, path)
        return Bag(path=path, features=feats, coords=coords, attrs=attrs, column_sums=sums)
    raise _unsupported(path)


def parse_bag(data: npt.NDArray[np.uint8] | bytes, path: str | Path,
              limits: BagLimits | None = None) -> Bag:
    """Parse a bag from the bytes of the file at ``path`` (already read, e.g. for hashing).

    For an uncompressed contiguous float32 ``features`` dataset (what CLAM and the
    simulator write) the features are a zero-copy view into ``data``.
    """
    path = Path(path)
    limits = limits or bag_limits()
    # bytes are immutable: copy them so that the features are a writable array, as always
    buffer = np.frombuffer(bytearray(data), dtype=np.uint8) if isinstance(data, bytes) else data
    if buffer.size == 0:
        raise InputError("patch-feature file is empty", file=path, fix="re-extract the features")
    if path.suffix == ".h5":
        features, coords, attrs = _read_h5(_BufferFile(buffer), path, limits, buffer)
    elif path.suffix == ".pt":
        features, coords, attrs = _read_pt(io.BytesIO(buffer.tobytes()), path, limits)
    else:
        raise _unsupported(path)
    feats, sums = _validate_features(features, path)
    return Bag(path=path, features=feats, coords=coords, attrs=attrs, column_sums=sums)


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
    source: Path | io.RawIOBase, path: Path, limits: BagLimits,
    buffer: npt.NDArray[np.uint8] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, object]]:
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
            _check_h5_layout(handle, path, limits)
            features = _read_dataset(handle, "features", buffer)
            coords = _read_dataset(handle, "coords", buffer) if "coords" in handle else None
            attrs = provenance_attributes([("file", handle.attrs), ("features", dataset.attrs)]
                                          + ([("coords", handle["coords"].attrs)]
                                             if coords is not None else []))
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
    return features, None if coords is None else coords.astype(np.int64), attrs


MAX_ATTRIBUTE_ITEMS = 64  # longer arrays (e.g. a stored thumbnail) are not provenance


def provenance_attributes(sources: list[tuple[str, Any]]) -> dict[str, object]:
    """Flat ``{name: value}`` of the JSON-ready attributes of ``(where, mapping)`` pairs.

    Values: str (bytes decoded), bool, int, finite float, or a list of at most
    ``MAX_ATTRIBUTE_ITEMS`` of those; anything else (a long array, an object
    reference, NaN) is not provenance and is left out. A name found in two places with
    different values is kept as ``<where>.<name>`` for each (where = ``file``,
    ``features``, ``coords``), so that no value is silently overwritten.
    """
    found: dict[str, list[tuple[str, object]]] = {}
    for where, mapping in sources:
        for name in mapping:
            try:
                value = _json_value(mapping[name])
            except (OSError, TypeError, ValueError):  # an attribute h5py cannot decode
                continue
            if value is not None:
                found.setdefault(str(name), []).append((where, value))
    out: dict[str, object] = {}
    for name, entries in sorted(found.items()):
        if all(value == entries[0][1] for _, value in entries):
            out[name] = entries[0][1]
        else:
            out.update({f"{where}.{name}": value for where, value in entries})
    return out


def _json_value(value: Any) -> object | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return _json_value(value[()])
        if value.size > MAX_ATTRIBUTE_ITEMS or value.ndim != 1:
            return None
        items = [_json_value(v) for v in value.tolist()]
        return None if any(v is None for v in items) else items
    if isinstance(value, np.generic):
        return _json_value(value.item())
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None


def _check_h5_layout(handle: Any, path: Path, limits: BagLimits) -> None:
    """Shape, dtype and size of ``features`` (and ``coords``) from the HDF5 metadata alone:
    nothing is read or decompressed before these pass."""
    import h5py

    dataset = handle["features"]
    shape, dtype = tuple(dataset.shape), dataset.dtype
    if not (len(shape) == 2 or (len(shape) == 3 and shape[0] == 1)):
        raise InputError(f"features must be 2-d (N patches x D), got shape {shape}",
                         file=path, column="features")
    if dtype.kind not in "fiu":
        raise InputError(f"features must be numeric, got dtype {dtype}", file=path,
                         column="features")
    n, d = shape[-2:]
    check_bag_size(n, n * d * max(dtype.itemsize, 4), limits, path)
    if "coords" not in handle:
        return
    coords = handle["coords"]
    rows = tuple(coords.shape)[-2:-1] if isinstance(coords, h5py.Dataset) else ()
    width = tuple(coords.shape)[-1] if isinstance(coords, h5py.Dataset) and coords.ndim else 0
    if (not isinstance(coords, h5py.Dataset) or coords.ndim not in (2, 3)
            or (coords.ndim == 3 and coords.shape[0] != 1) or rows != (n,) or width > 3
            or coords.dtype.kind not in "fiu"):
        got = tuple(coords.shape) if isinstance(coords, h5py.Dataset) else "a group"
        raise InputError(f"coords shape {got} does not match features {shape}",
                         file=path, column="coords",
                         fix="write one (x, y) row per patch in 'coords'")


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


def _read_pt(source: Path | BinaryIO, path: Path, limits: BagLimits
             ) -> tuple[np.ndarray, np.ndarray | None, dict[str, object]]:
    import torch

    _check_pt_size(source, path, limits)
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise InputError(f"unreadable .pt file ({exc.__class__.__name__})", file=path,
                         fix="save a tensor (N, D) or {'features': tensor} with torch.save") from None
    coords = None
    attrs: dict[str, object] = {}
    if isinstance(obj, dict):
        if "features" not in obj:
            raise InputError(f"dict without 'features' (keys: {sorted(obj)})", file=path,
                             column="features")
        coords = obj.get("coords")
        attrs = provenance_attributes(
            [("file", {k: v for k, v in obj.items() if k not in ("features", "coords")})])
        obj = obj["features"]
    if not isinstance(obj, torch.Tensor):
        raise InputError(f"expected a tensor, found {type(obj).__name__}", file=path)
    if obj.ndim in (2, 3):
        check_bag_size(int(obj.shape[-2]), obj.numel() * max(obj.element_size(), 4), limits,
                       path)
    feats = obj.detach().float().numpy()
    if feats.ndim == 3 and feats.shape[0] == 1:
        feats = feats[0]
    c = None if coords is None else np.asarray(coords, dtype=np.int64)
    if c is not None and (c.ndim != 2 or c.shape[0] != feats.shape[0]):
        raise InputError(f"coords shape {c.shape} does not match features {feats.shape}",
                         file=path, column="coords",
                         fix="save one (x, y) row per patch in 'coords'")
    return feats, c, attrs


def _check_pt_size(source: Path | BinaryIO, path: Path, limits: BagLimits) -> None:
    """A ``.pt`` zip's declared uncompressed size (a legacy one's file size) within the
    limits, before torch inflates it; the patch count is checked once the tensor is loaded."""
    allowed = limits.max_bytes + limits.max_patches * COORD_BYTES_PER_PATCH
    try:
        size = _pt_declared_size(source)
    except (OSError, zipfile.BadZipFile, ValueError):
        return  # unreadable: torch.load reports it as an unreadable .pt file
    finally:
        if not isinstance(source, Path):
            source.seek(0)
    if size > allowed:
        raise BagTooLarge(f"file holds {size:,} bytes once decompressed, more than the limit "
                          f"of {allowed:,} (features plus coords)", file=path,
                          column="features", fix=LIMIT_FIX.format(env="CASEGRAPH_MAX_BAG_BYTES"))


def _pt_declared_size(source: Path | BinaryIO) -> int:
    if zipfile.is_zipfile(source):
        if not isinstance(source, Path):
            source.seek(0)
        with zipfile.ZipFile(source) as archive:
            return sum(info.file_size for info in archive.infolist())
    if isinstance(source, Path):
        return source.stat().st_size
    return source.seek(0, io.SEEK_END)


def _validate_features(features: np.ndarray, path: Path
                       ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
    """The features as float32 and their column sums (None when those overflowed)."""
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
        return feats, column_sums
    finite = np.isfinite(feats)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise InputError("features contain NaN or inf", file=path, row=f"patch {row}",
                         column="features", fix="re-extract the slide's features")
    return feats, None
