"""Graph forward of one query case against a buffer of authentic cases (WSI-only inference).

The graph for a query q is the learned graph over the M buffer nodes + q, exactly as the
dense post-processing would build it (top-K per row, self-loop, symmetrise, ReLU,
D^-1/2 A D^-1/2). Queries are answered independently (one buffer + one query per graph),
so a prediction never depends on which other patients are being scored.

Large buffers: the buffer's own top-K lists and symmetric graph are computed once
(:class:`BufferGraph`); a query changes only its own row and the rows where it beats the
K-th neighbour, so it is answered on a patch of the cached graph
(:mod:`casegraph.models.msrl.patched`), and GCN layer i runs only on the nodes within
``gcn_layers - i`` hops of q (with degrees from the whole graph), which gives q's output
exactly. :func:`query_graph` (the whole graph rebuilt, O(M K)) serves tiny buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor

from casegraph.models.msrl.graph_ops import coalesce
from casegraph.models.msrl.gsl import post_process
from casegraph.models.msrl.nets import MSRLNetwork
from casegraph.models.msrl.patched import PatchedGraph, SymmetricGraph


@dataclass
class BufferGraph:
    """Cached top-K structure of M buffer nodes (self excluded)."""

    features: Tensor  # (M, f_dim)
    index: Tensor  # (M, c) long, c = min(k, M - 1), sorted by decreasing similarity
    values: Tensor  # (M, c)
    k: int
    first_layer: Tensor  # (M, dim) features @ W_1 of the fused GCN
    keys: Tensor  # (M, d) the learner's similarity keys of the features

    @classmethod
    @torch.no_grad()
    def build(cls, net: MSRLNetwork, features: Tensor, chunk: int = 4096) -> BufferGraph:
        """Top-K lists of the buffer ``features`` (M, f_dim) by the learner's similarity:
        exact FAISS search in chunks of rows (dense torch below a few thousand rows), so
        memory is O(M K), never M x M."""
        keys = net.gsl_f.keys(features)
        values, index = net.gsl_f.key_topk(keys, chunk=chunk)
        return cls(features, index, values, net.config.k, net.gcn_f.layers[0](features), keys)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @cached_property
    def symmetric(self) -> SymmetricGraph:
        """The buffer-only symmetric graph, built on first use (the fast query path)."""
        return SymmetricGraph.from_topk(self.index, self.values)

    @property
    def rows_full(self) -> bool:
        """Every row holds K neighbours (M > K): queries can patch the cached graph."""
        return len(self) > 0 and self.index.shape[1] == self.k


@dataclass
class QueryGraph:
    """The normalised graph of buffer + one query (node M = the query), COO."""

    edge_index: Tensor  # (2, E)
    weight: Tensor  # (E,) normalised weights
    n_nodes: int


@torch.no_grad()
def query_graph(net: MSRLNetwork, buf: BufferGraph, f_q: Tensor) -> QueryGraph:
    """Build the exact post-processed adjacency over buffer + the query f_q (f_dim,)."""
    m, q = len(buf), len(buf)
    s_q = net.gsl_f.key_similarity(net.gsl_f.keys(f_q[None, :]), buf.keys)[0] if m else torch.zeros(0)
    c = buf.index.shape[1]
    rows = torch.arange(m).repeat_interleave(c)
    cols, vals = buf.index.reshape(-1).clone(), buf.values.reshape(-1).clone()
    if m and c < buf.k:  # rows have room: the query joins every row
        extra_r, extra_c, extra_v = torch.arange(m), torch.full((m,), q), s_q
    elif m:  # the query replaces the K-th neighbour of rows it beats
        beats = torch.nonzero(s_q > buf.values[:, -1]).flatten()
        last = beats * c + (c - 1)
        cols[last], vals[last] = q, s_q[beats]
        extra_r = extra_c = torch.zeros(0, dtype=torch.long)
        extra_v = torch.zeros(0)
    kq = min(buf.k, m)
    q_vals, q_idx = s_q.topk(kq) if kq else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
    loops = torch.arange(m + 1)
    r = torch.cat([rows, extra_r, torch.full((kq,), q), loops]) if m else loops
    cc = torch.cat([cols, extra_c, q_idx, loops]) if m else loops
    v = torch.cat([vals, extra_v, q_vals, torch.ones(m + 1)]) if m else torch.ones(1)
    # symmetrise (A + A^T) / 2, then ReLU, then D^-1/2 A D^-1/2
    edge_index = torch.stack([torch.cat([r, cc]), torch.cat([cc, r])])
    edge_index, weight = coalesce(edge_index, torch.cat([v, v]) / 2.0, m + 1)
    weight = weight.clamp_min(0.0)
    deg = torch.zeros(m + 1).index_add_(0, edge_index[0], weight)
    inv = deg.clamp_min(1e-12).pow(-0.5)
    weight = inv[edge_index[0]] * weight * inv[edge_index[1]]
    return QueryGraph(edge_index, weight, m + 1)


@torch.no_grad()
def query_forward(net: MSRLNetwork, buf: BufferGraph, f_q: Tensor) -> tuple[Tensor, QueryGraph]:
    """Z of the query (dim,) and the query's own edges (:class:`QueryGraph`).

    Layer i of the GCN is evaluated only on the nodes within ``L - i`` hops of the query
    (the last layer on the query alone), which is all the query's output depends on. With
    full buffer rows (M > K) the graph is a patch of the cached buffer graph; otherwise
    (tiny buffers) it is rebuilt.
    """
    gcn = net.gcn_f
    first_q = gcn.layers[0](f_q[None, :])

    def first_rows(ids: Tensor) -> Tensor:  # x W_1 at the given node ids (the query is M)
        is_query = ids == len(buf)
        out = torch.empty(len(ids), first_q.shape[1])
        out[~is_query] = buf.first_layer[ids[~is_query]]
        out[is_query] = first_q[0]
        return out

    if buf.rows_full:
        s_q = net.gsl_f.key_similarity(net.gsl_f.keys(f_q[None, :]), buf.keys)[0]
        patched = PatchedGraph.build(buf.symmetric, buf.index, buf.values, s_q, buf.k)
        edges_of = patched.edges_of
    else:
        full = query_graph(net, buf, f_q)

        def edges_of(ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            rows = torch.zeros(full.n_nodes, dtype=torch.bool)
            rows[ids] = True
            mine = rows[full.edge_index[0]]
            return full.edge_index[0][mine], full.edge_index[1][mine], full.weight[mine]

    nodes, edges = _hop_edges(edges_of, len(buf), len(gcn.layers))
    z = _forward_towards_query(net, nodes, edges, first_rows)
    src, dst, weight = edges[0]
    return z, QueryGraph(torch.stack([src, dst]), weight, len(buf) + 1)


EdgeList = tuple[Tensor, Tensor, Tensor]  # (src, dst, normalised weight)


def _hop_edges(
    edges_of: Callable[[Tensor], EdgeList], query: int, n_layers: int
) -> tuple[list[Tensor], list[EdgeList]]:
    """(nodes[d] = the nodes within d hops of the query for d = 0..L, edges[d] = the edges
    of the rows nodes[d] for d = 0..L-1)."""
    reach = torch.zeros(query + 1, dtype=torch.bool)
    reach[query] = True
    nodes, edges = [reach.nonzero().flatten()], []
    for _ in range(n_layers):
        edges.append(edges_of(nodes[-1]))
        reach = reach.clone()
        reach[edges[-1][1]] = True
        nodes.append(reach.nonzero().flatten())
    return nodes, edges


def _forward_towards_query(
    net: MSRLNetwork, nodes: list[Tensor], edges: list[EdgeList],
    first_rows: Callable[[Tensor], Tensor],
) -> Tensor:
    """The fused GCN's output at the query (node ``nodes[0]``): layer i runs on the rows
    ``nodes[L - i]`` with their edges, reading the previous layer at ``nodes[L - i + 1]``."""
    gcn = net.gcn_f
    n_layers, n = len(gcn.layers), int(nodes[0][0]) + 1
    pos = torch.full((n,), -1, dtype=torch.long)
    pos[nodes[n_layers]] = torch.arange(len(nodes[n_layers]))
    h = first_rows(nodes[n_layers])
    for i, bias in enumerate(gcn.biases):
        out_ids, (src, dst, weight) = nodes[n_layers - 1 - i], edges[n_layers - 1 - i]
        out_pos = torch.full((n,), -1, dtype=torch.long)
        out_pos[out_ids] = torch.arange(len(out_ids))
        messages = weight[:, None] * h[pos[dst]]
        x = torch.zeros(len(out_ids), h.shape[1]).index_add_(0, out_pos[src], messages) + bias
        if i < n_layers - 1:
            x = F.dropout(F.relu(x), gcn.dropout, gcn.training)
            h, pos = gcn.layers[i + 1](x), out_pos
        else:
            h = x
    return h[0]


def query_neighbours(graph: QueryGraph, k: int) -> list[tuple[int, float]]:
    """The query's strongest k neighbours (buffer positions, normalised edge weight)."""
    q = graph.n_nodes - 1
    mine = (graph.edge_index[0] == q) & (graph.edge_index[1] != q)
    cols, w = graph.edge_index[1][mine], graph.weight[mine]
    order = torch.argsort(w, descending=True)[:k]
    return [(int(cols[i]), float(w[i])) for i in order]


@torch.no_grad()
def dense_query_forward(net: MSRLNetwork, buffer_features: Tensor, f_q: Tensor) -> Tensor:
    """Reference path: the dense graph over buffer + query (for tests), -> Z of the query."""
    nodes = torch.cat([buffer_features, f_q[None, :]])
    adj = post_process(net.gsl_f.similarity(nodes), net.config.k)
    return net.gcn_f(nodes, adj)[-1]
