"""Registration executors: the local pool and a real Dask LocalCluster (two worker
processes on 127.0.0.1), byte-identical results, a killed worker, a batch that fails."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dask
import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster

from casegraph.errors import InputError
from casegraph.faults import CRASH_ENV
from casegraph.ingest.executors import (
    DaskExecutor,
    ExecutorError,
    LocalExecutor,
    SlideTask,
    executor_from_spec,
)
from casegraph.ingest.pipeline import IngestRequest, ingest
from casegraph.ingest.store import Store
from casegraph.ingest.summaries import BagRecord
from casegraph.ingest.tables import read_mcat_table
from tests.ingest.helpers import write_table

SLIDES = ["P1-A", "P1-B", "P2-A", "P3-A"]


def _bags(folder: Path, slides: list[str], n: int = 300, dim: int = 16) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    paths = []
    for slide in slides:
        with h5py.File(folder / f"{slide}.h5", "w") as handle:
            handle["features"] = rng.normal(size=(n, dim)).astype(np.float32)
            handle["coords"] = rng.integers(0, 10_000, size=(n, 2))
            handle["coords"].attrs["patch_size_level0"] = 512
        paths.append(folder / f"{slide}.h5")
    return paths


def _tasks(paths: list[Path]) -> list[SlideTask]:
    return [SlideTask(p.stem, str(p), 3, 0, ("xxh3_128",)) for p in paths]


def _same(a: BagRecord, b: BagRecord) -> bool:
    assert a.coords is not None and b.coords is not None
    return (a.mean.tobytes() == b.mean.tobytes() and a.centres.tobytes() == b.centres.tobytes()
            and a.coords.tobytes() == b.coords.tobytes() and a.hashes == b.hashes
            and a.provenance == b.provenance and (a.n_patches, a.dim) == (b.n_patches, b.dim))


def _cluster(**env: str) -> LocalCluster:
    return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address=":0", env=env)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with _cluster() as running:
        yield running


def test_spec_parsing() -> None:
    assert isinstance(executor_from_spec(None), LocalExecutor)
    assert executor_from_spec("local:3").name == "local:3"
    dask_executor = executor_from_spec("dask://127.0.0.1:8786")
    assert isinstance(dask_executor, DaskExecutor)
    assert dask_executor.address == "tcp://127.0.0.1:8786"
    for bad in ("ray://head:10001", "dask://host", "dask://host:99999", "local:0", "threads"):
        with pytest.raises(InputError, match="--executor") as info:
            executor_from_spec(bad)
        assert "\n" not in str(info.value)


def test_summaries_identical_whatever_the_thread_count(tmp_path: Path) -> None:
    tasks = _tasks(_bags(tmp_path, SLIDES))
    one = list(LocalExecutor(1).register(tasks))
    four = list(LocalExecutor(4).register(tasks))
    assert all(_same(a, b) for a, b in zip(one, four, strict=True))


def test_dask_records_are_byte_identical_to_local(cluster: LocalCluster, tmp_path: Path) -> None:
    tasks = _tasks(_bags(tmp_path, SLIDES * 1 + ["P4-A", "P5-A"]))
    local = list(LocalExecutor().register(tasks))
    remote = list(DaskExecutor(cluster.scheduler_address).register(tasks))
    assert [r.content_hash for r in remote] == [r.content_hash for r in local]
    assert all(_same(a, b) for a, b in zip(local, remote, strict=True))


def _ingest(root: Path, tmp_path: Path, executor: str | None) -> Store:
    table = read_mcat_table(write_table(tmp_path / "in"), "tiny")
    store = Store.open(root)
    ingest(store, IngestRequest(tables=[table], bag_dirs=[tmp_path / "bags"], k=3,
                                executor=executor))
    return store


def test_ingest_through_dask_stores_what_local_stores(cluster: LocalCluster,
                                                      tmp_path: Path) -> None:
    _bags(tmp_path / "bags", SLIDES)
    spec = cluster.scheduler_address.replace("tcp://", "dask://")
    with _ingest(tmp_path / "local", tmp_path, None) as local, \
            _ingest(tmp_path / "dask", tmp_path, spec) as remote:
        columns = "slide_id, sha256, hash_algorithm, n_patches, feature_dim, provenance"
        assert (local.query_df(f"SELECT {columns} FROM slides ORDER BY slide_id").to_json()
                == remote.query_df(f"SELECT {columns} FROM slides ORDER BY slide_id").to_json())
        for store in (local, remote):
            assert store.slide_coords("P1-A") is not None
        files = [next(s.summaries_dir.glob("*.parquet")) for s in (local, remote)]
        tables = [pq.read_table(f).drop(["slide_id"]) for f in files]
        assert tables[0].equals(tables[1])  # means, centres, coords: the same bytes
        np.testing.assert_array_equal(local.slide_coords("P2-A"), remote.slide_coords("P2-A"))


def test_a_bad_bag_on_a_worker_is_the_local_error(cluster: LocalCluster, tmp_path: Path) -> None:
    paths = _bags(tmp_path, SLIDES)
    paths[2].write_bytes(b"")
    with pytest.raises(InputError) as local:
        list(LocalExecutor().register(_tasks(paths)))
    with pytest.raises(InputError) as remote:
        list(DaskExecutor(cluster.scheduler_address).register(_tasks(paths)))
    assert str(remote.value) == str(local.value) and "empty" in str(local.value)


def _worker_pids(address: str) -> dict[str, int]:
    with Client(address, set_as_default=False) as client:
        return {str(k): int(v) for k, v in client.run(os.getpid).items()}


def test_a_worker_killed_mid_batch_gets_its_slides_rerun(cluster: LocalCluster,
                                                         tmp_path: Path) -> None:
    """SIGKILL one worker process once the first slide is back; its nanny starts a fresh
    one and the scheduler re-runs the slides it held or was running."""
    tasks = _tasks(_bags(tmp_path, [f"S{i:02d}" for i in range(12)], n=4000, dim=256))
    local = list(LocalExecutor().register(tasks))
    before = _worker_pids(cluster.scheduler_address)
    remote: list[BagRecord] = []
    for record in DaskExecutor(cluster.scheduler_address).register(tasks):
        if not remote:
            os.kill(next(iter(before.values())), signal.SIGKILL)
        remote.append(record)
    assert all(_same(a, b) for a, b in zip(local, remote, strict=True))
    cluster.wait_for_workers(2)
    assert len(set(before.values()) - set(_worker_pids(cluster.scheduler_address).values())) == 1


def test_a_batch_whose_workers_all_fail_writes_nothing(tmp_path: Path) -> None:
    """Every worker process SIGKILLs itself on its first slide (casegraph.faults)."""
    _bags(tmp_path / "bags", ["P1-A", "P2-A"])
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            _cluster(**{CRASH_ENV: "register.slide"}) as crashing, \
            Store.open(tmp_path / "store") as store:
        table = read_mcat_table(write_table(tmp_path / "in"), "tiny")
        spec = crashing.scheduler_address.replace("tcp://", "dask://")
        with pytest.raises(ExecutorError) as info:
            ingest(store, IngestRequest(tables=[table], bag_dirs=[tmp_path / "bags"], k=3,
                                        executor=spec))
        message = str(info.value)
        assert "2 of 2 slides failed" in message and "nothing was written" in message
        assert "P1-A" in message and "P2-A" in message and "\n" not in message
        assert store.counts()["patients"] == 0 and store.counts()["slides"] == 0
    assert not list((tmp_path / "store" / "summaries").glob("*"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_scheduler_is_one_line(tmp_path: Path) -> None:
    tasks = _tasks(_bags(tmp_path, SLIDES[:1]))
    with pytest.raises(InputError, match="cannot reach the Dask scheduler") as info:
        list(DaskExecutor(f"tcp://127.0.0.1:{_free_port()}", connect_timeout=1).register(tasks))
    assert "\n" not in str(info.value)


def test_cli_bad_executor_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from casegraph.cli import main; main()", "ingest", "--store",
         str(tmp_path / "store"), "--table", str(write_table(tmp_path / "in")), "--executor",
         "ray://head:10001"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "--executor" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "store").exists() or Store.open(tmp_path / "store").counts()["patients"] == 0
