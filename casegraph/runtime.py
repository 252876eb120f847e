"""Runtime helpers shared by all layers: seeding, device choice, progress bars, hashing."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch global RNGs; return a numpy Generator for explicit use."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return np.random.default_rng(seed)


def pick_device(requested: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def sha256_file(path: str | Path, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """A rich progress bar when stderr is a terminal (and not disabled); plain iteration else."""
    if os.environ.get("CASEGRAPH_NO_PROGRESS") or not _stderr_is_tty():
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=description, total=total, transient=True)


def _stderr_is_tty() -> bool:
    import sys

    return sys.stderr.isatty()
