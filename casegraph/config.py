"""Configuration from the environment (and secret files), never from code.

Variables:
- ``CASEGRAPH_STORE``: default store directory (default ``./casegraph-store``).
- ``CASEGRAPH_SHARED_DATA``: the shared TCGA data folder (default ``../shared/data``).
- ``CASEGRAPH_NEO4J_URI``: Bolt URI; when unset the embedded (DuckDB) graph store is used.
- ``CASEGRAPH_NEO4J_USER`` (default ``neo4j``), ``CASEGRAPH_NEO4J_PASSWORD`` or
  ``CASEGRAPH_NEO4J_PASSWORD_FILE``.
- ``CASEGRAPH_API_KEYS`` (comma separated) or ``CASEGRAPH_API_KEYS_FILE`` (one per line).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from casegraph.errors import CasegraphError


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


def neo4j_settings() -> Neo4jSettings | None:
    uri = os.environ.get("CASEGRAPH_NEO4J_URI")
    if not uri:
        return None
    return Neo4jSettings(
        uri=uri,
        user=os.environ.get("CASEGRAPH_NEO4J_USER", "neo4j"),
        password=read_secret("CASEGRAPH_NEO4J_PASSWORD"),
    )


def api_keys() -> frozenset[str]:
    raw = os.environ.get("CASEGRAPH_API_KEYS")
    if raw:
        return frozenset(k.strip() for k in raw.split(",") if k.strip())
    file_name = os.environ.get("CASEGRAPH_API_KEYS_FILE")
    if file_name:
        lines = Path(file_name).read_text(encoding="utf-8").splitlines()
        return frozenset(k.strip() for k in lines if k.strip() and not k.startswith("#"))
    return frozenset()
