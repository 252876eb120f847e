"""Shared fixtures: temporary stores, the shared-data folder, tiny literal cohorts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from casegraph.config import shared_data_path
from casegraph.ingest.store import Store

os.environ.setdefault("CASEGRAPH_NO_PROGRESS", "1")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "store")
    yield s
    s.close()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_path()
    if not (path / "tcga").is_dir():
        pytest.skip(f"shared TCGA data not found at {path} (set CASEGRAPH_SHARED_DATA)")
    return path
