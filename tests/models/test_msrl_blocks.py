"""MSRL building blocks on tiny literal inputs: GSL post-processing, InfoNCE, balanced BCE,
EMA, the FIFO buffer, and the exact sparse query path against the dense graph."""

from __future__ import annotations

import math

import pytest
import torch

from casegraph.models.msrl.buffer import CaseBuffer, EvaluationLeakError
from casegraph.models.msrl.config import MSRLConfig
from casegraph.models.msrl.contrastive import (
    balanced_bce,
    balanced_bce_weights,
    ema_update,
    info_nce,
)
from casegraph.models.msrl.gsl import (
    GraphLearner,
    augment_edges,
    post_process,
    raw_adjacency,
    topk_rows,
)
from casegraph.models.msrl.inference import (
    BufferGraph,
    dense_query_forward,
    query_forward,
    query_neighbours,
)
from casegraph.models.msrl.nets import MSRLNetwork

torch.set_num_threads(1)


def test_gsl_output_is_symmetric_nonnegative_sparse_and_normalised() -> None:
    torch.manual_seed(0)
    n, k = 30, 4
    x = torch.randn(n, 8)
    learner = GraphLearner(8, k=k, n_layers=2, init="random", seed=1)
    sim = learner.similarity(x)
    picked = topk_rows(sim, k)
    # each row keeps k neighbours + itself before symmetrisation
    assert ((picked != 0).sum(dim=1) <= k + 1).all()
    raw = raw_adjacency(sim, k)
    adj = learner(x)
    assert torch.allclose(adj, adj.T, atol=1e-6)
    assert (adj >= 0).all()
    # <= K (+ self) own picks, plus at most the rows that picked this node (symmetric fill)
    own = (picked != 0)
    filled = (own | own.T).sum(dim=1)
    assert ((adj > 0).sum(dim=1) <= filled).all()
    deg = raw.sum(dim=1)
    expected = raw / torch.sqrt(deg[:, None] * deg[None, :])
    assert torch.allclose(adj, expected, atol=1e-6)
    # gradients reach the learner's weights through the kept entries
    adj.sum().backward()
    assert all(w.grad is not None for w in learner.learner.weights)


def test_post_process_of_literal_similarity() -> None:
    sim = torch.tensor([[1.0, 0.9, 0.1], [0.9, 1.0, -0.5], [0.1, -0.5, 1.0]])
    adj = post_process(sim, k=1)
    # k=1: rows 0,1 pick each other (0.9), row 2 picks 0 (0.1); symmetrised: A02 = 0.05
    raw = torch.tensor([[1.0, 0.9, 0.05], [0.9, 1.0, 0.0], [0.05, 0.0, 1.0]])
    d = raw.sum(dim=1)
    assert torch.allclose(adj, raw / torch.sqrt(d[:, None] * d[None, :]), atol=1e-6)


def test_augmentation_keeps_symmetry_and_self_loops() -> None:
    torch.manual_seed(0)
    raw = raw_adjacency(torch.rand(12, 12), 3)
    view = augment_edges(raw, drop=0.5, add=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(view, view.T)
    assert torch.allclose(torch.diagonal(view), torch.diagonal(raw))
    assert not torch.equal(view, raw)


def test_info_nce_matches_hand_computation() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    tau = 0.5
    c = 1 / math.sqrt(2)  # cos(a0, b0) = cos(a1, b0) = c; cos(a0, b1) = 0; cos(a1, b1) = 1
    s = [[c / tau, 0.0], [c / tau, 1.0 / tau]]
    row0 = -math.log(math.exp(s[0][0]) / (math.exp(s[0][0]) + math.exp(s[0][1])))
    row1 = -math.log(math.exp(s[1][1]) / (math.exp(s[1][0]) + math.exp(s[1][1])))
    col0 = -math.log(math.exp(s[0][0]) / (math.exp(s[0][0]) + math.exp(s[1][0])))
    col1 = -math.log(math.exp(s[1][1]) / (math.exp(s[0][1]) + math.exp(s[1][1])))
    one_way = (row0 + row1) / 2
    assert float(info_nce(a, b, tau, symmetric=False)) == pytest.approx(one_way, rel=1e-6)
    both = (one_way + (col0 + col1) / 2) / 2
    assert float(info_nce(a, b, tau)) == pytest.approx(both, rel=1e-6)


def test_balanced_bce_weights_match_formula() -> None:
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])  # c1 = 2, c0 = 6
    a0, a1 = balanced_bce_weights(target)
    assert a0 == pytest.approx(8 / 12) and a1 == pytest.approx(8 / 4)
    prob = torch.full_like(target, 0.25)
    expected = -(a1 * 2 * math.log(0.25) + a0 * 6 * math.log(0.75)) / 8
    assert float(balanced_bce(prob, target)) == pytest.approx(expected, rel=1e-6)


def test_ema_moves_target_toward_online() -> None:
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = (target.weight - online.weight).abs().sum().item()
    expected = 0.9 * target.weight.detach() + 0.1 * online.weight.detach()
    ema_update(target, online, momentum=0.9)
    assert torch.allclose(target.weight, expected)
    after = (target.weight - online.weight).abs().sum().item()
    assert after == pytest.approx(0.9 * before, rel=1e-5)


def test_buffer_is_fifo_and_refuses_evaluation_patients() -> None:
    buf = CaseBuffer(capacity=3, dim=2, forbidden={"eval1"})
    buf.enqueue(["a", "b"], torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
    buf.enqueue(["c", "d"], torch.tensor([[3.0, 3.0], [4.0, 4.0]]))
    assert buf.ids == ["b", "c", "d"]  # "a" (oldest) evicted
    buf.enqueue(["b"], torch.tensor([[9.0, 9.0]]))  # re-enqueued: moves to the tail, refreshed
    assert buf.ids == ["c", "d", "b"]
    assert buf.features[-1].tolist() == [9.0, 9.0]
    ids, feats = buf.without(["d"])
    assert ids == ["c", "b"] and feats.shape == (2, 2)
    with pytest.raises(EvaluationLeakError):
        buf.enqueue(["eval1"], torch.zeros(1, 2))
    assert "eval1" not in buf.ids
    empty = CaseBuffer(capacity=0, dim=2)
    empty.enqueue(["a"], torch.zeros(1, 2))
    assert len(empty) == 0


@pytest.mark.parametrize(("n_buffer", "graph"), [(40, "learned"), (8, "learned"), (4, "learned"), (400, "learned"),
                                                 (40, "euclidean_knn"), (0, "learned")])
def test_sparse_query_path_equals_dense_graph(n_buffer: int, graph: str) -> None:
    torch.manual_seed(0)
    config = MSRLConfig(dim=8, k=5, graph=graph, pretrain_steps=0, proj_dim=4)
    net = MSRLNetwork(config, bag_dim=6, group_sizes=[3, 2], n_out=4).eval()
    if graph == "euclidean_knn":
        net.gsl_f.scale.fill_(4.0)
    buffer = torch.rand(n_buffer, net.f_dim)
    buf = BufferGraph.build(net, buffer, chunk=7)
    for _ in range(3):
        f_q = torch.rand(net.f_dim)
        z_sparse, _ = query_forward(net, buf, f_q)
        z_dense = dense_query_forward(net, buffer, f_q)
        assert torch.allclose(z_sparse, z_dense, atol=1e-5)


def test_query_answer_does_not_depend_on_buffer_order() -> None:
    torch.manual_seed(1)
    config = MSRLConfig(dim=8, k=4, pretrain_steps=0, proj_dim=4)
    net = MSRLNetwork(config, bag_dim=6, group_sizes=[3, 2], n_out=4).eval()
    buffer, f_q = torch.rand(60, net.f_dim), torch.rand(net.f_dim)
    perm = torch.randperm(60)
    z, graph = query_forward(net, BufferGraph.build(net, buffer), f_q)
    z_perm, graph_perm = query_forward(net, BufferGraph.build(net, buffer[perm]), f_q)
    assert torch.allclose(z, z_perm, atol=1e-5)
    mine = {(int(j), round(w, 5)) for j, w in query_neighbours(graph, 4)}
    theirs = {(int(perm[j]), round(w, 5)) for j, w in query_neighbours(graph_perm, 4)}
    assert mine == theirs
