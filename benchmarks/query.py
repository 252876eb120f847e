"""WSI-only query latency end to end, FAISS pruning vs the exact full-buffer path, and
queries/s of the REST service under 8 concurrent clients.

Part 1 (core): one query = read a CLAM .h5 of 10,000 x 1,024 patches -> MSRL WSI encoder
-> Inductor -> the query's vector in the GSL space -> FAISS top-M seeds (M = 100) among N
reference patients, each joined by its K = 12 nearest references (one batched FAISS
search) -> GSL graph + GCN over these candidates -> risk, survival, neighbours
(casegraph.retrieval.query.answer_wsi_only, the function the service runs). N = 10,000 /
100,000 / 1,000,000 synthetic reference patients (fused features drawn around 256
cluster centres; MSRL with d = 128 so f = [g~, h] is 256-d; weights untrained: latency does
not depend on them). Indexes: exact (flat) below 50,000 patients, IVF at and above.
The exact path (``exact=True``: GSL over the whole buffer, as the paper does) is timed at
N = 100,000 with the buffer = all references; its buffer top-K graph is built once with
FAISS IVF search (what BufferGraph.build computes by brute force, 2.6 TFLOP at this size)
and not timed.
Top-10 neighbour recall and |risk difference| compare pruned vs exact on the same queries.

Part 2 (service): ``casegraph serve`` (a uvicorn subprocess) on a store built here
(simulated cohort of 200 patients, a small trained MSRL version); 8 client threads post
the 10,000 x 1,024 bag to POST /query, then call GET /patients/{id}/similar.

    .venv/bin/python benchmarks/query.py [--sizes 10000,100000,1000000] [--queries 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import print_table, write_json
from casegraph.ingest.bags import read_bag
from casegraph.retrieval import msrl_adapter
from casegraph.retrieval.faiss_index import make_index
from casegraph.retrieval.index import IndexKey, LoadedIndex
from casegraph.retrieval.query import QueryOptions, answer_wsi_only

BAG = (10_000, 1024)
MSRL_DIM = 128
N_CENTRES = 256
GROUPS = [84, 314, 501, 332, 186, 323]  # BLCA's MCAT group sizes


def write_bags(folder: Path, n: int, seed: int = 0) -> list[Path]:
    import h5py

    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(8, BAG[1])).astype(np.float32)
    paths = []
    for i in range(n):
        mix = rng.dirichlet(np.ones(8))
        labels = rng.choice(8, size=BAG[0], p=mix)
        feats = protos[labels] + rng.normal(size=BAG).astype(np.float32)
        path = folder / f"query-{i}.h5"
        with h5py.File(path, "w") as handle:
            handle["features"] = feats
            handle["coords"] = rng.integers(0, 50_000, size=(BAG[0], 2))
        paths.append(path)
    return paths


def untrained_model(seed: int = 0) -> Any:
    import torch

    from casegraph.models.msrl import MSRLModel
    from casegraph.models.msrl.buffer import CaseBuffer
    from casegraph.models.msrl.nets import MSRLNetwork

    torch.manual_seed(seed)
    model = MSRLModel("msrl", dim=MSRL_DIM)
    model.net_ = MSRLNetwork(model.config, BAG[1], GROUPS, model.config.n_bins).eval()
    model.target_ = model.net_
    model.bag_dim_, model.group_sizes_, model.classes_ = BAG[1], GROUPS, []
    model.bin_edges_ = np.array([0.0, 12.0, 24.0, 48.0, np.inf])
    f_dim = 2 * MSRL_DIM
    placeholder = CaseBuffer.from_state(["b0", "b1"], torch.zeros(2, f_dim), capacity=2)
    model._set_buffer(placeholder)
    return model


def synthetic_references(model: Any, n: int, seed: int) -> None:
    """n reference patients' fused features around N_CENTRES centres (float32, chunked)."""
    import torch

    rng = np.random.default_rng(seed)
    f_dim = 2 * MSRL_DIM
    centres = rng.normal(size=(N_CENTRES, f_dim)).astype(np.float32)
    out = np.empty((n, f_dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        out[start:stop] = centres[rng.integers(0, N_CENTRES, stop - start)]
        out[start:stop] += 0.6 * rng.standard_normal((stop - start, f_dim), dtype=np.float32)
    model.reference_ids_ = [f"r{i}" for i in range(n)]
    model.reference_fused_ = torch.from_numpy(out)
    msrl_adapter.cache_reference_lookup(model)


def gsl_index(model: Any, seed: int) -> tuple[LoadedIndex, float]:
    start = time.perf_counter()
    ids, vectors = msrl_adapter.reference_vectors(model)
    index = make_index(vectors.shape[1], len(ids), seed=seed)
    index.add(ids, vectors)
    del vectors
    return LoadedIndex(IndexKey("bench", "gsl"), index), time.perf_counter() - start


def use_all_references_as_buffer(model: Any) -> float:
    """Buffer = every reference; its top-K graph by FAISS (set up once, not timed per query)."""
    import torch

    from casegraph.models.msrl.buffer import CaseBuffer
    from casegraph.models.msrl.inference import BufferGraph
    from casegraph.retrieval.faiss_index import IVFIndex, normalise

    start = time.perf_counter()
    feats = model.reference_fused_
    with torch.no_grad():
        emb = normalise(model.net_.gsl_f.embed(feats).numpy())
    k = model.config.k
    # each buffer node's top-K: IVF with 2x the default nprobe (brute force is 2.6 TFLOP at
    # 100,000 nodes); on these data IVF recall@10 at the default nprobe measured 1.0
    ivf = IVFIndex.for_size(emb.shape[1], len(emb))
    ivf.add([str(i) for i in range(len(emb))], emb)
    ivf._index.nprobe = 2 * ivf.nprobe
    values, index = ivf._index.search(emb, k + 1)
    del emb, ivf
    keep = index != np.arange(len(index))[:, None]  # drop self
    index = np.stack([row[m][:k] for row, m in zip(index, keep, strict=True)])
    values = np.stack([row[m][:k] for row, m in zip(values, keep, strict=True)])
    model.buffer_ = CaseBuffer.from_state(list(model.reference_ids_), feats,
                                          capacity=len(model.reference_ids_))
    parts: dict[str, Any] = {"features": feats, "k": k,
                             "index": torch.from_numpy(index.astype(np.int64)),
                             "values": torch.from_numpy(values.astype(np.float32))}
    derived = {  # cached fields of BufferGraph, computed as BufferGraph.build does
        "first_layer": lambda: model.net_.gcn_f.layers[0](feats),
        "keys": lambda: model.net_.gsl_f.keys(feats),
    }
    for field in dataclasses.fields(BufferGraph):
        if field.name not in parts:
            if field.name not in derived:
                raise RuntimeError(f"BufferGraph has a new field {field.name!r}: teach "
                                   "benchmarks/query.py how BufferGraph.build computes it")
            with torch.no_grad():
                parts[field.name] = derived[field.name]()
    model.buffer_graph_ = BufferGraph(**parts)
    return time.perf_counter() - start


READ_TIMES: list[float] = []


def run_queries(model: Any, loaded: LoadedIndex, bags: list[Path], n: int,
                opts: QueryOptions) -> tuple[list[float], list[Any]]:
    times, answers = [], []
    for i in range(n):
        start = time.perf_counter()
        bag = read_bag(bags[i % len(bags)])
        READ_TIMES.append(time.perf_counter() - start)
        # the patch mean from the read's column sums, as QueryEngine passes it
        mean = (None if bag.column_sums is None
                else np.true_divide(bag.column_sums, bag.n_patches, dtype=np.float32))
        answers.append(answer_wsi_only(model, loaded, bag.features, opts, mean=mean))
        times.append(time.perf_counter() - start)
    return times, answers


def similarity_recall(model: Any, loaded: LoadedIndex, answers: list[Any]) -> float:
    """Recall of the query's exact top-10 by learned similarity over all references among
    the FAISS candidates' top-10 (what the index itself can lose)."""
    ids, vectors = msrl_adapter.reference_vectors(model)
    from casegraph.retrieval.faiss_index import normalise

    keys = normalise(vectors)
    del vectors
    out = []
    for answer in answers:
        exact = np.argsort(-(keys @ answer.vector[0]))[:10]
        found = {h.patient_id for h in loaded.index.search(answer.vector, 10)[0]}
        out.append(len(found & {ids[i] for i in exact}) / 10)
    return float(np.mean(out))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000.0


def core_benchmark(sizes: list[int], n_queries: int, exact_at: int, bags: list[Path]
                   ) -> dict[str, Any]:
    rows, out = [], {"sizes": [], "exact": None}
    model = untrained_model()
    opts = QueryOptions(k=10, n_candidates=100)
    for n in sizes:
        synthetic_references(model, n, seed=n)
        loaded, build_s = gsl_index(model, seed=0)
        run_queries(model, loaded, bags, 2, opts)  # warm-up (page cache, allocator)
        times, pruned = run_queries(model, loaded, bags, n_queries, opts)
        entry = {"n": n, "index": loaded.index.params, "index_build_s": build_s,
                 "p50_ms": pct(times, 50), "p95_ms": pct(times, 95)}
        if n == exact_at:
            graph_s = use_all_references_as_buffer(model)
            exact_opts = QueryOptions(k=10, n_candidates=100, exact=True)
            run_queries(model, loaded, bags, 1, exact_opts)
            n_exact = min(len(pruned), max(5, n_queries // 2))
            # interleaved, so both paths see the same machine load
            e_times, exact, p_times = [], [], []
            for i in range(n_exact):
                t, a = run_queries(model, loaded, bags[i % len(bags):], 1, opts)
                p_times += t
                pruned[i] = a[0]
                t, a = run_queries(model, loaded, bags[i % len(bags):], 1, exact_opts)
                e_times += t
                exact += a
            recall = [len({p for p, _ in a.neighbours[:10]} & {p for p, _ in b.neighbours[:10]})
                      / max(1, min(10, len(b.neighbours))) for a, b in
                      zip(pruned[:n_exact], exact, strict=True)]
            sim_recall = similarity_recall(model, loaded, pruned[:n_exact])
            risk_diff = [abs(a.risk - b.risk) for a, b in zip(pruned[:n_exact], exact,
                                                              strict=True)]
            out["exact"] = {"n": n, "buffer_graph_s": graph_s, "p50_ms": pct(e_times, 50),
                            "p95_ms": pct(e_times, 95),
                            "pruned_interleaved_p50_ms": pct(p_times, 50),
                            "speedup_p50": pct(e_times, 50) / pct(p_times, 50),
                            "recall@10": float(np.mean(recall)),
                            "similarity_recall@10": sim_recall,
                            "risk_abs_diff_mean": float(np.mean(risk_diff)),
                            "risk_abs_diff_max": float(np.max(risk_diff)),
                            "risk_sd_exact": float(np.std([b.risk for b in exact]))}
            model._set_buffer(untrained_model().buffer_)  # release the big buffer graph
        out["sizes"].append(entry)
        rows.append([f"{n:,}", loaded.index.kind, f"{build_s:.1f}", f"{entry['p50_ms']:.1f}",
                     f"{entry['p95_ms']:.1f}"])
        del loaded
    out["h5_read_p50_ms"] = pct(READ_TIMES, 50)
    base, top = out["sizes"][0]["p50_ms"], out["sizes"][-1]["p50_ms"]
    out["growth_p50"] = top / base
    print_table("WSI-only query, end to end from a 10,000 x 1,024 h5 (FAISS top-100 + expansion)",
                ["references", "index", "build s", "p50 ms", "p95 ms"], rows)
    print(f"growth p50 {sizes[0]:,} -> {sizes[-1]:,}: {out['growth_p50']:.2f}x; reading the "
          f"h5 alone: p50 {out['h5_read_p50_ms']:.1f} ms")
    if out["exact"]:
        e = out["exact"]
        print(f"exact full-buffer path at {e['n']:,}: p50 {e['p50_ms']:.1f} ms (pruned, "
              f"interleaved: {e['pruned_interleaved_p50_ms']:.1f} ms), p95 "
              f"{e['p95_ms']:.1f} ms; speed-up {e['speedup_p50']:.1f}x; top-10 recall: graph "
              f"neighbours {e['recall@10']:.3f}, by similarity {e['similarity_recall@10']:.3f}; "
              f"|risk diff| mean {e['risk_abs_diff_mean']:.4f} "
              f"max {e['risk_abs_diff_max']:.4f}")
    return out


# --------------------------------------------------------------------------- service
def build_service_store(work: Path) -> tuple[Path, list[str]]:
    import torch

    from casegraph.ingest.pipeline import IngestRequest, ingest
    from casegraph.ingest.signatures import read_gene_groups
    from casegraph.ingest.simulate import BagSettings
    from casegraph.ingest.store import Store
    from casegraph.ingest.synthetic import simulate_cohort
    from casegraph.ingest.tables import read_mcat_table
    from casegraph.models.data import CohortData
    from casegraph.models.msrl import MSRLModel

    torch.set_num_threads(1)
    cohort = simulate_cohort(200, work / "cohort", settings=BagSettings(
        n_patches=256, dim=BAG[1]), seed=0)
    root = work / "store"
    with Store.open(root) as store:
        ingest(store, IngestRequest(tables=[read_mcat_table(cohort.table_path, "synthetic")],
                                    gene_groups=[read_gene_groups(cohort.signatures_path,
                                                                  "mcat")],
                                    bag_dirs=[cohort.bags_dir], encoder="simulator"))
        data = CohortData.from_store(store, "synthetic", require_slides=True)
        model = MSRLModel("msrl", dim=64, proj_dim=32, pretrain_steps=10, epochs=2)
        model.fit(data)
        model.save_version(store, "synthetic")
    return root, list(data.patient_ids)


def service_benchmark(work: Path, bag: Path, n_clients: int, per_client: int
                      ) -> dict[str, Any]:
    import socket
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    root, ids = build_service_store(work)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CASEGRAPH_API_KEYS": "bench-key", "CASEGRAPH_NO_PROGRESS": "1"}
    server = subprocess.Popen([str(Path(sys.executable).parent / "casegraph"), "serve", "--store",
                               str(root), "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, headers = f"http://127.0.0.1:{port}", {"X-API-Key": "bench-key"}
    try:
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                if server.poll() is not None:
                    raise RuntimeError("casegraph serve exited") from None
                time.sleep(0.2)
        payload = bag.read_bytes()

        def post(_: int) -> float:
            start = time.perf_counter()
            r = httpx.post(f"{url}/query", headers=headers, timeout=300,
                           files=[("files", (bag.name, payload))], data={"k": "10"})
            r.raise_for_status()
            return time.perf_counter() - start

        def similar(i: int) -> float:
            start = time.perf_counter()
            r = httpx.get(f"{url}/patients/{ids[i % len(ids)]}/similar", headers=headers,
                          timeout=300)
            r.raise_for_status()
            return time.perf_counter() - start

        out: dict[str, Any] = {"clients": n_clients}
        for name, fn in (("POST /query (10,000 x 1,024 upload)", post),
                         ("GET /patients/{id}/similar", similar)):
            fn(0)  # warm-up: loads the model and builds the index
            total = n_clients * per_client
            start = time.perf_counter()
            with ThreadPoolExecutor(n_clients) as pool:
                lat = list(pool.map(fn, range(total)))
            wall = time.perf_counter() - start
            out[name] = {"requests": total, "qps": total / wall, "p50_ms": pct(lat, 50),
                         "p95_ms": pct(lat, 95)}
        print_table(f"service, {n_clients} concurrent clients (uvicorn, 1 worker)",
                    ["request", "n", "queries/s", "p50 ms", "p95 ms"],
                    [[k, v["requests"], f"{v['qps']:.2f}", f"{v['p50_ms']:.0f}",
                      f"{v['p95_ms']:.0f}"] for k, v in out.items() if isinstance(v, dict)])
        return out
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--exact-at", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=4)
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="casegraph-query-bench-") as tmp:
        work = Path(tmp)
        bags = write_bags(work, 3)
        payload: dict[str, Any] = {"settings": vars(args), "bag": list(BAG),
                                   "msrl_dim": MSRL_DIM}
        sizes = [int(s) for s in args.sizes.split(",")]
        payload["core"] = core_benchmark(sizes, args.queries, args.exact_at, bags)
        if not args.skip_service:
            payload["service"] = service_benchmark(work, bags[0], args.clients,
                                                   args.per_client)
        print(f"\nwrote {write_json('query', payload)}")


if __name__ == "__main__":
    main()
