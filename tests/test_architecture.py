"""The import contract: layers import only downward (retrieval -> models -> graph -> ingest),
and only the storage layer (casegraph/ingest) speaks SQL.

Shared modules (schema, errors, config, runtime, registry) may be imported by every layer
and import no layer. ``casegraph.cli`` and ``casegraph.api`` (the notebook API, which the
package root exposes lazily) sit on top and may import anything.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import casegraph

LAYERS = ["ingest", "graph", "models", "retrieval"]  # bottom to top
PACKAGE = Path(casegraph.__file__).parent


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {m for m in found if m.startswith("casegraph")}


def _owner(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in [*LAYERS, "cli"] else None


def test_layers_import_only_downward() -> None:
    violations = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        layer = rel.parts[0] if len(rel.parts) > 1 else None
        if rel.as_posix() == "api.py":
            layer = "cli"  # the notebook API sits on top, beside the CLI
        for module in _imports(path):
            target = _owner(module)
            if target is None or layer == "cli":
                continue
            if target == "cli":
                violations.append(f"{rel} imports {module} (nothing may import the CLI)")
            elif layer is None:
                violations.append(f"{rel} (shared module) imports layer module {module}")
            elif LAYERS.index(target) > LAYERS.index(layer):
                violations.append(f"{rel} ({layer}) imports upward: {module}")
    assert not violations, "\n".join(violations)


def test_every_layer_is_a_package() -> None:
    for layer in [*LAYERS, "cli"]:
        assert (PACKAGE / layer / "__init__.py").is_file()


# --------------------------------------------------------------- who may speak SQL
# The storage layer holds all SQL over the store's tables; the embedded graph backend
# alone keeps its own (graph_* tables only).
SQL_OWNERS = ("ingest/",)
GRAPH_BACKEND = "graph/embedded.py"
CONNECTION_CALLS = ("execute", "executemany", "query_df")
SQL_MARKERS = ("SELECT ", "INSERT INTO", "DELETE FROM", "CREATE TABLE")
TABLE_REFERENCE = re.compile(
    r"\b(?:FROM|JOIN|INTO|UPDATE|TABLE(?:\s+IF\s+NOT\s+EXISTS)?)\s+([A-Za-z_]\w*)",
    re.IGNORECASE)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings (documentation, never run)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                found.add(id(body[0].value))
    return found


def _string_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string constant, f-string parts included, docstrings not."""
    skip = _docstrings(tree)
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in skip]


def _receiver_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _connection_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, method) of calls that run SQL or hand a frame to DuckDB: ``x.execute(...)``,
    ``x.executemany``, ``x.query_df``, and ``con.register(name, frame)`` (a registry's
    ``MODELS.register("name")`` takes one argument and ``atexit.register`` is neither)."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        method = node.func.attr
        receiver = _receiver_name(node.func.value)
        if method in CONNECTION_CALLS or (method == "register" and receiver != "atexit" and (
                len(node.args) == 2 or receiver == "con" or receiver.endswith("_con"))):
            found.append((node.lineno, method))
    return found


def _modules_outside_storage() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if not rel.startswith(SQL_OWNERS) and rel != GRAPH_BACKEND:
            out.append((rel, ast.parse(path.read_text(encoding="utf-8"))))
    return out


def test_only_the_storage_layer_runs_sql() -> None:
    violations = [f"{rel}:{line} calls .{method}(" for rel, tree in _modules_outside_storage()
                  for line, method in _connection_calls(tree)]
    assert not violations, "\n".join(violations)


def test_only_the_storage_layer_holds_sql_text() -> None:
    violations = [f"{rel}:{line} holds SQL: {text.strip()[:60]!r}"
                  for rel, tree in _modules_outside_storage()
                  for line, text in _string_literals(tree)
                  if any(marker in text for marker in SQL_MARKERS)]
    assert not violations, "\n".join(violations)


def test_the_embedded_graph_backend_touches_only_graph_tables(tmp_path: Path) -> None:
    from casegraph.ingest.store import Store

    with Store.open(tmp_path / "store") as store:
        tables = store.query_df("SELECT table_name FROM information_schema.tables")
    store_tables = {str(t) for t in tables["table_name"] if not str(t).startswith("graph_")}
    assert {"patients", "model_versions", "cv_runs"} <= store_tables
    tree = ast.parse((PACKAGE / GRAPH_BACKEND).read_text(encoding="utf-8"))
    violations = [f"{GRAPH_BACKEND}:{line} reads or writes store table {name!r}"
                  for line, text in _string_literals(tree)
                  for name in TABLE_REFERENCE.findall(text) if name in store_tables]
    assert not violations, "\n".join(violations)


def test_the_sql_check_sees_calls_and_literals_not_comments() -> None:
    tree = ast.parse(
        '"""SELECT in a docstring is documentation."""\n'
        "# con.execute('SELECT 1') in a comment\n"
        "MODELS.register('snn')\n"
        "con.register('_rows', frame)\n"
        "store.query_df(f'SELECT * FROM {table}')\n")
    assert _connection_calls(tree) == [(4, "register"), (5, "query_df")]
    assert [line for line, text in _string_literals(tree)
            if any(m in text for m in SQL_MARKERS)] == [5]
    assert TABLE_REFERENCE.findall("SELECT 1 FROM graph_patients g JOIN patients p "
                                   "ON true") == ["graph_patients", "patients"]
