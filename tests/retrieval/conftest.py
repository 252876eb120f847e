"""A tiny two-cohort store with bags whose histology carries the survival signal.

Cohort ``alpha`` (bags from the simulator, genomics) and ``beta`` (bags from another
encoder, no genomic columns). Each patient has a latent group g in {0, 1}: its patches
sit around prototype g and its survival time is short for g = 1, long for g = 0.
Patient A00 has two slides. Built once per test session; tests must not change it
(copy it with :func:`copy_store` first). ``build_store(..., without_bags=...)`` leaves the
named slides in the table without a feature file (common in real TCGA tables).
"""

from __future__ import annotations

import shutil
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from casegraph.config import BagLimits
from casegraph.ingest.pipeline import IngestRequest, ingest
from casegraph.ingest.signatures import read_gene_groups
from casegraph.ingest.store import Store
from casegraph.ingest.tables import read_mcat_table

DIM = 16
N_PATCHES = 24
SIGNATURES = "Tumor Suppressor Genes,Oncogenes\nTP53,EGFR\n,KRAS\n"


def group_of(index: int) -> int:
    return index % 2


def prototypes() -> np.ndarray:
    rng = np.random.default_rng(123)
    return rng.normal(size=(2, DIM)).astype(np.float32) * 2.0


def write_bag(path: Path, group: int, seed: int, n: int = N_PATCHES, dim: int = DIM) -> Path:
    rng = np.random.default_rng(seed)
    protos = prototypes() if dim == DIM else rng.normal(size=(2, dim)).astype(np.float32)
    feats = protos[group] + rng.normal(scale=1.0, size=(n, dim)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle["features"] = feats.astype(np.float32)
        handle["coords"] = rng.integers(0, 1000, size=(n, 2))
    return path


def _write_cohort(folder: Path, prefix: str, n: int, genomics: bool, offset: int,
                  without_bags: Collection[str] = ()) -> Path:
    rng = np.random.default_rng(offset)
    header = "case_id,slide_id,survival_months,censorship,oncotree_code"
    if genomics:
        header += ",TP53_rnaseq,EGFR_rnaseq,TP53_cnv,KRAS_mut"
    rows = [header]
    for i in range(n):
        g = group_of(i)
        time = (5.0 if g else 40.0) + float(rng.uniform(0, 10))
        censored = int(i % 5 == 0)
        code = "HIGH" if g else "LOW"
        slides = [f"{prefix}{i:02d}-S1"] + ([f"{prefix}{i:02d}-S2"] if i == 0 else [])
        values = f",{g * 1.5 - 0.5:.2f},{rng.normal():.2f},{g - 1 if i % 3 else g},{g}"
        for slide in slides:
            row = f"{prefix}{i:02d},{slide}.svs,{time:.2f},{censored},{code}"
            rows.append(row + (values if genomics else ""))
            if slide in without_bags:
                continue
            write_bag(folder / f"bags_{prefix}" / f"{slide}.h5", g, seed=offset * 1000 + i)
    path = folder / f"tcga_{prefix.lower()}_all_clean.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def build_store(root: Path, n_per_cohort: int = 20, without_bags: Collection[str] = ()) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    sig = data / "mcat_signatures.csv"
    sig.write_text(SIGNATURES, encoding="utf-8")
    alpha = _write_cohort(data, "A", n_per_cohort, genomics=True, offset=1,
                          without_bags=without_bags)
    beta = _write_cohort(data, "B", n_per_cohort, genomics=False, offset=2,
                         without_bags=without_bags)
    store_dir = root / "store"
    with Store.open(store_dir) as store:
        ingest(store, IngestRequest(tables=[read_mcat_table(alpha, "alpha")],
                                    gene_groups=[read_gene_groups(sig, "mcat")],
                                    bag_dirs=[data / "bags_A"], encoder="simulator"))
        ingest(store, IngestRequest(tables=[read_mcat_table(beta, "beta")],
                                    bag_dirs=[data / "bags_B"], encoder="uni"))
    return store_dir


def copy_store(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.fixture(scope="session")
def tiny_store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("retrieval"))


@pytest.fixture
def tiny_store(tiny_store_dir: Path, tmp_path: Path) -> Iterator[Store]:
    """A private writable copy of the tiny store."""
    store = Store.open(copy_store(tiny_store_dir, tmp_path / "store"))
    yield store
    store.close()


API_KEY = "test-key-123"
MAX_BODY = 1024 * 1024


@dataclass
class LiveServer:
    url: str
    headers: dict[str, str]


# slides left without a feature file: A05 and B03 have none at all, A00 one of its two
NO_FEATURE_SLIDES = ("A05-S1", "B03-S1", "A00-S2")
NO_FEATURE_PATIENTS = ("A05", "B03")
# the gappy server's bag limits: small enough that a test can cross them with a tiny file
GAPPY_MAX_PATCHES = 400
GAPPY_MAX_BYTES = 400 * DIM * 4


@pytest.fixture(scope="session")
def gappy_store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("gappy"), without_bags=NO_FEATURE_SLIDES)


@pytest.fixture(scope="session")
def live_server(tiny_store_dir: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[LiveServer]:
    """uvicorn serving a read-only copy of the tiny store on 127.0.0.1 (a thread)."""
    root = copy_store(tiny_store_dir, tmp_path_factory.mktemp("served") / "store")
    with serve(root) as server:
        yield server


@pytest.fixture(scope="session")
def gappy_server(gappy_store_dir: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[LiveServer]:
    """The service over a store whose patients NO_FEATURE_PATIENTS have slides without
    feature files, with small bag limits (GAPPY_MAX_PATCHES, GAPPY_MAX_BYTES)."""
    root = copy_store(gappy_store_dir, tmp_path_factory.mktemp("served-gappy") / "store")
    with serve(root, BagLimits(max_patches=GAPPY_MAX_PATCHES, max_bytes=GAPPY_MAX_BYTES)
               ) as server:
        yield server


@contextmanager
def serve(root: Path, bag_limits: BagLimits | None = None) -> Iterator[LiveServer]:
    """uvicorn serving the store at ``root`` (its slide-mean index built) in a thread."""
    import socket
    import threading
    import time

    import uvicorn

    from casegraph.retrieval.index import SLIDE_MEAN, IndexKey, build_index
    from casegraph.retrieval.service import create_app

    with Store.open(root) as writable:
        build_index(writable, IndexKey(SLIDE_MEAN, "wsi"))
    app = create_app(root, keys=frozenset({API_KEY}), max_body_bytes=MAX_BODY,
                     bag_limits=bag_limits)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    yield LiveServer(f"http://127.0.0.1:{port}", {"X-API-Key": API_KEY})
    server.should_exit = True
    thread.join()
    sock.close()
    app.state.live.close()
