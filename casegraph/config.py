"""Configuration from the environment (and secret files), never from code.

Variables:
- ``CASEGRAPH_STORE``: default store directory (default ``./casegraph-store``).
- ``CASEGRAPH_SHARED_DATA``: the shared TCGA data folder (default ``../shared/data``).
- ``CASEGRAPH_NEO4J_URI``: Bolt URI; when unset the embedded (DuckDB) graph store is used.
- ``CASEGRAPH_NEO4J_USER`` (default ``neo4j``), ``CASEGRAPH_NEO4J_PASSWORD`` or
  ``CASEGRAPH_NEO4J_PASSWORD_FILE``.
- ``CASEGRAPH_API_KEYS`` (comma separated) or ``CASEGRAPH_API_KEYS_FILE`` (one per line).
- ``CASEGRAPH_MAX_BAG_PATCHES`` (default 250,000) and ``CASEGRAPH_MAX_BAG_BYTES`` (default
  250,000 x 1,024 x 4 bytes, ~977 MiB): the most patches and decompressed feature bytes one
  bag, and all files of one query together, may hold (:func:`bag_limits`). TRIDENT's
  largest slides have ~200k patches; UNI/CONCH features are 1,024-d float32.
- ``CASEGRAPH_MAX_BODY_BYTES`` (default 256 MiB): the service's request body limit.
- ``CASEGRAPH_THREADS`` (default 1): torch/FAISS threads of each service worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from casegraph.errors import CasegraphError

DEFAULT_MAX_BAG_PATCHES = 250_000
DEFAULT_MAX_BAG_BYTES = DEFAULT_MAX_BAG_PATCHES * 1024 * 4
DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024  # a 10,000 x 1024 float32 bag is ~40 MiB


def default_store_path() -> Path:
    return Path(os.environ.get("CASEGRAPH_STORE", "casegraph-store"))


def shared_data_path() -> Path:
    return Path(os.environ.get("CASEGRAPH_SHARED_DATA", "../shared/data"))


def read_secret(name: str) -> str | None:
    """The value of env ``NAME``, or the stripped content of the file named by ``NAME_FILE``."""
    value = os.environ.get(name)
    if value:
        return value
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        path = Path(file_name)
        if not path.is_file():
            raise CasegraphError(f"{name}_FILE points to {path}, which is not a readable file")
        return path.read_text(encoding="utf-8").strip()
    return None


@dataclass(frozen=True)
class Neo4jSettings:
    uri: str
    user: str
    password: str | None = None

    def __repr__(self) -> str:  # never print the password
        return f"Neo4jSettings(uri={self.uri!r}, user={self.user!r}, password=***)"


def generated_password_file() -> Path:
    """Where ``casegraph neo4j start`` keeps the password it generates when none is
    configured (mode 600): ``CASEGRAPH_CONFIG_DIR`` (default ``~/.config/casegraph``)."""
    root = os.environ.get("CASEGRAPH_CONFIG_DIR") or str(Path.home() / ".config" / "casegraph")
    return Path(root) / "neo4j-password"


def ensure_generated_password() -> tuple[Path, bool]:
    """(the generated password file, whether it was created now); the password is never
    returned or printed, only the file's path."""
    import secrets

    path = generated_password_file()
    if path.is_file():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(secrets.token_urlsafe(24) + "\n")
    return path, True


def neo4j_settings() -> Neo4jSettings | None:
    """From the environment; without a configured password, the generated one (if any)."""
    uri = os.environ.get("CASEGRAPH_NEO4J_URI")
    if not uri:
        return None
    password = read_secret("CASEGRAPH_NEO4J_PASSWORD")
    generated = generated_password_file()
    if password is None and generated.is_file():
        password = generated.read_text(encoding="utf-8").strip()
    return Neo4jSettings(uri=uri, user=os.environ.get("CASEGRAPH_NEO4J_USER", "neo4j"),
                         password=password)


def api_keys() -> frozenset[str]:
    raw = os.environ.get("CASEGRAPH_API_KEYS")
    if raw:
        return frozenset(k.strip() for k in raw.split(",") if k.strip())
    file_name = os.environ.get("CASEGRAPH_API_KEYS_FILE")
    if file_name:
        lines = Path(file_name).read_text(encoding="utf-8").splitlines()
        return frozenset(k.strip() for k in lines if k.strip() and not k.startswith("#"))
    return frozenset()


@dataclass(frozen=True)
class BagLimits:
    """The most patches and decompressed feature bytes a bag (or one query's bags) holds."""

    max_patches: int = DEFAULT_MAX_BAG_PATCHES
    max_bytes: int = DEFAULT_MAX_BAG_BYTES


def bag_limits() -> BagLimits:
    return BagLimits(max_patches=positive_int_env("CASEGRAPH_MAX_BAG_PATCHES",
                                                  DEFAULT_MAX_BAG_PATCHES),
                     max_bytes=positive_int_env("CASEGRAPH_MAX_BAG_BYTES", DEFAULT_MAX_BAG_BYTES))


def positive_int_env(name: str, default: int) -> int:
    """A whole number >= 1 from env ``name`` (underscores allowed), or ``default`` when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    value = raw.replace("_", "")
    if not value.isdigit() or int(value) < 1:
        raise CasegraphError(f"{name}={raw!r} is not a whole number >= 1; unset it for the "
                             f"default ({default})")
    return int(value)
