"""MSRL at scale without an O(M²) step (issue 13, target 5).

(a) ``build``: the buffer graph (every node's exact top-K by the learned similarity) of M
    synthetic fused vectors (f_dim = 256, MSRL_DIM = 128 as in benchmarks/query.py),
    ``--data clustered`` (64 centres) or ``gaussian``, with the library's
    ``BufferGraph.build`` (exact FAISS flat search, casegraph/models/msrl/knn_graph.py),
    beside it the matmul alone on the same keys (the floor of any exact search) and, up
    to ``--dense-max``, the old chunked torch brute force.
(b) ``train``: Stage 2 (``finetune``) on a synthetic cohort of n patients (mean patch
    embeddings, two small gene groups, dim 32), seconds per epoch and peak RSS.
(c) ``pretrain``: Stage 1 steps at n patients on the dense or the sparse (O(n K)) path.
(d) ``fit``: the whole training at n = 10,000: Stage 1 steps (sparse), then Stage 2 epochs,
    each timed, and the process's peak RSS (``ru_maxrss``).
(e) ``floor``: float32 matmul GFLOP/s (best of 3) and the brute force it implies at 100k.

Wall seconds and CPU seconds (both threads) are recorded: the box is shared, and CPU time
is the steadier of the two under load.

``all`` runs each measurement in its own subprocess (so each peak RSS is its own), prints
a table and writes benchmarks/results/msrl_scale.json.

    .venv/bin/python -m benchmarks.msrl_scale all
    .venv/bin/python -m benchmarks.msrl_scale build --sizes 100000 --data gaussian
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


class Timer:
    """Wall and CPU (all threads) seconds of a block."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = round(time.perf_counter() - self.wall, 2)
        self.cpu = round(time.process_time() - self.cpu, 2)


def _rows_equal(a: torch.Tensor, b: torch.Tensor) -> float:
    same = (torch.sort(a, dim=1).values == torch.sort(b, dim=1).values).all(dim=1)
    return round(float(same.float().mean()), 5)


def measure_build(m: int, data: str, dense: bool) -> dict[str, Any]:
    """``BufferGraph.build`` of M vectors, and beside it, on the same keys, the matmul
    alone (a 4,096-row block against all M, scaled to M rows): the exact search's floor."""
    from casegraph.models.msrl import knn_graph
    from casegraph.models.msrl.inference import BufferGraph

    net = _net(MSRL_DIM).eval()
    features = clustered(m, 2 * MSRL_DIM) if data == "clustered" else torch.randn(m, 2 * MSRL_DIM)
    with Timer() as t:
        buf = BufferGraph.build(net, features)
    out: dict[str, Any] = {"part": "build", "m": m, "data": data, "f_dim": 2 * MSRL_DIM,
                           "k": net.config.k, "threads": torch.get_num_threads(),
                           "path": "dense" if m < knn_graph.DENSE_BELOW else "faiss_flat",
                           "build_s": t.wall, "build_cpu_s": t.cpu}
    keys = net.gsl_f.keys(features).detach()
    sample = keys[: min(m, 4096)]
    with Timer() as t:
        sample @ keys.T
    out.update(matmul_implied_s=round(t.wall * m / len(sample), 1),
               matmul_implied_cpu_s=round(t.cpu * m / len(sample), 1))
    if dense:
        with Timer() as t:
            ref = dense_build(net, features)
        out.update(dense_s=t.wall, dense_cpu_s=t.cpu, rows_equal=_rows_equal(ref, buf.index))
    out["peak_rss_mib"] = round(peak_rss_mib())
    return out


def measure_floor(d: int = 2 * MSRL_DIM, rows: int = 4096, cols: int = 20000) -> dict[str, Any]:
    """The same-run floor: plain float32 matmul throughput (what an exact top-K of M points
    must do 2 M² d flops of) and the brute-force time it implies at 100,000 points."""
    a, b = torch.randn(rows, d), torch.randn(cols, d)
    a @ b[:100].T  # warm up the BLAS
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        a @ b.T
        best = min(best, time.perf_counter() - start)
    gflops = 2.0 * rows * cols * d / best / 1e9
    return {"part": "floor", "d": d, "threads": torch.get_num_threads(),
            "sgemm_gflops": round(gflops, 1), "load": os.getloadavg()[0],
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


def measure_pretrain(n: int, steps: int, dim: int, path: str) -> dict[str, Any]:
    from casegraph.models.msrl.pretrain import pretrain

    cases = synthetic_cases(n)
    net = _net(dim, pretrain_steps=steps)
    with Timer() as t:
        history = pretrain(net, cases.wsi, cases.groups, seed=0, sparse=path == "sparse")
    return {"part": "pretrain", "n": n, "dim": dim, "steps": steps, "path": path,
            "s_per_step": round(t.wall / steps, 2), "cpu_s_per_step": round(t.cpu / steps, 2),
            "loss": [round(v, 4) for v in history], "peak_rss_mib": round(peak_rss_mib())}


def measure_fit(n: int, steps: int, epochs: int, batch_size: int, dim: int) -> dict[str, Any]:
    """Both stages in one process (its peak RSS covers the whole training)."""
    from casegraph.models.msrl.finetune import finetune
    from casegraph.models.msrl.pretrain import pretrain

    cases = synthetic_cases(n)
    net = _net(dim, pretrain_steps=steps, epochs=epochs, batch_size=batch_size)
    with Timer() as t1:
        stage1 = pretrain(net, cases.wsi, cases.groups, seed=0)  # sparse by size
    stage1_rss = peak_rss_mib()
    with Timer() as t2:
        _, buffer, stage2 = finetune(net, cases, set(), seed=1)
    return {"part": "fit", "n": n, "dim": dim, "k": net.config.k, "batch_size": batch_size,
            "stage1_steps": steps, "stage1_s_per_step": round(t1.wall / steps, 1),
            "stage1_cpu_s_per_step": round(t1.cpu / steps, 1),
            "stage1_loss": [round(v, 4) for v in stage1],
            "stage1_peak_rss_mib": round(stage1_rss),
            "stage2_epochs": epochs, "stage2_s_per_epoch": round(t2.wall / epochs, 1),
            "stage2_cpu_s_per_epoch": round(t2.cpu / epochs, 1),
            "stage2_loss": [round(v, 4) for v in stage2], "buffer": len(buffer),
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

    def child(*argv: str) -> dict[str, Any]:
        return _child(list(argv), args.timeout)

    records = [child("floor")]
    records.append(child("build", "--sizes", "10000", "--dense-max", "10000"))
    records.append(_child(["build", "--sizes", "100000", "--dense-max", "0"], 3 * args.timeout))
    for path in ("dense", "sparse"):
        records.append(child("pretrain", "--n", "2000", "--dim", str(args.dim), "--steps", "1",
                             "--path", path))
    records.append(_child(["fit", "--n", str(args.n), "--steps", str(args.steps), "--epochs",
                           str(args.epochs), "--batch-size", str(args.batch_size), "--dim",
                           str(args.dim)], 3 * args.timeout))
    records.append(child("floor"))
    for r in records:
        print(json.dumps(r))
    print_table("Same-run floor: float32 matmul", ["GFLOP/s", "brute force at 100k (s)", "load"],
                [[r["sgemm_gflops"], r["implied_s_at_100k"], r["load"]] for r in records
                 if r.get("part") == "floor"])
    print_table("MSRL buffer graph, exact top-12 of M vectors (f_dim 256)",
                ["M", "path", "wall (s)", "CPU (s)", "matmul alone (s, CPU s)", "old dense (s)",
                 "rows equal", "peak RSS (MiB)"],
                [[r["m"], r["path"], r["build_s"], r["build_cpu_s"],
                  f"{r['matmul_implied_s']}, {r['matmul_implied_cpu_s']}", r.get("dense_s", "-"),
                  r.get("rows_equal", "-"), r["peak_rss_mib"]]
                 for r in records if r.get("part") == "build"])
    print_table("MSRL Stage 1, one full-batch step", ["n", "path", "s / step", "CPU s / step",
                                                      "loss", "peak RSS (MiB)"],
                [[r["n"], r["path"], r["s_per_step"], r["cpu_s_per_step"], r["loss"],
                  r["peak_rss_mib"]] for r in records if r.get("part") == "pretrain"])
    print_table("MSRL training at n patients", ["n", "stage 1 s / step", "stage 2 s / epoch",
                                                "stage 1 peak RSS", "peak RSS (MiB)"],
                [[r["n"], r["stage1_s_per_step"], r["stage2_s_per_epoch"],
                  r["stage1_peak_rss_mib"], r["peak_rss_mib"]] for r in records
                 if r.get("part") == "fit"])
    failed = [r for r in records if "error" in r]
    for r in failed:
        print(f"not finished: {r}")
    written = write_json("msrl_scale", {"records": records, "failed": failed,
                                        "load_after": os.getloadavg(), "argv": sys.argv[1:]})
    print(f"\nwrote {written}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["all", "build", "train", "pretrain", "fit", "floor"])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--data", choices=["clustered", "gaussian"], default="clustered")
    parser.add_argument("--dense-max", type=int, default=10000)
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--small-n", type=int, default=3000)
    parser.add_argument("--small-batch-size", type=int, default=500)
    parser.add_argument("--path", choices=["sparse", "dense"], default="sparse")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=2500)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", action="store_true", help="print one JSON record")
    args = parser.parse_args()
    if args.what == "all":
        run_all(args)
        return
    if args.what == "build":
        records = [measure_build(m, args.data, m <= args.dense_max)
                   for m in map(int, args.sizes.split(","))]
    elif args.what == "train":
        records = [measure_train(args.n, args.epochs, args.batch_size, args.path, args.dim)]
    elif args.what == "pretrain":
        records = [measure_pretrain(args.n, args.steps, args.dim, args.path)]
    elif args.what == "fit":
        records = [measure_fit(args.n, args.steps, args.epochs, args.batch_size, args.dim)]
    else:
        records = [measure_floor()]
    for r in records:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
