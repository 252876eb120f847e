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
    for step in ("1. ingest the first batch", "2. train MSRL", "3. case graph",
                 "4. ingest the second batch", "5. attach", "6. case graph, by delta",
                 "7. train a baseline", "8. WSI-only query", "demo finished"):
        assert step in result.stdout
    assert "168 new patients" in result.stdout and "30 new patients" in result.stdout
    assert "30 patients attached" in result.stdout
    attached = result.stdout.split("neighbours that arrived after training (attached): ")[1]
    assert not attached.startswith("none"), result.stdout[-3000:]
    assert (store / "store.duckdb").is_file()
