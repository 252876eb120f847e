"""Patch-feature bags: CLAM/TRIDENT ``.h5`` (``features`` N x D, ``coords`` N x 2) and ``.pt``.

A ``.pt`` file holds either a tensor (N, D) or a dict with ``features`` (and optional
``coords``). Every failure becomes an :class:`~casegraph.errors.InputError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    path = Path(path)
    if not path.is_file():
        raise InputError("patch-feature file not found", file=path,
                         fix="check the path, or re-run ingest with the moved files")
    if path.stat().st_size == 0:
        raise InputError("patch-feature file is empty", file=path, fix="re-extract the features")
    if path.suffix == ".h5":
        features, coords = _read_h5(path)
    elif path.suffix == ".pt":
        features, coords = _read_pt(path)
    else:
        raise InputError(f"unsupported bag format {path.suffix!r}", file=path,
                         fix="use CLAM/TRIDENT .h5 or .pt files")
    return Bag(path=path, features=_validate_features(features, path), coords=coords)


def _read_h5(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if "features" not in handle:
                raise InputError(f"no 'features' dataset (found: {sorted(handle.keys())})",
                                 file=path, column="features",
                                 fix="write CLAM/TRIDENT .h5 with a 'features' N x D dataset")
            features = np.asarray(handle["features"][()])
            coords = np.asarray(handle["coords"][()]) if "coords" in handle else None
    except InputError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"unreadable or truncated HDF5 file ({exc.__class__.__name__}: {exc})",
                         file=path, fix="re-extract or re-copy the file") from None
    if features.ndim == 3 and features.shape[0] == 1:  # some extractors keep a batch axis
        features = features[0]
    if coords is not None and coords.ndim == 3 and coords.shape[0] == 1:
        coords = coords[0]
    if coords is not None and (coords.ndim != 2 or coords.shape[0] != features.shape[0]):
        raise InputError(f"coords shape {coords.shape} does not match features {features.shape}",
                         file=path, column="coords")
    return features, None if coords is None else coords.astype(np.int64)


def _read_pt(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
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
    return feats, c


def _validate_features(features: np.ndarray, path: Path) -> npt.NDArray[np.float32]:
    if features.ndim != 2:
        raise InputError(f"features must be 2-d (N patches x D), got shape {features.shape}",
                         file=path, column="features")
    if features.shape[0] == 0:
        raise InputError("bag has no patches", file=path, column="features",
                         fix="re-run patching; a slide needs at least one tissue patch")
    feats = np.asarray(features, dtype=np.float32)
    finite = np.isfinite(feats)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise InputError("features contain NaN or inf", file=path, row=f"patch {row}",
                         column="features", fix="re-extract the slide's features")
    return feats
