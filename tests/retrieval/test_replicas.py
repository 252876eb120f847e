"""Service replicas: several ``casegraph serve --replica`` processes over one published store
that they may not write. Behind a loopback round robin they give identical answers; one
killed with SIGKILL mid-load loses only the requests in flight to it; a newer snapshot is
picked up by every replica; none of them writes a byte into the store directory."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from casegraph.errors import StoreError
from casegraph.ingest.publish import published_dir, read_current
from casegraph.ingest.store import Store
from casegraph.retrieval.index import SLIDE_MEAN, IndexKey, build_index
from casegraph.retrieval.service import LiveState, create_app
from tests.retrieval.conftest import API_KEY, _write_cohort, copy_store

CASEGRAPH = str(Path(sys.executable).with_name("casegraph"))
HEADERS = {"X-API-Key": API_KEY}
N_CLIENTS = 3
NEW_PATIENTS = 4


@pytest.fixture
def store_root(tiny_store_dir: Path, tmp_path: Path) -> Path:
    root = copy_store(tiny_store_dir, tmp_path / "store")
    with Store.open(root) as writable:  # what a writer does before replicas serve
        build_index(writable, IndexKey(SLIDE_MEAN, "wsi"))
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Replica:
    url: str
    process: subprocess.Popen[bytes]


def _start(root: Path) -> Replica:
    port = _free_port()
    env = {**os.environ, "CASEGRAPH_API_KEYS": API_KEY, "CASEGRAPH_RELOAD_SECONDS": "1"}
    process = subprocess.Popen(
        [CASEGRAPH, "serve", "--replica", "--store", str(root), "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Replica(f"http://127.0.0.1:{port}", process)


def _wait_ready(replica: Replica) -> dict[str, Any]:
    while True:
        assert replica.process.poll() is None, "the replica exited at start-up"
        try:
            return dict(httpx.get(f"{replica.url}/health", timeout=5).json())
        except httpx.TransportError:
            time.sleep(0.2)


@contextmanager
def replicas(root: Path, n: int) -> Iterator[list[Replica]]:
    started = [_start(root) for _ in range(n)]
    try:
        for replica in started:
            _wait_ready(replica)
        yield started
    finally:
        for replica in started:
            replica.process.kill()
            replica.process.wait()


@dataclass
class Outcome:
    replica: int
    started: float
    ended: float
    status: int | None  # None: the request was lost (a transport error after it was sent)


@dataclass
class RoundRobin:
    """A loopback load balancer in the client: requests go to the replicas in turn; a
    replica that refuses the connection (the request never left) is dropped and the
    request goes to the next. Every request that was sent is recorded."""

    replicas: list[Replica]
    outcomes: list[Outcome] = field(default_factory=list)
    alive: set[int] = field(default_factory=set)
    _turn: Iterator[int] = field(default_factory=itertools.count)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.alive = set(range(len(self.replicas)))

    def _next(self) -> int:
        with self._guard:
            assert self.alive, "no replica left"
            live = sorted(self.alive)
            return live[next(self._turn) % len(live)]

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        while True:
            which = self._next()
            started = time.monotonic()
            try:
                # no keep-alive: each request is its own connection, so a refused one is
                # a request that never reached the replica
                with httpx.Client(base_url=self.replicas[which].url, headers=HEADERS,
                                  timeout=60, limits=httpx.Limits(max_keepalive_connections=0)
                                  ) as client:
                    response = client.request(method, path, **kwargs)
            except httpx.ConnectError:
                with self._guard:
                    self.alive.discard(which)
                continue
            except httpx.TransportError:
                self._record(Outcome(which, started, time.monotonic(), None))
                return None
            self._record(Outcome(which, started, time.monotonic(), response.status_code))
            return response

    def _record(self, outcome: Outcome) -> None:
        with self._guard:
            self.outcomes.append(outcome)


def _requests(bag: bytes) -> list[tuple[str, str, dict[str, Any]]]:
    return [("GET", "/patients/A01", {}),
            ("GET", "/patients/A03/similar", {"params": {"k": 5}}),
            ("GET", "/patients/B02/similar", {"params": {"k": 5, "method": "knn"}}),
            ("POST", "/query", {"files": [("files", ("query.h5", bag))], "data": {"k": "4"}})]


def _answers_of_each(balancer: RoundRobin, bag: bytes) -> list[list[Any]]:
    """Each request sent once to every replica (the round robin's next turns); per request
    the JSON answers in replica order."""
    answers = []
    for method, path, kwargs in _requests(bag):
        by_replica: dict[int, Any] = {}
        for _ in balancer.alive:
            response = balancer.request(method, path, **kwargs)
            assert response is not None and response.status_code == 200, path
            by_replica[balancer.outcomes[-1].replica] = response.json()
        assert set(by_replica) == balancer.alive
        answers.append([by_replica[i] for i in sorted(by_replica)])
    return answers


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def _set_writable(root: Path, writable: bool) -> None:
    bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~bits)


@pytest.mark.slow
def test_two_replicas_answer_alike_survive_a_kill_and_follow_a_new_snapshot(
        store_root: Path, tiny_store_dir: Path, tmp_path: Path) -> None:
    bag = (tiny_store_dir.parent / "data" / "bags_A" / "A01-S1.h5").read_bytes()
    before = _tree(store_root)
    _set_writable(store_root, False)  # proves nothing is written (unless run as root)
    try:
        with replicas(store_root, 2) as started:
            balancer = RoundRobin(started)
            for answers in _answers_of_each(balancer, bag):
                assert answers[0] == answers[1]

            stop = threading.Event()

            def client() -> None:
                for method, path, kwargs in itertools.cycle(_requests(bag)):
                    if stop.is_set():
                        return
                    balancer.request(method, path, **kwargs)

            clients = [threading.Thread(target=client) for _ in range(N_CLIENTS)]
            for thread in clients:
                thread.start()
            try:
                while len(balancer.outcomes) < 20:
                    time.sleep(0.05)
                started[0].process.send_signal(signal.SIGKILL)
                started[0].process.wait()
                dead_at = time.monotonic()
                answered_then = len(balancer.outcomes)
                while len(balancer.outcomes) < answered_then + 20:
                    time.sleep(0.05)
            finally:
                stop.set()
                for thread in clients:
                    thread.join()
            assert balancer.alive == {1}
            lost = [o for o in balancer.outcomes if o.status is None]
            # only requests in flight to the killed replica were lost: at most one a client
            assert all(o.replica == 0 and o.started < dead_at for o in lost), lost
            assert len(lost) <= N_CLIENTS
            assert {o.status for o in balancer.outcomes if o.status is not None} == {200}
            assert sum(1 for o in balancer.outcomes if o.replica == 1 and o.started > dead_at
                       ) >= 20

            # a replacement needs no coordination: it starts on the same read-only store
            started[0] = _start(store_root)
            _wait_ready(started[0])
            balancer = RoundRobin(started)
            for answers in _answers_of_each(balancer, bag):
                assert answers[0] == answers[1]
            _set_writable(store_root, True)
            assert _tree(store_root) == before  # the replicas wrote nothing

            table = _write_cohort(tmp_path / "batch2", "C", NEW_PATIENTS, genomics=False,
                                  offset=3)
            done = subprocess.run(
                [CASEGRAPH, "ingest", "--store", str(store_root), "--table", str(table),
                 "--cohort", "gamma", "--bags", str(tmp_path / "batch2" / "bags_C"),
                 "--encoder", "simulator"], capture_output=True, text=True, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
            published = read_current(store_root)
            assert published is not None
            for replica in started:  # each follows the new snapshot on its own
                while _wait_ready(replica)["snapshot"] != published.snapshot_id:
                    time.sleep(0.2)
            new_bag = (tmp_path / "batch2" / "bags_C" / "C01-S1.h5").read_bytes()
            for answers in _answers_of_each(balancer, new_bag):
                assert answers[0] == answers[1]
            record = balancer.request("GET", "/patients/C01")
            assert record is not None and record.json()["cohort"] == "gamma"
    finally:
        _set_writable(store_root, True)


def test_a_replica_refuses_a_store_never_published(store_root: Path) -> None:
    shutil.rmtree(published_dir(store_root))
    with pytest.raises(StoreError, match="never published"):
        LiveState(store_root, None, replica=True)
    env = {**os.environ, "CASEGRAPH_API_KEYS": API_KEY}
    done = subprocess.run([CASEGRAPH, "serve", "--replica", "--store", str(store_root),
                           "--port", str(_free_port())], env=env, capture_output=True,
                          text=True, check=False)
    assert done.returncode != 0
    assert "never published" in done.stderr and "Traceback" not in done.stderr
    assert not published_dir(store_root).exists()  # it did not publish


def test_a_replica_does_not_build_a_missing_index(store_root: Path) -> None:
    from fastapi.testclient import TestClient

    with Store.open_snapshot(store_root, published_dir(store_root) / _current(store_root)
                             ) as snapshot:
        saved = IndexKey(SLIDE_MEAN, "wsi").directory(snapshot)
    shutil.rmtree(saved)
    app = create_app(store_root, keys=frozenset({API_KEY}), replica=True)
    with TestClient(app) as client:
        assert client.get("/patients/A01", headers=HEADERS).status_code == 200
        answer = client.get("/patients/A01/similar", headers=HEADERS,
                            params={"method": "knn"})
    assert answer.status_code == 503
    assert "index rebuild" in answer.json()["detail"]
    assert not saved.exists()


def _current(root: Path) -> str:
    info = read_current(root)
    assert info is not None
    return info.snapshot
