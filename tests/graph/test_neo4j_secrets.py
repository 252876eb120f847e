"""The Neo4j password never shows up in errors, reprs, CLI output or the server's logs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from casegraph.config import Neo4jSettings
from casegraph.errors import CasegraphError
from casegraph.graph.neo4j_store import Neo4jGraphStore


def test_settings_repr_hides_the_password() -> None:
    settings = Neo4jSettings("bolt://127.0.0.1:1", "neo4j", "s3cret-value-xyz")
    assert "s3cret-value-xyz" not in repr(settings) and "s3cret-value-xyz" not in str(settings)


def test_unreachable_server_error_hides_the_password() -> None:
    secret = "unreachable-secret-123"
    with pytest.raises(CasegraphError) as info:
        Neo4jGraphStore.connect(Neo4jSettings("bolt://127.0.0.1:9", "neo4j", secret))
    assert secret not in str(info.value) and "cannot reach Neo4j" in str(info.value)


@pytest.mark.neo4j
def test_wrong_password_error_hides_it(neo4j_config: Neo4jSettings) -> None:
    wrong = "definitely-wrong-password-42"
    bad = Neo4jSettings(neo4j_config.uri, neo4j_config.user, wrong)
    with pytest.raises(CasegraphError) as info:
        Neo4jGraphStore.connect(bad)
    assert wrong not in str(info.value) and "wrong or missing password" in str(info.value)


@pytest.mark.neo4j
def test_store_repr_and_server_logs_hide_the_password(neo4j_config: Neo4jSettings) -> None:
    password = neo4j_config.password
    assert password
    with Neo4jGraphStore.connect(neo4j_config) as graph:
        assert password not in repr(graph)
        graph.ensure_schema()
    run_dir = os.environ.get("CASEGRAPH_NEO4J_RUN_DIR")
    if not run_dir:
        pytest.skip("CASEGRAPH_NEO4J_RUN_DIR unset: server logs not known")
    logs = [p for p in Path(run_dir).rglob("*.log") if p.is_file()]
    assert logs, f"no server logs under {run_dir}"
    for log in logs:
        assert password not in log.read_text(encoding="utf-8", errors="replace"), log
