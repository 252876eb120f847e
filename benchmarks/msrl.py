"""MSRL on this CPU: WSI-only query latency vs buffer size, and training time per epoch.

Query: one bag of 4,096 x 1,024 patches -> bag mean -> WSI MLP -> Inductor -> graph forward
of the query against a buffer of M authentic cases (the exact path: the whole buffer, as
the paper does). The buffer's own top-K lists and its symmetric graph are built once per
buffer (reported as ``build_s``); per query, q's changes to the cached graph are recorded
in O(M) and GCN layer i runs only on the nodes within 3 - i hops of q. For M <= 4,340
the dense formulation (rebuild the whole
(M+1) x (M+1) graph per query) is timed as well. Features are synthetic (weights untrained:
latency does not depend on them).

Training: one epoch of Stage 1 (full batch) and Stage 2 (mini-batches over buffer + batch)
on a synthetic cohort of BLCA's size (373 patients, six MCAT-sized gene groups).

    .venv/bin/python benchmarks/msrl.py [--sizes 434,4340,21700,100000] [--queries 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch_geometric.utils import k_hop_subgraph

from casegraph.models.msrl.config import MSRLConfig
from casegraph.models.msrl.finetune import TrainingCases, finetune
from casegraph.models.msrl.inference import (
    BufferGraph,
    dense_query_forward,
    query_forward,
    query_graph,
)
from casegraph.models.msrl.nets import MSRLNetwork
from casegraph.models.msrl.pretrain import pretrain

OUT = Path(__file__).parent / "results" / "msrl.json"
BAG = (4096, 1024)
GROUPS = [84, 314, 501, 332, 186, 323]  # BLCA's MCAT group sizes (rna + cnv + mut features)


def _net(config: MSRLConfig) -> MSRLNetwork:
    torch.manual_seed(0)
    return MSRLNetwork(config, bag_dim=BAG[1], group_sizes=GROUPS, n_out=config.n_bins).eval()


def _query_once(net: MSRLNetwork, buf: BufferGraph, bag: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        h = net.encode_wsi(bag.mean(dim=0, keepdim=True))
        f = net.online_fused(h, None)
        z, _ = query_forward(net, buf, f[0])
        net.logits(z[None], f)
    return time.perf_counter() - start


def _rebuild_once(net: MSRLNetwork, buf: BufferGraph, bag: torch.Tensor) -> float:
    """The previous exact path: rebuild all M K edges per query (coalesce), then the GCN on
    the query's whole 3-hop subgraph."""
    start = time.perf_counter()
    with torch.no_grad():
        f_q = net.online_fused(net.encode_wsi(bag.mean(dim=0, keepdim=True)), None)[0]
        graph = query_graph(net, buf, f_q)
        subset, edges, mapping, mask = k_hop_subgraph(
            graph.n_nodes - 1, net.config.gcn_layers, graph.edge_index, relabel_nodes=True,
            num_nodes=graph.n_nodes)
        x = torch.cat([buf.features, f_q[None, :]])[subset]
        adj = torch.sparse_coo_tensor(edges, graph.weight[mask], (len(subset), len(subset)),
                                      check_invariants=False)
        net.gcn_f(x, adj.coalesce())[int(mapping[0])]
    return time.perf_counter() - start


def _dense_once(net: MSRLNetwork, feats: torch.Tensor, bag: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        f = net.online_fused(net.encode_wsi(bag.mean(dim=0, keepdim=True)), None)
        dense_query_forward(net, feats, f[0])
    return time.perf_counter() - start


def query_latency(sizes: list[int], n_queries: int, exact_max: int) -> list[dict[str, object]]:
    net = _net(MSRLConfig())
    gen = torch.Generator().manual_seed(1)
    rows = []
    for m in sizes:
        feats = torch.relu(torch.randn(m, net.f_dim, generator=gen))
        if m > exact_max:
            print(f"M={m:>7}: skipped (exact O(M^2) buffer build; raise --exact-max to run)")
            rows.append({"buffer": m, "skipped": "exact build too slow on this CPU"})
            continue
        start = time.perf_counter()
        buf = BufferGraph.build(net, feats, chunk=1024)
        _ = buf.symmetric  # the cached symmetric graph is part of the one-off build
        build = time.perf_counter() - start
        bags = [torch.randn(*BAG, generator=gen) for _ in range(3)]
        times = [_query_once(net, buf, bags[i % 3]) for i in range(n_queries)]
        rebuild = [_rebuild_once(net, buf, bags[i % 3]) for i in range(3)]
        row: dict[str, object] = {
            "buffer": m, "build_s": build, "query_p50_s": statistics.median(times),
            "query_max_s": max(times), "rebuild_query_p50_s": statistics.median(rebuild)}
        dense: list[float] = []
        if m <= 4340:
            dense = [_dense_once(net, feats, bags[i % 3]) for i in range(3)]
            row["dense_query_p50_s"] = statistics.median(dense)
        rows.append(row)
        dense_ms = f", dense per-query graph {statistics.median(dense) * 1e3:8.1f} ms" \
            if m <= 4340 else ""
        print(f"M={m:>7}: build {build:8.2f} s, query p50 "
              f"{statistics.median(times) * 1e3:8.1f} ms, rebuild-per-query path "
              f"{statistics.median(rebuild) * 1e3:8.1f} ms{dense_ms}", flush=True)
    return rows


def training_time(n: int = 373, epochs: int = 2, steps: int = 5) -> dict[str, float]:
    config = MSRLConfig(pretrain_steps=steps, epochs=epochs)
    net = _net(config).train()
    gen = torch.Generator().manual_seed(2)
    wsi = torch.randn(n, BAG[1], generator=gen)
    groups = [torch.randn(n, g, generator=gen) for g in GROUPS]
    start = time.perf_counter()
    pretrain(net, wsi, groups, seed=0)
    per_step = (time.perf_counter() - start) / steps
    labels = torch.randint(0, 4, (n,), generator=gen)
    cases = TrainingCases([f"p{i}" for i in range(n)], wsi, groups, labels,
                          torch.ones(n))
    start = time.perf_counter()
    finetune(net, cases, set(), seed=0)
    per_epoch = (time.perf_counter() - start) / epochs
    row = {"patients": n, "pretrain_step_s": per_step, "finetune_epoch_s": per_epoch,
           "default_total_s": per_step * MSRLConfig().pretrain_steps
           + per_epoch * MSRLConfig().epochs}
    print(f"training ({n} patients, mean-MLP WSI encoder): Stage 1 {per_step:.2f} s/step "
          f"(full batch), Stage 2 {per_epoch:.2f} s/epoch; defaults "
          f"({MSRLConfig().pretrain_steps} steps + {MSRLConfig().epochs} epochs) "
          f"~{row['default_total_s']:.0f} s")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="434,4340,21700,100000")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--exact-max", type=int, default=21700,
                        help="largest buffer whose top-K lists are built exactly")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict[str, object] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, torch threads {args.threads}",
        "query": query_latency([int(s) for s in args.sizes.split(",")], args.queries,
                               args.exact_max),
    }
    if not args.skip_training:
        result["training"] = training_time()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
