"""The main job end to end: ``casegraph demo`` on tiny settings in a subprocess, then the
demo's Cypher step (scripts/demo_cypher.sh) against its own throwaway Neo4j."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_store_cmds import run_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    store = tmp_path_factory.mktemp("demo") / "demo"
    result = run_cli("demo", "--store", str(store), "--patches", "32", "--dim", "16",
                     "--epochs", "2")
    return store, result


@pytest.mark.slow
def test_demo_runs_every_step(demo_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    store, result = demo_run
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


@pytest.mark.slow
def test_demo_cypher_step_answers_the_cookbook_queries(
        demo_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """The third use in the main job: the demo's case graph synced into a throwaway Neo4j
    and explored with the cookbook's `lineage` and `attach-added` queries."""
    if not (shutil.which("java") and shutil.which("mvn")):
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have Java and Maven for the demo's Neo4j step")
        pytest.skip("Java and Maven are not installed: the demo stays embedded")
    store, demo = demo_run
    assert demo.returncode == 0, demo.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEGRAPH_NEO4J")}
    result = subprocess.run(["bash", str(REPO / "scripts" / "demo_cypher.sh"), str(store)],
                            capture_output=True, text=True, env=env, cwd=REPO)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    out = result.stdout
    assert "cookbook 'lineage'" in out and "cookbook 'attach-added'" in out, out[-3000:]
    lineage = out.split("cookbook 'lineage'")[1].split("cookbook 'attach-added'")[0]
    assert "own_edges" in lineage and "depth" in lineage
    added = out.split("cookbook 'attach-added'")[1]
    assert "new_neighbours" in added and "risk" in added
    assert "password" not in (out + result.stderr).lower().replace("password file", "")
