"""Model files that are loaded without unpickling anything.

Every model weight file casegraph writes is a ``torch.save`` of a dict that holds only
tensors, numbers, strings, booleans, None, lists and dicts, so it loads with
``torch.load(..., weights_only=True)``: a file from elsewhere can never run code. NumPy
arrays are stored as tensors (:func:`to_safe`) and read back with :func:`array`.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from casegraph.errors import InputError

FORMAT = "casegraph-weights/1"


def to_safe(value: Any) -> Any:
    """``value`` with NumPy arrays and scalars turned into tensors and Python numbers."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value).copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_safe(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(to_safe(v) for v in value)
    if isinstance(value, list):
        return [to_safe(v) for v in value]
    return value


def array(value: Any, dtype: type[np.generic] = np.float64) -> npt.NDArray[Any]:
    """A stored tensor (or list) back as a NumPy array of ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().astype(dtype)
    return np.asarray(value, dtype=dtype)


def save_weights(path: str | Path, model: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` (see module doc) for ``model`` to ``path``."""
    torch.save({"format": FORMAT, "model": model, **to_safe(payload)}, path)


def load_weights(path: str | Path, model: str,
                 legacy_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The payload :func:`save_weights` wrote for ``model``; an InputError for any other file.

    ``legacy_keys``: a file without the format mark is still accepted when it holds every
    one of these keys (casegraph's files from before the mark; it was loaded with
    ``weights_only=True`` all the same, so nothing was unpickled)."""
    path = Path(path)
    fix = f"give a weights file written by casegraph for model {model!r}"
    if not path.is_file():
        raise InputError("model weights file not found", file=path, fix=fix)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError,
            ValueError, AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"not a casegraph weights file ({first[:160]})", file=path,
                         fix=fix) from None
    if (legacy_keys and isinstance(blob, dict) and "format" not in blob
            and all(k in blob for k in legacy_keys)):
        return dict(blob)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise InputError("not a casegraph weights file (no casegraph format mark)",
                         file=path, fix=fix)
    if blob.get("model") != model:
        raise InputError(f"weights of model {blob.get('model')!r}, expected {model!r}",
                         file=path, fix=fix)
    return {k: v for k, v in blob.items() if k not in ("format", "model")}
