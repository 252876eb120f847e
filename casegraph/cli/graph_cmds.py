"""``casegraph neo4j start|stop|status|build``, ``casegraph graph sync|import|stats|prune``,
``casegraph cypher``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import typer

STORE_OPTION = typer.Option(None, "--store", "-s", help="Store directory (env CASEGRAPH_STORE).")
BACKEND_OPTION = typer.Option(
    "auto", "--backend", help="auto (Neo4j when CASEGRAPH_NEO4J_URI is set) | neo4j | embedded.")

neo4j_app = typer.Typer(help="Build, start, stop the local Neo4j (deploy/neo4j).",
                        no_args_is_help=True)
graph_app = typer.Typer(help="The persistent case graph: sync from the store, stats, prune.",
                        no_args_is_help=True)


def _deploy_script(name: str) -> Path:
    from casegraph.errors import CasegraphError

    script = Path(__file__).resolve().parents[2] / "deploy" / "neo4j" / f"{name}.sh"
    if not script.is_file():
        raise CasegraphError(f"{script} not found: `casegraph neo4j` needs a source checkout "
                             "(or use deploy/compose.yaml)")
    return script


def _run_script(*names: str) -> None:
    for name in names:
        code = subprocess.call(["bash", str(_deploy_script(name))])
        if code:
            raise typer.Exit(code)


@neo4j_app.command("build")
def neo4j_build() -> None:
    """Build the server jar with Maven (downloads Neo4j from Maven Central the first time)."""
    _run_script("build")


@neo4j_app.command("start")
def neo4j_start(
    wait: bool = typer.Option(True, help="Wait until the server is ready."),
) -> None:
    """Start the server in the background (port CASEGRAPH_NEO4J_PORT, default 7687). Without
    a configured password it generates one into a file (mode 600) and says where."""
    import os

    from casegraph.config import ensure_generated_password

    if not (os.environ.get("CASEGRAPH_NEO4J_PASSWORD")
            or os.environ.get("CASEGRAPH_NEO4J_PASSWORD_FILE")
            or os.environ.get("CASEGRAPH_NEO4J_NO_AUTH") == "1"):
        path, created = ensure_generated_password()
        os.environ["CASEGRAPH_NEO4J_PASSWORD_FILE"] = str(path)
        typer.echo(f"neo4j: {'generated a password into' if created else 'password from'} "
                   f"{path} (mode 600; set CASEGRAPH_NEO4J_PASSWORD[_FILE] to use your own)")
    _run_script("build", "start", *(["wait-ready"] if wait else []))
    port = os.environ.get("CASEGRAPH_NEO4J_PORT", "7687")
    if not os.environ.get("CASEGRAPH_NEO4J_URI"):
        typer.echo(f"neo4j: to use it, export CASEGRAPH_NEO4J_URI=bolt://127.0.0.1:{port}")


@neo4j_app.command("stop")
def neo4j_stop() -> None:
    """Stop the server (SIGTERM, clean shutdown)."""
    _run_script("stop")


@neo4j_app.command("status")
def neo4j_status() -> None:
    """Say whether the server runs and is ready (exit 1 when not)."""
    _run_script("status")


def _open(store_path: Path | None, read_only: bool = False):  # type: ignore[no-untyped-def]
    from casegraph.config import default_store_path
    from casegraph.ingest.store import Store

    return Store.open(store_path or default_store_path(), create=False, read_only=read_only)


@graph_app.command("sync")
def graph_sync(
    store: Path | None = STORE_OPTION,
    backend: str = BACKEND_OPTION,
    version: list[str] = typer.Option([], "--model-version", "--version", "-v",
                                      help="Model version id to write; repeatable (default all)."),
    batch_size: int = typer.Option(5000, min=1, help="Rows per UNWIND batch / transaction."),
    static_k: int = typer.Option(12, min=1, help="k of the static k-NN graph (no trained model)."),
) -> None:
    """Write the store's patients, slides and model versions into the case graph."""
    from casegraph.graph import open_graph_store
    from casegraph.graph.sync import sync_graph

    with _open(store) as s, open_graph_store(s, backend) as graph:
        report = sync_graph(s, graph, versions=version or None, batch_size=batch_size,
                            static_k=static_k)
    typer.echo(f"synced into {report.backend}: {report.patients} patients, {report.slides} "
               f"slides, {report.edges} similarity edges in {report.batches} batches, "
               f"{report.created} nodes/relationships created, {report.seconds:.1f} s")
    typer.echo(f"  written (the delta): {report.patients_written} patients, "
               f"{report.slides_written} slides, {report.edges_written} edges, "
               f"{report.predictions_written} predictions, {report.buffer_written} buffer links")
    for v in report.versions_written:
        typer.echo(f"  wrote version {v}")
    for v in report.versions_skipped:
        typer.echo(f"  version {v} already complete")


@graph_app.command("import")
def graph_import(
    neo4j_home: Path = typer.Option(..., "--neo4j-home",
                                    help="Home of a STOPPED Neo4j server (its data/ is written)."),
    store: Path | None = STORE_OPTION,
    database: str = typer.Option("neo4j", help="Database to create."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace the database if it holds data."),
    static_k: int = typer.Option(12, min=1, help="k of the static k-NN graph (no trained model)."),
    keep_csv: Path | None = typer.Option(None, "--keep-csv",
                                         help="Write the CSV files here and keep them."),
) -> None:
    """Load a new or wiped Neo4j database with Neo4j's bulk importer (neo4j-admin database
    import full): the graph a full `graph sync` writes, sync marks included."""
    from casegraph.graph.bulk_import import bulk_import

    launcher = ["bash", str(_deploy_script("import"))]
    with _open(store) as s:
        report = bulk_import(s, neo4j_home, launcher, database=database, overwrite=overwrite,
                             static_k=static_k, work_dir=keep_csv)
    rate = report.edges / report.seconds if report.seconds else 0.0
    typer.echo(f"imported into {neo4j_home} (database {report.database}): {report.nodes} "
               f"nodes, {report.relationships} relationships ({report.edges} similarity edges) "
               f"in {report.seconds:.1f} s (CSV {report.csv_seconds:.1f} s, importer "
               f"{report.import_seconds:.1f} s; {rate:,.0f} edges/s)")
    typer.echo(f"  start it: CASEGRAPH_NEO4J_HOME={neo4j_home} casegraph neo4j start; the "
               "first `graph sync` adds the constraints and writes only what is new")


@graph_app.command("stats")
def graph_stats(store: Path | None = STORE_OPTION, backend: str = BACKEND_OPTION) -> None:
    """Counts of nodes, relationships and edges per model version."""
    from rich.console import Console
    from rich.table import Table

    from casegraph.graph import open_graph_store

    with _open(store) as s, open_graph_store(s, backend) as graph:
        stats = graph.stats()
        synced = graph.synced_versions()
        name = graph.backend
    table = Table(title=f"case graph ({name})")
    table.add_column("kind")
    table.add_column("name")
    table.add_column("count", justify="right")
    for label, n in stats.nodes.items():
        table.add_row("node", label, str(n))
    for rel, n in stats.relationships.items():
        table.add_row("relationship", rel, str(n))
    for v, n in stats.versions.items():
        table.add_row("version", v + ("" if v in synced else " (incomplete)"), str(n))
    Console().print(table)


@graph_app.command("prune")
def graph_prune(
    version: list[str] = typer.Option(..., "--model-version", "--version", "-v", help="Version id to remove."),
    store: Path | None = STORE_OPTION,
    backend: str = BACKEND_OPTION,
    with_children: bool = typer.Option(
        False, "--with-children", help="Also remove the versions derived from it (attach)."),
) -> None:
    """Remove a model version's edges, predictions, buffer links and query cases from the
    graph. A version others derive from is refused unless --with-children."""
    from casegraph.graph import open_graph_store

    with _open(store) as s, open_graph_store(s, backend) as graph:
        for v in version:
            removed = graph.prune_version(v, with_children=with_children)
            typer.echo(f"pruned {v}: {removed} similarity edges removed")


def cypher(
    query: str = typer.Argument(..., help="Cypher; pass values with --param, never inline."),
    param: list[str] = typer.Option([], "--param", "-p", help="name=value (JSON or text)."),
    write: bool = typer.Option(False, "--write", help="Allow write clauses (write transaction)."),
    csv_path: Path | None = typer.Option(None, "--csv", help="Also write the rows as CSV."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the rows as JSON."),
    limit: int = typer.Option(50, help="Rows to print (exports hold all)."),
) -> None:
    """Run a Cypher query against the Neo4j case graph (read-only unless --write)."""
    import json

    from rich.console import Console
    from rich.table import Table

    from casegraph.config import neo4j_settings
    from casegraph.errors import CasegraphError
    from casegraph.graph.cypher import export_csv, export_json, parse_params, run_cypher
    from casegraph.graph.neo4j_store import Neo4jGraphStore

    settings = neo4j_settings()
    if settings is None:
        raise CasegraphError("`casegraph cypher` needs Neo4j: set CASEGRAPH_NEO4J_URI (and "
                             "CASEGRAPH_NEO4J_PASSWORD[_FILE]); `casegraph neo4j start` runs one")
    params = parse_params(param)
    with Neo4jGraphStore.connect(settings) as graph:
        result = run_cypher(graph.driver, query, params, write=write)  # type: ignore[attr-defined]
    if csv_path:
        export_csv(result, csv_path)
    if json_path:
        export_json(result, json_path)
    table = Table(*result.columns, title=f"{len(result.rows)} rows")
    for row in result.rows[:limit]:
        table.add_row(*[json.dumps(v) if isinstance(v, list | dict) else str(v) for v in row])
    Console(width=160).print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(neo4j_app, name="neo4j")
    app.add_typer(graph_app, name="graph")
    app.command("cypher")(cypher)


@graph_app.command("export")
def graph_export(
    graphml: Path = typer.Option(..., "--graphml", help="Write the neighbourhood here (.graphml)."),
    version: str = typer.Option(None, "--model-version", "--version", "-v",
                                help="Model version (default: the newest synced one)."),
    patient: list[str] = typer.Option(..., "--patient", "-p",
                                      help="Start patient; repeatable."),
    hops: int = typer.Option(1, min=1, max=3, help="SIMILAR_TO hops from the patients."),
    k: int = typer.Option(10, min=1, max=100, help="Neighbours per node."),
    store: Path | None = STORE_OPTION,
    backend: str = BACKEND_OPTION,
) -> None:
    """Export patients' case-graph neighbourhood as GraphML (Gephi, Cytoscape, networkx)."""
    from casegraph.errors import InputError
    from casegraph.graph import open_graph_store
    from casegraph.graph.export import write_graphml
    from casegraph.graph.sync import default_version

    with _open(store, read_only=True) as s, open_graph_store(s, backend) as graph:
        chosen = version or default_version(graph)
        if chosen is None:
            raise InputError("the case graph holds no model version", column="--model-version",
                             fix="run `casegraph graph sync` first")
        g = graph.to_networkx(chosen, patient, hops=hops, k=k)
    path = write_graphml(g, graphml)
    typer.echo(f"wrote {path}: {g.number_of_nodes()} patients, {g.number_of_edges()} "
               f"SIMILAR_TO edges of version {chosen} ({hops} hop{'s' if hops > 1 else ''})")
