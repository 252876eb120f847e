"""MSRL at scale without an O(M²) memory step (issue 13, target 5).

(a) ``build``: the buffer graph (every node's exact top-K by the learned similarity) of M
    synthetic fused vectors (f_dim = 256, MSRL_DIM = 128 as in benchmarks/query.py) with
    the library's ``BufferGraph.build`` (exact FAISS IndexFlatIP in chunks) and, where it
    fits (``--dense-max``), the old brute force (torch M x chunk similarity + topk) in the
    same process, with the share of rows whose top-K lists agree.
(b) ``train``: Stage 2 (``finetune``) on a synthetic cohort of n patients (mean patch
    embeddings, two small gene groups, dim 32), seconds per epoch and peak RSS
    (``ru_maxrss``), on the sparse path (O(n K)) or the dense one (O(n²), small n only).
(c) ``pretrain``: Stage 1 (full batch, still dense n x n: casegraph/models/msrl/pretrain.py)
    at small n, peak RSS, to show what still grows as n².

``all`` runs each measurement in its own subprocess (so each peak RSS is its own), prints
a table and writes benchmarks/results/msrl_scale.json.

    .venv/bin/python -m benchmarks.msrl_scale all
    .venv/bin/python -m benchmarks.msrl_scale build --sizes 10000,50000 --dense-max 10000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

MSRL_DIM = 128
N_CENTRES = 64


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def clustered(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    """n vectors around 64 centres (clusters, like real embeddings, not uniform noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(N_CENTRES, dim)).astype(np.float32)
    out = centres[rng.integers(0, N_CENTRES, n)]
    out += 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
    return torch.from_numpy(out)


def _net(dim: int, k: int = 12, **options: Any) -> Any:
    from casegraph.models.msrl.config import MSRLConfig
    from casegraph.models.msrl.nets import MSRLNetwork

    torch.manual_seed(0)
    config = MSRLConfig(dim=dim, k=k, proj_dim=min(32, dim), **options)
    return MSRLNetwork(config, bag_dim=32, group_sizes=[8, 8], n_out=4)


@torch.no_grad()
def dense_build(net: Any, features: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """The old BufferGraph.build: per chunk of rows, the chunk x M similarity and topk."""
    m, k = features.shape[0], net.config.k
    keys = net.gsl_f.keys(features)
    index = torch.zeros(m, k, dtype=torch.long)
    for start in range(0, m, chunk):
        rows = torch.arange(start, min(start + chunk, m))
        sim = net.gsl_f.key_similarity(keys[rows], keys)
        sim[torch.arange(len(rows)), rows] = float("-inf")
        index[rows] = sim.topk(k, dim=1).indices
    return index


def measure_build(m: int, dense: bool) -> dict[str, Any]:
    from casegraph.models.msrl.inference import BufferGraph

    net = _net(MSRL_DIM).eval()
    features = clustered(m, 2 * MSRL_DIM)
    start = time.perf_counter()
    buf = BufferGraph.build(net, features)
    out: dict[str, Any] = {"part": "build", "m": m, "f_dim": 2 * MSRL_DIM, "k": net.config.k,
                           "faiss_s": round(time.perf_counter() - start, 2)}
    if dense:
        start = time.perf_counter()
        ref = dense_build(net, features)
        out["dense_s"] = round(time.perf_counter() - start, 2)
        same = (torch.sort(ref, dim=1).values == torch.sort(buf.index, dim=1).values).all(dim=1)
        out["rows_equal"] = round(float(same.float().mean()), 5)
    out["peak_rss_mib"] = round(peak_rss_mib())
    return out


def measure_floor(d: int = 2 * MSRL_DIM, rows: int = 4096, cols: int = 20000) -> dict[str, Any]:
    """The same-run floor: plain float32 matmul throughput (what an exact top-K of M points
    must do 2 M² d flops of) and the brute-force time it implies at 100,000 points."""
    a, b = torch.randn(rows, d), torch.randn(cols, d)
    a @ b[:100].T  # warm up the BLAS
    start = time.perf_counter()
    a @ b.T
    gflops = 2.0 * rows * cols * d / (time.perf_counter() - start) / 1e9
    return {"part": "floor", "d": d, "threads": torch.get_num_threads(),
            "sgemm_gflops": round(gflops, 1),
            "implied_s_at_100k": round(2.0 * 1e5**2 * d / (gflops * 1e9), 1)}


def synthetic_cases(n: int, seed: int = 0) -> Any:
    from casegraph.models.msrl.finetune import TrainingCases

    gen = torch.Generator().manual_seed(seed)
    wsi = clustered(n, 32, seed)
    return TrainingCases(
        patient_ids=[f"p{i}" for i in range(n)], wsi=wsi,
        groups=[wsi[:, :8] + 0.5 * torch.randn(n, 8, generator=gen), torch.randn(n, 8, generator=gen)],
        labels=torch.randint(0, 4, (n,), generator=gen),
        events=(torch.rand(n, generator=gen) > 0.4).float(),
    )


def measure_train(n: int, epochs: int, batch_size: int, path: str, dim: int) -> dict[str, Any]:
    from casegraph.models.msrl.finetune import finetune

    cases = synthetic_cases(n)
    net = _net(dim, pretrain_steps=0, epochs=epochs, batch_size=batch_size)
    times: list[float] = []
    last = [time.perf_counter()]

    def on_epoch(epoch: int, loss: float) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now
        print(f"  epoch {epoch}: loss {loss:.4f}, {times[-1]:.1f} s", file=sys.stderr)

    start = time.perf_counter()
    _, buffer, history = finetune(net, cases, set(), seed=1, on_epoch=on_epoch,
                                  sparse={"sparse": True, "dense": False}[path])
    return {"part": "train", "n": n, "path": path, "dim": dim, "f_dim": 2 * dim,
            "batch_size": batch_size, "epochs": epochs, "buffer": len(buffer),
            "s_per_epoch": [round(t, 1) for t in times],
            "total_s": round(time.perf_counter() - start, 1),
            "loss": [round(v, 4) for v in history], "peak_rss_mib": round(peak_rss_mib())}


def measure_pretrain(n: int, steps: int, dim: int) -> dict[str, Any]:
    from casegraph.models.msrl.pretrain import pretrain

    cases = synthetic_cases(n)
    net = _net(dim, pretrain_steps=steps)
    start = time.perf_counter()
    pretrain(net, cases.wsi, cases.groups, seed=0)
    return {"part": "pretrain", "n": n, "dim": dim, "steps": steps,
            "s_per_step": round((time.perf_counter() - start) / steps, 2),
            "peak_rss_mib": round(peak_rss_mib())}


def _child(argv: list[str], timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh process; its last stdout line is the JSON record."""
    cmd = [sys.executable, "-m", "benchmarks.msrl_scale", *argv, "--json"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"argv": argv, "error": f"over the {timeout:.0f} s bound, not finished"}
    sys.stderr.write(done.stderr[-2000:])
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"argv": argv, "error": f"exit {done.returncode}: {done.stderr.strip()[-300:]}"}
    return dict(json.loads(lines[-1]))


def run_all(args: argparse.Namespace) -> None:
    from benchmarks.common import print_table, write_json

    records = [_child(["floor"], args.timeout)]
    for m in (int(s) for s in args.sizes.split(",")):
        dense = ["--dense-max", str(args.dense_max)]
        records.append(_child(["build", "--sizes", str(m), *dense], args.timeout))
    train = ["--epochs", str(args.epochs), "--dim", str(args.dim)]
    small = ["--n", str(args.small_n), "--batch-size", str(args.small_batch_size)]
    for path in ("dense", "sparse"):  # the old path beside the new, where it fits
        records.append(_child(["train", *small, "--path", path, *train], args.timeout))
    big = ["--n", str(args.n), "--batch-size", str(args.batch_size), "--path", "sparse"]
    records.append(_child(["train", *big, *train], args.timeout))
    for n in (1000, 2000, 4000):
        records.append(_child(["pretrain", "--n", str(n), "--dim", str(args.dim), "--steps",
                               str(args.steps)], args.timeout))
    records.append(_child(["floor"], args.timeout))
    for r in records:
        print(json.dumps(r))
    print_table("Same-run floor: float32 matmul", ["GFLOP/s", "brute force at 100k implied (s)"],
                [[r["sgemm_gflops"], r["implied_s_at_100k"]] for r in records
                 if r.get("part") == "floor"])
    builds = [r for r in records if r.get("part") == "build"]
    print_table("MSRL buffer graph, exact top-12 of M vectors (f_dim 256)",
                ["M", "FAISS exact (s)", "old dense (s)", "rows equal", "peak RSS (MiB)"],
                [[r["m"], r["faiss_s"], r.get("dense_s", "not run"), r.get("rows_equal", "-"),
                  r["peak_rss_mib"]] for r in builds])
    trains = [r for r in records if r.get("part") == "train"]
    print_table("MSRL Stage 2 on a synthetic cohort", ["n", "path", "batch", "s / epoch",
                                                        "peak RSS (MiB)"],
                [[r["n"], r["path"], r["batch_size"], r["s_per_epoch"], r["peak_rss_mib"]]
                 for r in trains])
    pre = [r for r in records if r.get("part") == "pretrain"]
    print_table("MSRL Stage 1 (dense, full batch)", ["n", "s / step", "peak RSS (MiB)"],
                [[r["n"], r["s_per_step"], r["peak_rss_mib"]] for r in pre])
    failed = [r for r in records if "error" in r]
    for r in failed:
        print(f"not finished: {r}")
    written = write_json("msrl_scale", {"records": records, "failed": failed,
                                        "load_after": os.getloadavg(), "argv": sys.argv[1:]})
    print(f"\nwrote {written}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["all", "build", "train", "pretrain", "floor"])
    parser.add_argument("--sizes", default="10000,50000")
    parser.add_argument("--dense-max", type=int, default=10000)
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--small-n", type=int, default=3000)
    parser.add_argument("--small-batch-size", type=int, default=500)
    parser.add_argument("--path", choices=["sparse", "dense"], default="sparse")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=2500)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", action="store_true", help="print one JSON record")
    args = parser.parse_args()
    if args.what == "all":
        run_all(args)
        return
    if args.what == "build":
        records = [measure_build(m, m <= args.dense_max) for m in map(int, args.sizes.split(","))]
    elif args.what == "train":
        records = [measure_train(args.n, args.epochs, args.batch_size, args.path, args.dim)]
    elif args.what == "pretrain":
        records = [measure_pretrain(args.n, args.steps, args.dim)]
    else:
        records = [measure_floor()]
    for r in records:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
