"""Run user Cypher safely: read transactions by default, values only as parameters.

:func:`write_clauses` spots write clauses (outside strings and comments) so a read-only run
is refused with a clear message before it reaches the server; the server enforces the read
access mode as well (a read transaction cannot write).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from casegraph.errors import CasegraphError, InputError

if TYPE_CHECKING:
    from neo4j import Driver, ManagedTransaction

WRITE_CLAUSES = ("CREATE", "MERGE", "DELETE", "DETACH", "SET", "REMOVE", "DROP", "FOREACH",
                 "LOAD CSV", "IN TRANSACTIONS", "ALTER", "GRANT", "DENY", "REVOKE")
_STRINGS_AND_COMMENTS = re.compile(
    r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`|//[^\n]*|/\*.*?\*/", re.DOTALL)


class CypherWriteRefused(CasegraphError):
    """A write clause in a query run without ``--write``."""


@dataclass
class CypherResult:
    columns: list[str]
    rows: list[list[Any]]


def write_clauses(query: str) -> list[str]:
    """The write clauses a query contains, ignoring string literals, names and comments."""
    code = _STRINGS_AND_COMMENTS.sub(" ", query).upper()
    found = []
    for clause in WRITE_CLAUSES:
        pattern = r"\b" + r"\s+".join(clause.split()) + r"\b"
        if re.search(pattern, code):
            found.append(clause)
    if re.search(r"\bCALL\s+[A-Z_.]*\b(CREATE|SET|DROP|REMOVE|DELETE|MERGE)", code):
        found.append("CALL (a writing procedure)")
    return found


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``["k=5", "id=TCGA-01", 'ids=["a","b"]']`` -> parameters; values are JSON when they
    parse as JSON (numbers, booleans, lists), else plain strings."""
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise InputError(f"bad --param {pair!r}", column="--param",
                             fix="write name=value, e.g. --param k=5 --param id=TCGA-2F-A9KO")
        try:
            params[name] = json.loads(raw)
        except json.JSONDecodeError:
            params[name] = raw
    return params


def run_cypher(
    driver: Driver, query: str, params: dict[str, Any] | None = None, *,
    write: bool = False, database: str = "neo4j",
) -> CypherResult:
    """Run ``query`` in a read (default) or write managed transaction; values as JSON-able."""
    from neo4j.exceptions import ClientError

    found = write_clauses(query)
    if found and not write:
        raise CypherWriteRefused(
            f"the query writes ({', '.join(found)}); `casegraph cypher` runs read-only. "
            "Re-run with --write if you mean to change the graph")

    def work(tx: ManagedTransaction) -> CypherResult:
        result = tx.run(query, params or {})
        columns = list(result.keys())
        rows = [[to_plain(record[c]) for c in columns] for record in result]
        return CypherResult(columns, rows)

    try:
        # the driver's shared bookmarks: a routed read sees this process's earlier writes
        with driver.session(database=database,
                            bookmark_manager=driver.execute_query_bookmark_manager) as session:
            return session.execute_write(work) if write else session.execute_read(work)
    except ClientError as exc:
        if "AccessMode" in str(exc.code) or "read access mode" in str(exc.message):
            raise CypherWriteRefused("the server refused a write in a read-only run; "
                                     "re-run with --write if you mean it") from None
        raise CasegraphError(f"Cypher error: {exc.message} ({exc.code})") from None


def to_plain(value: Any) -> Any:
    """Nodes, relationships and paths as dicts; everything else JSON-able."""
    from neo4j.graph import Node, Path, Relationship

    if isinstance(value, Node):
        return {"labels": sorted(value.labels), **{k: to_plain(v) for k, v in value.items()}}
    if isinstance(value, Relationship):
        return {"type": value.type, **{k: to_plain(v) for k, v in value.items()}}
    if isinstance(value, Path):
        return [to_plain(n) for n in value.nodes]
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if hasattr(value, "iso_format"):  # neo4j temporal types
        return value.iso_format()
    return value


def export_csv(result: CypherResult, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(result.columns)
        for row in result.rows:
            writer.writerow([json.dumps(v) if isinstance(v, list | dict) else v for v in row])


def export_json(result: CypherResult, path: Path) -> None:
    records = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    path.write_text(json.dumps(records, indent=2, default=str) + "\n", encoding="utf-8")


_COOKBOOK_BLOCK = re.compile(r"<!--\s*cookbook:\s*([\w-]+)\s*-->\s*```cypher\n(.*?)```", re.DOTALL)


def cookbook_queries(markdown: str) -> dict[str, str]:
    """The named queries of a cookbook (docs/cypher.md): ``<!-- cookbook: name -->`` followed
    by a ```cypher block. Tests and the benchmark run exactly what the doc shows."""
    return {name: body.strip() for name, body in _COOKBOOK_BLOCK.findall(markdown)}
