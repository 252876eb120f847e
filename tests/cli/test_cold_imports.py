"""Cold CLI commands import only what their path uses: ``--help``, ``info`` and ``doctor``
never import torch (nor torch-geometric), even on a store with an MSRL version and its
gsl index; ``doctor --deep`` is the one that loads the model to compare gsl vectors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from casegraph.ingest.store import Store
from casegraph.models.data import CohortData
from casegraph.models.msrl import MSRLModel
from casegraph.retrieval.index import IndexKey, build_index, open_index
from casegraph.retrieval.msrl_adapter import GSL_KIND
from tests.retrieval.conftest import build_store

FAST = {"dim": 16, "proj_dim": 8, "batch_size": 8, "pretrain_steps": 5, "epochs": 2}

# runs the CLI in a fresh process, then reports which heavy libraries it imported
PROBE = """
import sys
from casegraph.cli import main
sys.argv = ["casegraph", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
loaded = [m for m in ("torch", "torch_geometric") if m in sys.modules]
print("IMPORTED:" + ",".join(loaded))
sys.exit(code)
"""


def run_probe(*args: str) -> tuple[int, str, set[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True)
    marker = [line for line in done.stdout.splitlines() if line.startswith("IMPORTED:")]
    assert marker, done.stderr
    imported = {m for m in marker[-1].removeprefix("IMPORTED:").split(",") if m}
    return done.returncode, done.stdout, imported


@pytest.fixture(scope="module")
def msrl_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A small store with a trained MSRL version and its built gsl index."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cold-cli")
    store_dir = build_store(root)
    with Store.open(store_dir) as store:
        data = CohortData.from_store(store, "alpha", require_slides=True)
        model = MSRLModel("msrl", **FAST).fit(data.subset(range(14)), data.subset(range(14, 20)))
        version = model.save_version(store, "alpha")
        open_index(store, IndexKey(version, GSL_KIND))
    yield store_dir, version


def test_help_imports_no_torch() -> None:
    code, out, imported = run_probe("--help")
    assert code == 0 and "query" in out
    assert imported == set()


def test_info_and_doctor_import_no_torch_on_a_store_with_an_msrl_index(
        msrl_store: tuple[Path, str]) -> None:
    store_dir, version = msrl_store
    with Store.open(store_dir, read_only=True) as store:
        build_index(store, IndexKey(version, GSL_KIND))  # undo other tests' damage
    code, out, imported = run_probe("info", "--store", str(store_dir))
    assert code == 0 and "alpha" in out
    assert imported == set()
    code, out, imported = run_probe("doctor", "--store", str(store_dir), "--no-full")
    assert code == 0, out
    assert "no problems found" in out
    assert imported == set()


def test_doctor_finds_a_gsl_index_missing_a_reference_patient_without_torch(
        msrl_store: tuple[Path, str]) -> None:
    store_dir, version = msrl_store
    key = IndexKey(version, GSL_KIND)
    with Store.open(store_dir, read_only=True) as store:
        loaded = build_index(store, key)
        dropped = loaded.index.ids()[0]
        loaded.index.remove([dropped])
        loaded.index.save(key.directory(store), extra_meta=loaded.meta)
    code, out, imported = run_probe("doctor", "--store", str(store_dir), "--no-full")
    assert code == 1
    assert f"index {key}: 1 patients with embeddings are not indexed (e.g. {dropped})" in out
    assert imported == set()


def test_doctor_deep_compares_gsl_vectors_with_the_model(msrl_store: tuple[Path, str]) -> None:
    store_dir, version = msrl_store
    key = IndexKey(version, GSL_KIND)
    with Store.open(store_dir, read_only=True) as store:
        loaded = build_index(store, key)
        first = loaded.index.ids()[0]
        vector = loaded.index.vectors([first])
        loaded.index.remove([first])
        loaded.index.add([first], -vector)
        loaded.index.save(key.directory(store), extra_meta=loaded.meta)
    code, out, imported = run_probe("doctor", "--store", str(store_dir), "--no-full")
    assert code == 0, out  # ids agree: the shallow check cannot see the vector
    assert imported == set()
    code, out, imported = run_probe("doctor", "--store", str(store_dir), "--no-full", "--deep")
    assert code == 1 and "vectors differ from the stored embeddings" in out
    assert "torch" in imported
