"""A live service: a running server follows the store's published snapshots while a real
``casegraph ingest`` runs beside it, under concurrent load, without a restart or a 5xx."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from casegraph.errors import StoreError
from casegraph.ingest.publish import CURRENT_FILE, published_dir, read_current
from casegraph.ingest.store import Store
from casegraph.retrieval.index import SLIDE_MEAN, IndexKey, build_index
from casegraph.retrieval.service import LiveState, ServedState, create_app
from tests.retrieval.conftest import API_KEY, MAX_BODY, LiveServer, _write_cohort, copy_store
from tests.retrieval.test_attach import _trained

CASEGRAPH = str(Path(sys.executable).with_name("casegraph"))
HEADERS = {"X-API-Key": API_KEY}
N_CLIENTS = 4
MAX_REQUESTS_PER_CLIENT = 400
NEW_PATIENTS = 6


@pytest.fixture
def store_root(tiny_store_dir: Path, tmp_path: Path) -> Path:
    root = copy_store(tiny_store_dir, tmp_path / "store")
    with Store.open(root) as writable:
        build_index(writable, IndexKey(SLIDE_MEAN, "wsi"))
    return root


@contextmanager
def running(root: Path, reload_seconds: float) -> Iterator[tuple[LiveServer, LiveState]]:
    """uvicorn with the app's lifespan on (so the reload thread runs), in a thread."""
    import uvicorn

    app = create_app(root, keys=frozenset({API_KEY}), max_body_bytes=MAX_BODY,
                     reload_seconds=reload_seconds)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield (LiveServer(f"http://127.0.0.1:{sock.getsockname()[1]}", HEADERS),
               app.state.live)
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


def _hammer(url: str, bag: bytes, stop: threading.Event, seen: Counter[int],
            failures: list[str], guard: threading.Lock, extra: tuple[str, ...] = (),
            max_requests: int = MAX_REQUESTS_PER_CLIENT) -> None:
    """One client: the four kinds of request, then the ``extra`` GET paths, in turn until
    ``stop`` or the bound."""
    with httpx.Client(base_url=url, headers=HEADERS, timeout=120) as client:
        for i in range(max_requests):
            if stop.is_set():
                return
            kind = i % (4 + len(extra))
            if kind == 0:
                r = client.get("/health")
            elif kind == 1:
                r = client.get("/patients/A01")
            elif kind == 2:
                r = client.get("/patients/A01/similar", params={"k": 3})
            elif kind == 3:
                r = client.post("/query", files=[("files", ("q.h5", bag))], data={"k": "3"})
            else:
                r = client.get(extra[kind - 4])
            with guard:
                seen[r.status_code] += 1
                if r.status_code != 200:
                    failures.append(f"{r.request.method} {r.request.url.path}: "
                                    f"{r.status_code} {r.text[:200]}")


@pytest.mark.slow
def test_ingest_while_serving_under_load(store_root: Path, tiny_store_dir: Path,
                                        tmp_path: Path) -> None:
    table = _write_cohort(tmp_path / "batch2", "C", NEW_PATIENTS, genomics=False, offset=3)
    bag = (tiny_store_dir.parent / "data" / "bags_A" / "A01-S1.h5").read_bytes()
    with running(store_root, reload_seconds=0.2) as (server, live):
        before = httpx.get(f"{server.url}/health").json()
        assert before["snapshot"] is not None and before["patients"] == 40
        first_state = live.current
        stop, guard = threading.Event(), threading.Lock()
        seen: Counter[int] = Counter()
        failures: list[str] = []
        workers = [threading.Thread(target=_hammer, args=(server.url, bag, stop, seen,
                                                          failures, guard))
                   for _ in range(N_CLIENTS)]
        for worker in workers:
            worker.start()
        try:
            done = subprocess.run(
                [CASEGRAPH, "ingest", "--store", str(store_root), "--table", str(table),
                 "--cohort", "gamma", "--bags", str(tmp_path / "batch2" / "bags_C"),
                 "--encoder", "simulator"], capture_output=True, text=True, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
            published = read_current(store_root)
            assert published is not None and published.patients == 40 + NEW_PATIENTS
            health = _wait_for_batch(server.url, published.batch, seconds=10)
            assert health["snapshot"] == published.snapshot_id
            assert health["patients"] == 40 + NEW_PATIENTS
            with guard:
                served_before = sum(seen.values())
            while True:  # the load goes on over the new state, too
                with guard:
                    if sum(seen.values()) >= served_before + 2 * N_CLIENTS:
                        break
                time.sleep(0.05)
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        assert failures == [], failures[:5]
        assert set(seen) == {200} and sum(seen.values()) >= 4 * N_CLIENTS
        with httpx.Client(base_url=server.url, headers=HEADERS, timeout=120) as client:
            record = client.get("/patients/C01")
            assert record.status_code == 200 and record.json()["cohort"] == "gamma"
            new_bag = (tmp_path / "batch2" / "bags_C" / "C01-S1.h5").read_bytes()
            found = client.post("/query", files=[("files", ("query.h5", new_bag))],
                                data={"k": "3"}).json()
            assert found["neighbours"][0]["patient_id"] == "C01"
            similar = client.get("/patients/A01/similar", params={"k": 45}).json()
            assert {n["patient_id"] for n in similar["neighbours"]} >= {
                f"C{i:02d}" for i in range(NEW_PATIENTS)}
        # the old state was closed once its last request finished
        assert first_state.retired and first_state.users == 0
        assert _closed(first_state)


def _wait_for_batch(url: str, batch: str | None, seconds: float) -> dict[str, object]:
    return _wait_for(url, lambda health: health["batch"] == batch, seconds)


def _wait_for(url: str, served: Callable[[dict[str, Any]], bool], seconds: float
              ) -> dict[str, Any]:
    """/health once ``served(health)``; fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        health: dict[str, Any] = httpx.get(f"{url}/health").json()
        if served(health):
            return health
        assert time.monotonic() < deadline, f"still serving {health} after {seconds} s"
        time.sleep(0.1)


@pytest.mark.slow
def test_ingest_and_attach_while_serving_under_load(tmp_path: Path) -> None:
    """A trained MSRL version; a second batch of its cohort is ingested and attached (with a
    buffer refresh) by the CLI while clients query the server; the service follows both."""
    root, version = _trained(tmp_path)
    with Store.open(root) as writable:
        build_index(writable, IndexKey(SLIDE_MEAN, "wsi"))
    table = _write_cohort(tmp_path / "batch2", "N", NEW_PATIENTS, genomics=True, offset=3)
    new_ids = {f"N{i:02d}" for i in range(NEW_PATIENTS)}
    bag = (root.parent / "data" / "bags_A" / "A01-S1.h5").read_bytes()
    with running(root, reload_seconds=0.2) as (server, _):
        before = httpx.get(f"{server.url}/health").json()
        assert before["method"] == "msrl-gsl" and before["model_versions"]["msrl"] == version
        stop, guard = threading.Event(), threading.Lock()
        seen: Counter[int] = Counter()
        failures: list[str] = []
        extra = ("/versions", f"/versions/{version}/predictions/A01")
        workers = [threading.Thread(target=_hammer, args=(server.url, bag, stop, seen, failures,
                                                          guard, extra, 100_000))
                   for _ in range(N_CLIENTS)]
        for worker in workers:
            worker.start()
        try:
            _cli("ingest", "--store", str(root), "--table", str(table), "--cohort", "alpha",
                 "--bags", str(tmp_path / "batch2" / "bags_N"), "--encoder", "simulator")
            ingested = read_current(root)
            assert ingested is not None and ingested.patients == 40 + NEW_PATIENTS
            _wait_for_batch(server.url, ingested.batch, seconds=10)
            _cli("attach", "--store", str(root), "--version", version, "--refresh-buffer")
            attached = read_current(root)
            assert attached is not None and attached.batch == ingested.batch
            derived = attached.model_versions["msrl"]
            assert derived != version
            health = _wait_for(server.url, lambda h: h["model_versions"].get("msrl") == derived,
                               seconds=10)
            assert health["batch"] == ingested.batch and health["method"] == "msrl-gsl"
            _more_load_on_the_new_state(seen, guard, workers)
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        assert failures == [], failures[:5]
        assert set(seen) == {200} and sum(seen.values()) >= 6 * N_CLIENTS
        with Store.open(root, read_only=True) as store:
            buffered = set(store.versions.buffer(derived)) & new_ids
        assert buffered  # the refresh put authentic new cases in the buffer
        with httpx.Client(base_url=server.url, headers=HEADERS, timeout=120) as client:
            record = client.get("/patients/N01")
            assert record.status_code == 200 and record.json()["cohort"] == "alpha"
            listed = client.get("/versions").json()
            assert listed[0]["version_id"] == derived and listed[0]["parent_id"] == version
            predicted = client.get(f"/versions/{derived}/predictions/N01")
            assert predicted.status_code == 200, predicted.text
            assert predicted.json()["stored"] and predicted.json()["version_id"] == derived
            assert client.get(f"/versions/{version}/predictions/N01").json()["stored"] is False
            similar = client.get("/patients/A01/similar", params={"k": 50, "exact": "true"})
            assert similar.status_code == 200, similar.text
            assert similar.json()["model_version"] == derived
            assert buffered <= {n["patient_id"] for n in similar.json()["neighbours"]}
            new_bag = (tmp_path / "batch2" / "bags_N" / "N02-S1.h5").read_bytes()
            found = client.post("/query", files=[("files", ("query.h5", new_bag))],
                                data={"k": "50", "exact": "true"}).json()
            assert buffered - {"N02"} <= {n["patient_id"] for n in found["neighbours"]}


def _cli(*args: str) -> None:
    done = subprocess.run([CASEGRAPH, *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _more_load_on_the_new_state(seen: Counter[int], guard: threading.Lock,
                                workers: list[threading.Thread]) -> None:
    """Wait until every client could have sent two requests after the switch."""
    with guard:
        target = sum(seen.values()) + 2 * N_CLIENTS
    while any(w.is_alive() for w in workers):
        with guard:
            if sum(seen.values()) >= target:
                return
        time.sleep(0.05)
    raise AssertionError("the clients stopped before the new state was served")


def test_a_request_in_flight_keeps_its_state_and_a_bad_snapshot_is_skipped(
        store_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    live = LiveState(store_root, None, reload_seconds=60)
    try:
        old = live.current
        assert live.reload() is False  # nothing new
        with live.use() as in_flight:
            _republish(store_root)
            assert live.reload() is True and live.current is not old
            assert in_flight is old and not _closed(old)  # still in use: still open
            assert len(in_flight.engine.catalog.table) == 40
        assert _closed(old)  # its last request finished
        good = live.current
        folder = published_dir(store_root)
        bad = folder / "20991231T000000000000Z-badbad.duckdb"
        bad.write_bytes(b"not a database" * 100)
        current = (folder / CURRENT_FILE).read_text(encoding="utf-8")
        (folder / CURRENT_FILE).write_text(
            current.replace(good.snapshot or "", bad.stem), encoding="utf-8")
        with caplog.at_level(logging.WARNING, logger="casegraph.retrieval.service"):
            assert live.reload() is False and live.reload() is False
        assert live.current is good and not _closed(good)
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "badbad" in lines[0] and "still serving" in lines[0]
    finally:
        live.close()


def test_a_store_nobody_published_is_served_as_it_is(store_root: Path) -> None:
    shutil.rmtree(published_dir(store_root))
    live = LiveState(store_root, None)
    try:
        assert live.current.snapshot is None and live.current.health.snapshot is None
        assert live.current.health.patients == 40 and live.current.health.batch is not None
    finally:
        live.close()


def test_serve_publishes_an_unpublished_store_once(store_root: Path) -> None:
    from casegraph.cli.query_cmds import _ensure_published

    shutil.rmtree(published_dir(store_root))
    _ensure_published(store_root)
    first = read_current(store_root)
    assert first is not None and first.patients == 40
    _ensure_published(store_root)  # published already: nothing new
    assert read_current(store_root) == first
    (published_dir(store_root) / first.snapshot).unlink()
    with pytest.raises(StoreError):
        read_current(store_root)
    _ensure_published(store_root)  # a broken pointer is replaced
    assert read_current(store_root) not in (None, first)


def _republish(root: Path) -> None:
    from casegraph.ingest.publish import publish_snapshot

    with Store.open(root) as writable:
        publish_snapshot(writable)


def _closed(state: ServedState) -> bool:
    try:
        state.store.cohorts()
    except Exception:  # DuckDB's closed-connection error
        return True
    return False


def test_an_index_replaced_while_it_is_read_is_always_read_whole(tmp_path: Path) -> None:
    import numpy as np

    from casegraph.retrieval.faiss_index import FaissIndex, FlatIndex

    folder = tmp_path / "idx"

    def save(n: int) -> None:
        index = FlatIndex(4, use_gpu=False)
        vectors = np.random.default_rng(n).normal(size=(n, 4)).astype(np.float32)
        index.add([f"P{i}" for i in range(n)], vectors)
        index.save(folder, extra_meta={"n": n})

    save(1)
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                # open_index builds an index whose meta.json it does not find
                assert (folder / "meta.json").exists(), "a moment without an index"
                FaissIndex.load(folder)  # checks its id map against the FAISS file
            except BaseException as exc:  # any failure is the test's failure
                errors.append(exc)
                return

    def write(sizes: range) -> None:
        try:
            for n in sizes:  # sizes differ, so a mixed read fails the id-map check
                save(n)
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(range(start, 60, 2),))
               for start in (2, 3)]  # two processes' saves at once (e.g. two workers)
    try:
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert len(FaissIndex.load(folder).ids()) in (58, 59)
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no temp or old folder left
