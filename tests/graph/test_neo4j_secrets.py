"""The Neo4j password never shows up in errors, reprs, CLI output or the server's logs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from casegraph.config import Neo4jSettings
from casegraph.errors import CasegraphError
from casegraph.graph.neo4j_store import Neo4jGraphStore, redact_uri
from casegraph.ingest.store import Store

URI_SECRET = "Zq7uriSecret"
ENV_SECRET = "Wx4envSecret"
CLI = "from casegraph.cli import main; main()"


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


def _free_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _uris(port: int) -> list[str]:
    host = f"127.0.0.1:{port}"
    return [
        f"bolt://neo4j:{URI_SECRET}@{host}", f"neo4j://neo4j:{URI_SECRET}@{host}",
        f"bolt+s://neo4j:{URI_SECRET}@localhost:{port}", f"bolt://{URI_SECRET}@{host}",
        f"bolt://neo4j:pa%2F{URI_SECRET}@{host}", f"bolt://neo4j:pa/{URI_SECRET}@{host}",
        f"bolt://neo4j:p@{URI_SECRET}@{host}", f"neo4j+ssc://neo4j:{URI_SECRET}@{host}/?x=1",
        f"neo4j:{URI_SECRET}@{host}", f"bolt://{host}", f"bolt://[::1]:{port}",
        "bolt://", "http://127.0.0.1:1", "not a uri at all",
    ]


@pytest.mark.parametrize("uri", [u for u in _uris(1) if "@" in u])
def test_redact_uri_drops_all_userinfo(uri: str) -> None:
    shown = redact_uri(uri)
    assert URI_SECRET not in shown and "neo4j:" not in shown.partition("://")[2]
    assert shown.endswith(uri.rpartition("@")[2])


@pytest.mark.slow
@pytest.mark.parametrize("command", [["graph", "sync"], ["graph", "stats"],
                                     ["cypher", "RETURN 1"]])
def test_failing_connection_output_shows_no_secret(store: Store, command: list[str]) -> None:
    """Real CLI processes against a port where nothing listens: stdout + stderr hold neither
    the URI's password nor CASEGRAPH_NEO4J_PASSWORD, and say what is wrong in one line."""
    store.close()
    for uri in _uris(_free_port()):
        env = {**os.environ, "CASEGRAPH_NEO4J_URI": uri, "CASEGRAPH_NEO4J_PASSWORD": ENV_SECRET}
        args = [*command, "--store", str(store.root)] if command[0] == "graph" else command
        done = subprocess.run([sys.executable, "-c", CLI, *args], env=env, capture_output=True,
                              text=True, check=False)
        output = done.stdout + done.stderr
        assert done.returncode == 1, (uri, output)
        assert URI_SECRET not in output and ENV_SECRET not in output, (uri, output)
        assert "Traceback" not in output and len(output.strip().splitlines()) == 1, output
        assert "CASEGRAPH_NEO4J_URI" in output or "cannot reach Neo4j" in output, output
