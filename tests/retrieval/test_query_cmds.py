"""The ``casegraph query`` and ``casegraph index`` commands (typer runner)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from casegraph.cli import app
from casegraph.ingest.store import Store
from tests.retrieval.conftest import write_bag

runner = CliRunner()


def test_query_json_and_table(tiny_store: Store, tmp_path: Path) -> None:
    root = str(tiny_store.root)
    tiny_store.close()
    bag = write_bag(tmp_path / "q.h5", 1, seed=2)
    result = runner.invoke(app, ["query", "--store", root, "--slide", str(bag), "--k", "4",
                                 "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["method"] == "embedding-knn" and len(body["neighbours"]) == 4
    png = tmp_path / "km.png"
    table = runner.invoke(app, ["query", "--store", root, "--patient", "A03", "--k", "3",
                                "--cohort", "beta", "--km-png", str(png)])
    assert table.exit_code == 0, table.output
    assert "most similar" in table.output and png.exists()


def test_index_commands(tiny_store: Store) -> None:
    root = str(tiny_store.root)
    tiny_store.close()
    rebuilt = runner.invoke(app, ["index", "rebuild", "--store", root])
    assert rebuilt.exit_code == 0 and "slide-mean/wsi" in rebuilt.output
    assert "consistent" in runner.invoke(app, ["index", "check", "--store", root]).output
    assert "+0 -0" in runner.invoke(app, ["index", "sync", "--store", root]).output
    with Store.open(root) as store, store.transaction() as con:
        con.execute("DELETE FROM slides WHERE patient_id = 'A07'")
        con.execute("DELETE FROM patients WHERE patient_id = 'A07'")
    checked = runner.invoke(app, ["index", "check", "--store", root])
    assert checked.exit_code == 1 and "not in the patients table" in checked.output
    assert "-1" in runner.invoke(app, ["index", "sync", "--store", root]).output
