"""The import contract: layers import only downward (retrieval -> models -> graph -> ingest).

Shared modules (schema, errors, config, runtime, registry) may be imported by every layer
and import no layer. ``casegraph.cli`` sits on top and may import anything.
"""

from __future__ import annotations

import ast
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
