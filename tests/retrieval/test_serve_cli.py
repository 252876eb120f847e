"""``casegraph serve`` as a real subprocess: several workers, and an access log without
URL query strings (a key sent as ``?api_key=`` is refused and never written down)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from casegraph.ingest.store import Store
from casegraph.retrieval.index import SLIDE_MEAN, IndexKey, build_index
from tests.retrieval.conftest import API_KEY, copy_store, write_bag

CASEGRAPH = str(Path(sys.executable).with_name("casegraph"))
SECRET = "leaked-secret-0123"


@dataclass
class Served:
    url: str
    process: subprocess.Popen[str]
    log: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[str], log: Path) -> None:
    while process.poll() is None:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"serve exited with {process.returncode}: {log.read_text()[-2000:]}")


@pytest.fixture
def served(tiny_store_dir: Path, tmp_path: Path) -> Iterator[Served]:
    root = copy_store(tiny_store_dir, tmp_path / "store")
    with Store.open(root) as writable:
        build_index(writable, IndexKey(SLIDE_MEAN, "wsi"))
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "CASEGRAPH_API_KEYS": API_KEY}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [CASEGRAPH, "serve", "--store", str(root), "--port", str(port), "--workers", "2"],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log)
        yield Served(url, process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait()


@pytest.mark.slow
def test_serve_with_two_workers_answers_queries(served: Served, tmp_path: Path) -> None:
    headers = {"X-API-Key": API_KEY}
    bag = write_bag(tmp_path / "q.h5", 1, seed=5).read_bytes()
    for _ in range(4):  # enough requests that both workers are likely to answer some
        similar = httpx.get(f"{served.url}/patients/A01/similar", headers=headers,
                            params={"k": 3}, timeout=60)
        assert similar.status_code == 200, similar.text
        posted = httpx.post(f"{served.url}/query", headers=headers, timeout=60,
                            files=[("files", ("q.h5", bag))], data={"k": "4"})
        assert posted.status_code == 200 and len(posted.json()["neighbours"]) == 4
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait() == 0
    log = served.log.read_text()
    assert log.count("Started server process") == 2, log[-2000:]


@pytest.mark.slow
def test_keys_in_the_url_are_refused_and_never_logged(served: Served) -> None:
    for path in (f"/cohorts?api_key={SECRET}", f"/patients/A01?key={SECRET}&x=1"):
        assert httpx.get(served.url + path).status_code == 401
    ok = httpx.get(f"{served.url}/cohorts?note={SECRET}", headers={"X-API-Key": API_KEY})
    assert ok.status_code == 200
    served.process.send_signal(signal.SIGTERM)
    served.process.wait()
    log = served.log.read_text()
    assert '"GET /cohorts HTTP/1.1" 401' in log and '"GET /cohorts HTTP/1.1" 200' in log
    assert SECRET not in log and "api_key" not in log


def test_serve_without_keys_is_one_line(tiny_store_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CASEGRAPH_API_KEYS", "CASEGRAPH_API_KEYS_FILE")}
    done = subprocess.run([CASEGRAPH, "serve", "--store", str(tiny_store_dir), "--port",
                           str(_free_port()), "--workers", "2"], capture_output=True,
                          text=True, env=env, check=False)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "error: no API keys configured: set CASEGRAPH_API_KEYS (comma separated) or "
        "CASEGRAPH_API_KEYS_FILE"]
