"""Content hashes of bag files, each recorded with its algorithm.

New slides are hashed with :data:`DEFAULT_ALGORITHM` (``xxh3_128``: 4 ms of CPU for a
41 MB bag here against 34 ms for sha256, measured in docs/benchmarks.md). The hash detects a
bag file rewritten with other bytes; it is not a defence against someone forging a
collision, which nothing in casegraph's threat model needs (the files are the user's
own). Stores written before carry ``sha256``; both stay valid, and ``casegraph doctor``
re-hashes each slide with the algorithm its row names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from casegraph.errors import InputError

DEFAULT_ALGORITHM = "xxh3_128"
LEGACY_ALGORITHM = "sha256"  # what a slide row without an algorithm was hashed with
READ_CHUNK = 1 << 22


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


def _xxh3_128() -> Hasher:
    import xxhash

    return xxhash.xxh3_128()


ALGORITHMS: dict[str, Callable[[], Hasher]] = {
    "xxh3_128": _xxh3_128,
    "sha256": hashlib.sha256,
}


def new_hasher(algorithm: str) -> Hasher:
    """A fresh incremental hasher for ``algorithm`` (a key of :data:`ALGORITHMS`)."""
    try:
        return ALGORITHMS[algorithm]()
    except KeyError:
        raise InputError(f"unknown content-hash algorithm {algorithm!r}",
                         fix=f"use one of {', '.join(sorted(ALGORITHMS))}") from None


def hash_file(path: str | Path, algorithm: str = DEFAULT_ALGORITHM,
              chunk_size: int = READ_CHUNK) -> str:
    """Hex digest of the file's bytes with ``algorithm``."""
    hasher = new_hasher(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            hasher.update(chunk)
    return hasher.hexdigest()
