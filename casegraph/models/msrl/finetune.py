"""Stage 2: fine-tuning with the online/target branches and the authentic-case buffer.

Per mini-batch of training cases B (the buffer minus the cases of B is the context C):

- online:  f~_B = [Inductor(h_B), h_B]; graph over [f_C ; f~_B] -> S, A, Z
- target (EMA copy, no gradient): f^_B = [g_B, h_B] (authentic); graph over [f_C ; f^_B]
- L_f_align = InfoNCE(f~_B, f^_B) (+ the same on a mixup view: h mixed between cases,
  target side mixed with the same lambda), L_g_align = InfoNCE(Z_B, Z^_B),
  L_s_align = balanced BCE between the online edge probabilities (S + 1) / 2 and the
  target adjacency pattern, L_task = NLL survival (or cross-entropy) on the head of Z_B;
- then target <- EMA(online) and the buffer takes f^_B (or f~_B: the ablation).

The cases of B are removed from the context so a case never meets its own authentic copy:
at inference the query is never in the buffer, and training matches that.

Memory: with n = |C| + |B| nodes at or above :data:`SPARSE_FROM`, the graph is built
without an n x n matrix (:func:`sparse_graph_forward`: chunked top-K, a COO adjacency of
O(n K) edges, a sparse GCN; the structure loss summed over row chunks that are recomputed
in the backward pass), so a step holds O(n K + chunk x n) memory. The values equal the
dense path's within float tolerance (tested); below the threshold the dense path is used.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from casegraph.models.losses import nll_survival_loss
from casegraph.models.msrl.buffer import CaseBuffer
from casegraph.models.msrl.contrastive import balanced_bce, ema_update, info_nce
from casegraph.models.msrl.graph_ops import coalesce
from casegraph.models.msrl.gsl import GraphLearner, chunked_median_sq_distance
from casegraph.models.msrl.nets import MSRLNetwork, WSIInput

# graphs of at least this many nodes (context + batch) are built sparse, O(n K) memory;
# below it the dense path is as fast or faster and small anyway (16 MB per n x n at 2,048).
# Measured s/epoch dense vs sparse: 5.6 vs 9.3 at 1,000, 15.3 vs 17.0 at 1,500, 30.1 vs 10.6
# at 3,000 nodes (docs/benchmarks.md, MSRL without an O(M²) step)
SPARSE_FROM = 2048
ROW_CHUNK = 1024  # rows of the similarity held at once on the sparse path


@dataclass
class TrainingCases:
    """Tensors of the n training cases (inputs already preprocessed)."""

    patient_ids: list[str]
    wsi: WSIInput  # (n, D) means or n bags
    groups: list[Tensor] | None  # G x (n, g_j)
    labels: Tensor  # (n,) long: time bin or class
    events: Tensor  # (n,) float (survival; ones for classification)

    def subset(self, rows: list[int]) -> TrainingCases:
        idx = torch.tensor(rows, dtype=torch.long)
        wsi, groups = self.take(idx)
        return TrainingCases([self.patient_ids[i] for i in rows], wsi, groups,
                             self.labels[idx.to(self.labels.device)],
                             self.events[idx.to(self.events.device)])

    def take(self, idx: Tensor) -> tuple[WSIInput, list[Tensor] | None]:
        wsi = [self.wsi[int(i)] for i in idx] if isinstance(self.wsi, list) else self.wsi[idx]
        groups = [g[idx] for g in self.groups] if self.groups is not None else None
        return wsi, groups


def task_loss(task: str, logits: Tensor, labels: Tensor, events: Tensor) -> Tensor:
    if task == "survival":
        return nll_survival_loss(logits, labels, events)
    return F.cross_entropy(logits, labels)


@torch.no_grad()
def target_fused(target: MSRLNetwork, wsi: WSIInput, groups: list[Tensor] | None) -> Tensor:
    h = target.encode_wsi(wsi)
    return target.authentic_fused(h, groups) if groups is not None else h


def make_target(net: MSRLNetwork) -> MSRLNetwork:
    target = copy.deepcopy(net)
    target.requires_grad_(False)
    target.eval()
    return target


def init_buffer(
    target: MSRLNetwork, cases: TrainingCases, capacity: int, forbidden: set[str], seed: int
) -> CaseBuffer:
    """Buffer filled from the training set (random order, the last ``capacity`` kept)."""
    device = next(target.parameters()).device
    buffer = CaseBuffer(capacity, target.f_dim, forbidden=forbidden, device=device)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(cases.patient_ids)))
    for chunk in order.split(256):
        wsi, groups = cases.take(chunk)
        buffer.enqueue([cases.patient_ids[int(i)] for i in chunk], target_fused(target, wsi, groups))
    return buffer


def finetune_step(
    net: MSRLNetwork, target: MSRLNetwork, buffer: CaseBuffer, cases: TrainingCases,
    idx: Tensor, gen: torch.Generator, sparse: bool | None = None,
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Losses of one batch; returns (losses, online f~_B, target f^_B).

    ``sparse``: build the graph without an n x n matrix (None: when n >= SPARSE_FROM)."""
    c = net.config
    ids = [cases.patient_ids[int(i)] for i in idx]
    wsi, groups = cases.take(idx)
    _, context = buffer.without(ids)
    n_ctx = context.shape[0]

    h = net.encode_wsi(wsi)
    f_on = net.online_fused(h, groups)
    nodes_on = torch.cat([context, f_on])
    use_sparse = len(nodes_on) >= SPARSE_FROM if sparse is None else sparse
    if use_sparse:
        graph_on = sparse_graph_forward(net, nodes_on, len(ids))
        z_on = graph_on.z
        with torch.no_grad():
            f_t = target_fused(target, wsi, groups)
            graph_t = sparse_graph_forward(target, torch.cat([context, f_t]), len(ids))
        z_t, s_align = graph_t.z, graph_on.structure_loss(graph_t)
    else:
        sim_on, _, z_on = net.graph_forward(nodes_on, len(ids))
        with torch.no_grad():
            f_t = target_fused(target, wsi, groups)
            _, raw_t, z_t = target.graph_forward(torch.cat([context, f_t]), len(ids))
        s_align = _structure_loss(sim_on, raw_t)

    losses = {
        "task": task_loss(c.task, net.logits(z_on[n_ctx:], f_on), cases.labels[idx], cases.events[idx]),
        "f_align": info_nce(f_on, f_t, c.tau),
        "g_align": info_nce(z_on[n_ctx:], z_t[n_ctx:], c.tau),
        "s_align": s_align,
    }
    if c.mixup_alpha > 0 and len(ids) > 1:
        lam = float(torch.distributions.Beta(c.mixup_alpha, c.mixup_alpha).sample())
        perm = torch.randperm(len(ids), generator=gen)
        f_mix_on = net.online_fused(lam * h + (1 - lam) * h[perm], _mixed(groups, lam, perm))
        f_mix_t = lam * f_t + (1 - lam) * f_t[perm]
        losses["f_align"] = (losses["f_align"] + info_nce(f_mix_on, f_mix_t, c.tau)) / 2.0
    return losses, f_on, f_t


def _structure_loss(sim_on: Tensor, raw_t: Tensor) -> Tensor:
    """Balanced BCE over the finite entries (masked batch-batch pairs are not edges)."""
    finite = torch.isfinite(sim_on)
    return balanced_bce((sim_on[finite] + 1.0) / 2.0, (raw_t[finite] > 0).float())


@dataclass
class SparseGraph:
    """The fused graph of n nodes as O(n K) edges, and the GCN output on it."""

    learner: GraphLearner
    keys: Tensor  # (n, d) the learner's similarity keys (with gradient on the online side)
    edge_index: Tensor  # (2, E) coalesced, symmetric, self-loops included
    raw: Tensor  # (E,) relu((R + Rᵀ) / 2), R = every row's top-K + a self-loop of 1
    n_queries: int  # the last n_queries nodes are the batch
    masked_batch: bool  # batch nodes may not pick each other
    z: Tensor  # (n, dim)

    def _masked(self, rows: Tensor, n: int) -> Tensor:
        """(len(rows), n) bool: the pairs the dense path sets to -inf (batch x batch, i != j)."""
        if not self.masked_batch:
            return torch.zeros(len(rows), n, dtype=torch.bool, device=rows.device)
        first = n - self.n_queries
        cols = torch.arange(n, device=rows.device)
        return (rows[:, None] >= first) & (cols[None, :] >= first) & (rows[:, None] != cols)

    def structure_loss(self, target: SparseGraph) -> Tensor:
        """Balanced BCE between (S + 1) / 2 over every unmasked pair and the target graph's
        pattern, as :func:`_structure_loss` on the dense matrices; summed over row chunks
        whose n-wide blocks are recomputed in the backward pass, never all held at once."""
        n = self.keys.shape[0]
        n_masked = self.n_queries * (self.n_queries - 1) if self.masked_batch else 0
        n_pairs = n * n - n_masked
        positive = target.edge_index[:, target.raw > 0]
        c1 = float(positive.shape[1])
        c0 = n_pairs - c1
        alpha0 = n_pairs / (2.0 * c0) if c0 > 0 else 0.0
        alpha1 = n_pairs / (2.0 * c1) if c1 > 0 else 0.0
        total = torch.zeros((), device=self.keys.device)
        for start in range(0, n, ROW_CHUNK):
            stop = min(start + ROW_CHUNK, n)
            in_rows = (positive[0] >= start) & (positive[0] < stop)
            part = checkpoint(self._chunk_bce, self.keys[start:stop], positive[:, in_rows],
                              torch.tensor([start, alpha0, alpha1]), use_reentrant=False)
            total = total + part
        return total / n_pairs

    def _chunk_bce(self, row_keys: Tensor, positive: Tensor, consts: Tensor,
                   eps: float = 1e-6) -> Tensor:
        start, alpha0, alpha1 = int(consts[0]), consts[1], consts[2]
        n = self.keys.shape[0]
        rows = torch.arange(start, start + row_keys.shape[0], device=row_keys.device)
        p = ((self.learner.key_similarity(row_keys, self.keys) + 1.0) / 2.0).clamp(eps, 1.0 - eps)
        y = torch.zeros_like(p)
        y[positive[0] - start, positive[1]] = 1.0
        loss = -(alpha1 * y * torch.log(p) + alpha0 * (1.0 - y) * torch.log(1.0 - p))
        return loss.masked_fill(self._masked(rows, n), 0.0).sum()


def sparse_graph_forward(net: MSRLNetwork, nodes: Tensor, n_queries: int) -> SparseGraph:
    """:meth:`MSRLNetwork.graph_forward` without an n x n matrix: nodes (n, f_dim) -> the
    graph's O(n K) edges and Z (n, dim). Top-K chosen per chunk of rows (no gradient),
    the chosen values recomputed with gradient; the same graph as the dense path."""
    learner = net.gsl_f
    if learner.kind == "euclidean_knn" and learner.training:
        learner.scale.copy_(chunked_median_sq_distance(nodes.detach()))
    keys, device = learner.keys(nodes), nodes.device
    masked_batch = n_queries > 1 and not net.config.batch_edges
    graph = SparseGraph(learner, keys, torch.zeros(2, 0, dtype=torch.long, device=device),
                        torch.zeros(0, device=device), n_queries, masked_batch,
                        torch.zeros(0, device=device))
    rows, cols = _topk_pairs(graph, min(learner.k, nodes.shape[0] - 1))
    values = learner.pair_similarity(keys[rows], keys[cols])
    n = nodes.shape[0]
    loops = torch.arange(n, device=device)
    edge_index = torch.stack([torch.cat([rows, cols, loops]), torch.cat([cols, rows, loops])])
    ones = torch.ones(n, device=device)
    edge_index, pre = coalesce(edge_index, torch.cat([values / 2, values / 2, ones]), n)
    raw = pre.clamp_min(0.0)
    degree = torch.zeros(n, device=device).index_add(0, edge_index[0], raw)
    inv = degree.clamp_min(1e-12).pow(-0.5)
    adj = torch.sparse_coo_tensor(edge_index, inv[edge_index[0]] * raw * inv[edge_index[1]],
                                  (n, n), is_coalesced=True, check_invariants=False)
    graph.edge_index, graph.raw = edge_index, raw
    graph.z = net.gcn_f(nodes, adj)
    return graph


@torch.no_grad()
def _topk_pairs(graph: SparseGraph, c: int) -> tuple[Tensor, Tensor]:
    """(rows, cols) of every row's top-c other nodes, pairs the dense path masks dropped."""
    keys, n, device = graph.keys, graph.keys.shape[0], graph.keys.device
    found_rows, found_cols = [], []
    for start in range(0, n, ROW_CHUNK):
        rows = torch.arange(start, min(start + ROW_CHUNK, n), device=device)
        sim = graph.learner.key_similarity(keys[rows], keys)
        sim[torch.arange(len(rows), device=device), rows] = float("-inf")
        sim = sim.masked_fill(graph._masked(rows, n), float("-inf"))
        if c <= 0:
            continue
        values, index = sim.topk(c, dim=1)
        finite = torch.isfinite(values)  # a masked pick is an edge of weight 0 after ReLU
        found_rows.append(rows[:, None].expand(-1, c)[finite])
        found_cols.append(index[finite])
    if not found_rows:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty.clone()
    return torch.cat(found_rows), torch.cat(found_cols)


@dataclass
class EpochSelection:
    """Stage-2 epoch selection on inner-validation cases of the training fold.

    ``score(net, buffer) -> C-index`` is called after every epoch; the best epoch's online
    and target weights and buffer are restored at the end. ``patience`` > 0 stops after that
    many epochs without improvement."""

    score: Callable[[MSRLNetwork, CaseBuffer], float]
    patience: int = 0
    scores: list[float] = field(default_factory=list)
    best_epoch: int = -1

    def record(self, epoch: int, value: float) -> bool:
        """Store one epoch's score; True when it is the best so far."""
        self.scores.append(value)
        best = self.best_epoch < 0 or value > self.scores[self.best_epoch]
        if best:
            self.best_epoch = epoch
        return best

    def should_stop(self, epoch: int) -> bool:
        return self.patience > 0 and epoch - self.best_epoch >= self.patience


@torch.no_grad()
def batch_logits(net: MSRLNetwork, context: Tensor, f_queries: Tensor) -> Tensor:
    """Head logits (q, n_out) of q query cases on one graph over [context ; queries], the
    queries barred from picking each other (as the training batches): the inner-validation
    score, one graph for all queries instead of one per query."""
    _, _, z = net.graph_forward(torch.cat([context, f_queries]), len(f_queries))
    return net.logits(z[len(context):], f_queries)


def _mixed(groups: list[Tensor] | None, lam: float, perm: Tensor) -> list[Tensor] | None:
    return None if groups is None else [lam * g + (1 - lam) * g[perm] for g in groups]


def finetune(
    net: MSRLNetwork, cases: TrainingCases, forbidden: set[str], seed: int,
    on_epoch: Callable[[int, float], None] | None = None, sparse: bool | None = None,
    selection: EpochSelection | None = None,
) -> tuple[MSRLNetwork, CaseBuffer, list[float]]:
    """Run Stage 2; returns (target branch, buffer, mean loss per epoch).
    ``sparse``: see :func:`finetune_step` (None: by graph size). ``selection``: keep the
    best epoch by its score (the net is left with that epoch's weights)."""
    c = net.config
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # Beta sampling for mixup
    target = make_target(net)
    n = len(cases.patient_ids)
    buffer = init_buffer(target, cases, round(c.buffer_fraction * n), forbidden, seed)
    weights = {"task": c.w_task, "f_align": c.w_f_align, "g_align": c.w_g_align,
               "s_align": c.w_s_align}
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
    history: list[float] = []
    for epoch in range(c.epochs):
        net.train()
        total, steps = 0.0, 0
        for idx in torch.randperm(n, generator=gen).split(c.batch_size):
            if len(idx) < 2:
                continue
            losses, f_on, f_t = finetune_step(net, target, buffer, cases, idx, gen, sparse)
            loss = sum((weights[k] * v for k, v in losses.items()),
                       start=torch.zeros((), device=f_on.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            ema_update(target, net, c.ema_momentum)
            fresh = f_t if c.buffer_source == "target" else f_on.detach()
            buffer.enqueue([cases.patient_ids[int(i)] for i in idx], fresh)
            total, steps = total + float(loss.detach()), steps + 1
        history.append(total / max(steps, 1))
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
        if selection is not None:
            net.eval()
            if selection.record(epoch, selection.score(net, buffer)):
                best = (copy.deepcopy(net.state_dict()), copy.deepcopy(target.state_dict()),
                        buffer.state())
            if selection.should_stop(epoch):
                break
    if selection is not None and selection.best_epoch >= 0:
        net.load_state_dict(best[0])
        target.load_state_dict(best[1])
        buffer = CaseBuffer.from_state(*best[2], capacity=buffer.capacity, forbidden=forbidden)
    net.eval()
    return target, buffer, history
