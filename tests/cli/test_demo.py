"""The main job end to end: ``casegraph demo`` on tiny settings in a subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_store_cmds import run_cli


@pytest.mark.slow
def test_demo_runs_every_step(tmp_path: Path) -> None:
    store = tmp_path / "demo"
    result = run_cli("demo", "--store", str(store), "--patches", "32", "--dim", "16",
                     "--epochs", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    for step in ("1. ingest", "2. train a baseline", "3. train MSRL", "4. case graph",
                 "5. WSI-only query", "demo finished"):
        assert step in result.stdout
    assert "198 new patients" in result.stdout
    assert (store / "store.duckdb").is_file()
