"""Published snapshots: a writer publishes on close, readers open the snapshot while the
next writer works, CURRENT.json is replaced whole, old snapshots are pruned."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from casegraph.errors import StoreError
from casegraph.faults import CRASH_ENV
from casegraph.ingest.pipeline import IngestRequest, ingest
from casegraph.ingest.publish import (
    CURRENT_FILE,
    KEEP,
    open_published,
    publish_snapshot,
    published_dir,
    read_current,
)
from casegraph.ingest.store import Store
from casegraph.ingest.tables import read_mcat_table
from tests.ingest.helpers import ROWS, write_table
from tests.ingest.test_pipeline import KILL_SCRIPT

CASEGRAPH = str(Path(sys.executable).with_name("casegraph"))


def _request(folder: Path, rows: list[str]) -> IngestRequest:
    return IngestRequest(tables=[read_mcat_table(write_table(folder, rows), "tiny")], k=2)


def _ingest(root: Path, folder: Path, rows: list[str]) -> None:
    with Store.open(root) as store:
        ingest(store, _request(folder, rows))


def _snapshots(root: Path) -> list[str]:
    return sorted(p.name for p in published_dir(root).glob("*.duckdb"))


def test_ingest_publishes_on_close_and_a_noop_reingest_does_not(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _ingest(root, tmp_path / "in", ROWS[:2])
    first = read_current(root)
    assert first is not None and first.patients == 1 and first.batch is not None
    assert _snapshots(root) == [first.snapshot]
    with Store.open(root) as store:
        assert first.batch == str(store.batches()["batch_id"].iloc[-1])
    _ingest(root, tmp_path / "in", ROWS[:2])  # the same inputs: nothing committed
    assert read_current(root) == first and _snapshots(root) == [first.snapshot]
    _ingest(root, tmp_path / "in", ROWS)
    second = read_current(root)
    assert second is not None and second.patients == 3 and second.batch != first.batch
    snap, info = open_published(root)
    with snap:
        assert info == second and snap.read_only and snap.root == root
        assert list(snap.patients()["patient_id"]) == ["P1", "P2", "P3"]


def test_a_read_only_store_never_publishes(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root):
        pass  # opened writable, nothing committed
    assert read_current(root) is None
    _ingest(root, tmp_path / "in", ROWS)
    before = _snapshots(root)
    with Store.open(root, read_only=True) as store, \
            pytest.raises(StoreError, match="read-only"):
        publish_snapshot(store)
    assert _snapshots(root) == before


def test_current_json_names_the_newest_snapshot_and_versions(tmp_path: Path) -> None:
    from casegraph.ingest.versions import NewVersion

    root = tmp_path / "store"
    _ingest(root, tmp_path / "in", ROWS)
    with Store.open(root) as store:
        old = store.versions.create(NewVersion(model="snn", cohort="tiny", config={}))
        new = store.versions.create(NewVersion(model="snn", cohort="tiny", config={},
                                               version_id="snn-newer"))
        other = store.versions.create(NewVersion(model="coxnet", cohort=None, config={}))
    assert old != new
    folder = published_dir(root)
    data = json.loads((folder / CURRENT_FILE).read_text(encoding="utf-8"))
    assert set(data) == {"snapshot", "published_at", "batch", "model_versions", "patients"}
    assert data["model_versions"] == {"coxnet": other, "snn": "snn-newer"}
    assert data["snapshot"] == _snapshots(root)[-1] and data["patients"] == 3
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_only_the_newest_snapshots_are_kept_and_an_open_one_stays_readable(
        tmp_path: Path) -> None:
    root = tmp_path / "store"
    _ingest(root, tmp_path / "in", ROWS[:1])
    reader, _ = open_published(root)
    try:
        for _ in range(KEEP + 1):
            with Store.open(root) as store:
                publish_snapshot(store)
        names = _snapshots(root)
        assert len(names) == KEEP
        current = read_current(root)
        assert current is not None and current.snapshot == names[-1]
        # the reader's file was deleted under it; its open handle still reads
        assert len(reader.patients()) == 1
    finally:
        reader.close()


def test_ingest_succeeds_while_a_reader_holds_the_snapshot(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _ingest(root, tmp_path / "in", ROWS[:2])
    reader, info = open_published(root)
    try:
        table = write_table(tmp_path / "in2", ROWS)
        done = subprocess.run([CASEGRAPH, "ingest", "--store", str(root), "--table", str(table),
                               "--cohort", "tiny", "--k", "2"], capture_output=True,
                              text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert len(reader.patients()) == 1  # the reader keeps the state it opened
        newer = read_current(root)
        assert newer is not None and newer.snapshot != info.snapshot and newer.patients == 3
    finally:
        reader.close()


def test_a_killed_writer_leaves_current_unchanged(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _ingest(root, tmp_path / "in", ROWS[:2])
    before = (published_dir(root) / CURRENT_FILE).read_bytes()
    names = _snapshots(root)
    table = write_table(tmp_path / "in2", ROWS)
    (tmp_path / "bags").mkdir()
    env = {**os.environ, CRASH_ENV: "ingest.in_transaction"}
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(root), str(table),
                           str(tmp_path / "bags")], env=env, check=False)
    assert proc.returncode == -signal.SIGKILL, "the ingest did not die at its crash point"
    assert (published_dir(root) / CURRENT_FILE).read_bytes() == before
    assert _snapshots(root) == names


def test_a_broken_pointer_is_one_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _ingest(root, tmp_path / "in", ROWS)
    current = published_dir(root) / CURRENT_FILE
    current.write_text("{not json", encoding="utf-8")
    with pytest.raises(StoreError, match="not a valid snapshot pointer"):
        read_current(root)
    current.write_text(json.dumps({"snapshot": "../store.duckdb", "published_at": "x"}))
    with pytest.raises(StoreError, match="not a snapshot file"):
        read_current(root)
    current.write_text(json.dumps({"snapshot": "gone.duckdb", "published_at": "x"}))
    with pytest.raises(StoreError, match="missing"):
        open_published(root)
