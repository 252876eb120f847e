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


DEVICE_KINDS = ("cpu", "cuda", "mps")


def pick_device(requested: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``; an explicit device
    (``cpu``, ``cuda``, ``cuda:1``, ``mps``) is checked, so asking for a GPU this machine
    does not have is a one-line InputError, not a CUDA traceback at the first tensor."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = str(requested).partition(":")
    if kind not in DEVICE_KINDS or (index and not index.isdigit()):
        raise _device_error(f"unknown device {requested!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise _device_error(f"device {requested!r} asked for, but no CUDA device is visible")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise _device_error(f"device {requested!r} asked for, but only "
                            f"{torch.cuda.device_count()} CUDA device(s) are visible")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise _device_error("device 'mps' asked for, but no Apple GPU is available")
    return str(requested)


def loading_device(trained_on: str) -> str:
    """Where a saved model answers: the device it was configured for when this machine has
    it, else the CPU -- a model trained on a GPU loads (``map_location``) anywhere."""
    from casegraph.errors import InputError

    try:
        return pick_device(trained_on)
    except InputError:
        return "cpu"


def _device_error(problem: str) -> Exception:
    from casegraph.errors import InputError

    return InputError(problem, column="device",
                      fix=f"use device=auto, or one of {', '.join(DEVICE_KINDS)} that exists here")


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
