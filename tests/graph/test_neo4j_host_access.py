"""The deploy/neo4j server never lets Cypher read a host file or reach a URL: tried through a
raw Bolt session with the password (what any user of the server has), and through
`casegraph cypher`."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from casegraph.cli import app
from casegraph.config import Neo4jSettings

pytestmark = pytest.mark.neo4j

LOAD = "LOAD CSV FROM $url AS row RETURN row LIMIT 3"


class _RecordingServer(http.server.ThreadingHTTPServer):
    hits: list[str]


class _Recorder(http.server.BaseHTTPRequestHandler):
    server: _RecordingServer

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"a,b\n1,2\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web_server() -> Iterator[tuple[int, list[str]]]:
    """A real HTTP server on loopback serving a CSV; yields (port, requested paths)."""
    server = _RecordingServer(("127.0.0.1", 0), _Recorder)
    server.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], server.hits
    server.shutdown()
    server.server_close()


@pytest.fixture
def password_file(tmp_path: Path, neo4j_config: Neo4jSettings) -> Path:
    """A host file holding the server's password, as CASEGRAPH_NEO4J_PASSWORD_FILE would."""
    path = tmp_path / "neo4j-password"
    path.write_text(f"{neo4j_config.password}\n", encoding="utf-8")
    return path


def _urls(password_file: Path, port: int) -> list[str]:
    return [
        "file:///etc/passwd", "file:/etc/passwd", "file://localhost/etc/passwd",
        "file:///../../../../etc/passwd", "file:///etc/hostname",
        password_file.as_uri(), f"file://{password_file}", "file:///nothing-here.csv",
        f"http://127.0.0.1:{port}/x.csv", f"http://localhost:{port}/x.csv",
        f"http://[::1]:{port}/x.csv", f"https://127.0.0.1:{port}/x.csv",
        f"ftp://127.0.0.1:{port}/x.csv", "http://169.254.169.254/latest/meta-data/",
        "jar:file:///etc/passwd!/x", "netdoc:///etc/passwd",
    ]


@pytest.mark.parametrize("access", ["read", "write"])
def test_load_csv_of_host_files_and_urls_fails_over_raw_bolt(
    neo4j_config: Neo4jSettings, password_file: Path,
    web_server: tuple[int, list[str]], access: str,
) -> None:
    from neo4j import GraphDatabase, ManagedTransaction
    from neo4j.exceptions import ClientError

    port, hits = web_server
    auth = (neo4j_config.user, neo4j_config.password or "")
    opened = []
    with GraphDatabase.driver(neo4j_config.uri, auth=auth) as driver:
        for url in _urls(password_file, port):
            def load(tx: ManagedTransaction, u: str = url) -> list[object]:
                return [r["row"] for r in tx.run(LOAD, url=u)]

            with driver.session() as session:
                run = session.execute_read if access == "read" else session.execute_write
                try:
                    rows = run(load)
                except ClientError as exc:
                    assert exc.code == "Neo.ClientError.Statement.ExternalResourceFailed", url
                    continue
                opened.append((url, rows))
    assert opened == []
    assert hits == []  # the server never even connected to the loopback web server


def test_no_procedure_reads_files_or_urls(neo4j_config: Neo4jSettings) -> None:
    """Community's built-ins only; no plugin (apoc.load.*, apoc.import.*) is loaded."""
    from neo4j import GraphDatabase

    auth = (neo4j_config.user, neo4j_config.password or "")
    with GraphDatabase.driver(neo4j_config.uri, auth=auth) as driver:
        records, _, _ = driver.execute_query("SHOW PROCEDURES YIELD name RETURN name")
        names = [r["name"] for r in records]
        report, _, _ = driver.execute_query(
            "CALL dbms.listConfig() YIELD name, value RETURN name, value")
        config = {r["name"]: r["value"] for r in report}
    assert names and all(n.split(".")[0] in ("db", "dbms", "tx") for n in names), names
    assert not [n for n in names if any(w in n.lower() for w in ("load", "import", "file",
                                                                 "url", "http", "export"))]
    assert config["dbms.security.allow_csv_import_from_file_urls"] == "false"
    import_dir = Path(config["server.directories.import"])
    assert import_dir.is_dir() and not any(import_dir.iterdir())
    assert str(neo4j_config.password) not in str(config)


@pytest.mark.parametrize("write", [False, True])
def test_casegraph_cypher_refuses_load_csv(
    neo4j_cli_env: None, neo4j_config: Neo4jSettings, password_file: Path,
    web_server: tuple[int, list[str]], write: bool,
) -> None:
    port, hits = web_server
    for url in _urls(password_file, port)[::3]:
        args = ["cypher", LOAD, "--param", f"url={url}", *(["--write"] if write else [])]
        result = CliRunner().invoke(app, args)
        shown = result.output + str(result.exception)
        assert result.exit_code != 0, (url, result.output)
        assert "root:" not in shown and str(neo4j_config.password) not in shown
        refusal = "--write" if not write else "Neo.ClientError.Statement.ExternalResourceFailed"
        assert refusal in shown, shown
    assert hits == []
