"""MSRL's exact top-K graph without an M x M matrix: the FAISS search (IndexFlatIP /
IndexFlatL2 in chunks) against the dense brute force, on tiny literal and random inputs."""

from __future__ import annotations

import pytest
import torch

from casegraph.models.msrl import finetune, knn_graph
from casegraph.models.msrl.config import MSRLConfig
from casegraph.models.msrl.gsl import GraphLearner
from casegraph.models.msrl.inference import BufferGraph, dense_query_forward, query_forward
from casegraph.models.msrl.knn_graph import topk_neighbours
from casegraph.models.msrl.nets import MSRLNetwork

torch.set_num_threads(1)


def _brute_force(learner: GraphLearner, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The old BufferGraph.build: the full M x M similarity, self masked, topk."""
    sim = learner.key_similarity(keys, keys)
    sim.fill_diagonal_(float("-inf"))
    c = min(learner.k, keys.shape[0] - 1)
    return sim.topk(c, dim=1)


def _learner(kind: str, dim: int, k: int) -> GraphLearner:
    learner = GraphLearner(dim, k, kind, init="random", seed=3).eval()
    learner.scale.fill_(2.5)
    return learner


@pytest.mark.parametrize("kind", ["learned", "cosine_knn", "euclidean_knn"])
@pytest.mark.parametrize("dense_below", [0, 10**9])  # FAISS path, dense torch path
def test_topk_equals_brute_force_on_random_inputs(kind: str, dense_below: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, 16, generator=gen)
    learner = _learner(kind, 16, 12)
    keys = learner.keys(x)
    metric = "l2" if kind == "euclidean_knn" else "ip"
    values, index = topk_neighbours(keys, 12, metric, learner.pair_similarity, chunk=97,
                                    dense_below=dense_below)
    ref_values, ref_index = _brute_force(learner, keys)
    assert index.shape == (500, 12)
    assert torch.equal(index, ref_index)
    assert torch.allclose(values, ref_values, atol=1e-5)
    assert bool((values[:, :-1] >= values[:, 1:]).all())


@pytest.mark.parametrize("dense_below", [0, 10**9])
def test_topk_of_literal_points(dense_below: int) -> None:
    # four points on a line: each one's nearest other points, self never listed
    keys = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    learner = _learner("euclidean_knn", 1, 2)
    values, index = topk_neighbours(keys, 2, "l2", learner.pair_similarity,
                                    dense_below=dense_below)
    assert index.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    assert torch.allclose(values[0], torch.exp(-torch.tensor([1.0, 9.0]) / 2.5))
    # cosine: unit vectors at 0, 10, 90 and 180 degrees
    unit = torch.tensor([[1.0, 0.0], [0.9848, 0.1736], [0.0, 1.0], [-1.0, 0.0]])
    _, index = topk_neighbours(unit, 1, "ip", lambda a, b: (a * b).sum(1),
                               dense_below=dense_below)
    assert index.flatten().tolist() == [1, 0, 1, 2]


@pytest.mark.parametrize("dense_below", [0, 10**9])
def test_tiny_and_duplicate_inputs(dense_below: int) -> None:
    pair = lambda a, b: (a * b).sum(1)  # noqa: E731
    one = topk_neighbours(torch.ones(1, 3), 5, "ip", pair, dense_below=dense_below)
    assert one[0].shape == (1, 0) and one[1].shape == (1, 0)
    values, index = topk_neighbours(torch.eye(3), 5, "ip", pair, dense_below=dense_below)
    assert index.shape == (3, 2)  # c = M - 1
    same = torch.ones(6, 2) / 2**0.5  # exact duplicates: self may tie with the others
    values, index = topk_neighbours(same, 3, "ip", pair, dense_below=dense_below)
    assert not bool((index == torch.arange(6)[:, None]).any())
    assert torch.allclose(values, torch.ones(6, 3))


def test_bad_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="metric"):
        topk_neighbours(torch.ones(3, 2), 1, "cosine", lambda a, b: a.sum(1))


@pytest.mark.parametrize("graph", ["learned", "euclidean_knn"])
def test_buffer_graph_by_faiss_answers_queries_as_the_dense_graph(
    graph: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(knn_graph, "DENSE_BELOW", 0)  # force the FAISS search
    torch.manual_seed(0)
    config = MSRLConfig(dim=8, k=5, graph=graph, pretrain_steps=0, proj_dim=4)
    net = MSRLNetwork(config, bag_dim=6, group_sizes=[3, 2], n_out=4).eval()
    net.gsl_f.scale.fill_(4.0)
    buffer = torch.randn(300, net.f_dim)
    buf = BufferGraph.build(net, buffer, chunk=64)
    ref_values, ref_index = _brute_force(net.gsl_f, net.gsl_f.keys(buffer))
    assert torch.equal(buf.index, ref_index)
    assert torch.allclose(buf.values, ref_values, atol=1e-5)
    for _ in range(3):
        f_q = torch.randn(net.f_dim)
        z_sparse, _ = query_forward(net, buf, f_q)
        assert torch.allclose(z_sparse, dense_query_forward(net, buffer, f_q), atol=1e-5)


# ---------------------------------------------------------------- Stage 2 without n x n


def _cohort(n: int, seed: int = 0) -> finetune.TrainingCases:
    gen = torch.Generator().manual_seed(seed)
    return finetune.TrainingCases(
        patient_ids=[f"p{i}" for i in range(n)],
        wsi=torch.randn(n, 6, generator=gen),
        groups=[torch.randn(n, 3, generator=gen), torch.randn(n, 2, generator=gen)],
        labels=torch.randint(0, 4, (n,), generator=gen),
        events=(torch.rand(n, generator=gen) > 0.3).float(),
    )


def _net(graph: str, batch_edges: bool = False) -> MSRLNetwork:
    torch.manual_seed(0)
    config = MSRLConfig(dim=8, k=4, graph=graph, pretrain_steps=0, proj_dim=4, epochs=2,
                        batch_size=5, batch_edges=batch_edges)
    return MSRLNetwork(config, bag_dim=6, group_sizes=[3, 2], n_out=4)


@pytest.mark.parametrize(("graph", "batch_edges"), [("learned", False), ("learned", True),
                                                    ("cosine_knn", False),
                                                    ("euclidean_knn", False)])
def test_sparse_step_has_the_dense_losses_and_gradients(graph: str, batch_edges: bool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(finetune, "ROW_CHUNK", 7)  # several row chunks
    cases = _cohort(30)
    results = []
    for sparse in (False, True):
        net = _net(graph, batch_edges)
        target = finetune.make_target(net)
        buffer = finetune.init_buffer(target, cases, 30, set(), seed=0)
        net.train()
        torch.manual_seed(1)
        losses, _, _ = finetune.finetune_step(net, target, buffer, cases, torch.arange(5),
                                              torch.Generator().manual_seed(2), sparse=sparse)
        sum(losses.values(), start=torch.zeros(())).backward()
        grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
        results.append(({k: float(v.detach()) for k, v in losses.items()}, grads))
    (dense, dense_grads), (sparse_losses, sparse_grads) = results
    assert dense.keys() == sparse_losses.keys()
    for key in dense:
        assert sparse_losses[key] == pytest.approx(dense[key], rel=1e-5, abs=1e-6), key
    assert len(dense_grads) == len(sparse_grads)
    for a, b in zip(dense_grads, sparse_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_sparse_training_follows_the_dense_loss_trajectory() -> None:
    cases = _cohort(24, seed=3)
    histories = []
    for sparse in (False, True):
        _, buffer, history = finetune.finetune(_net("learned"), cases, set(), seed=5,
                                               sparse=sparse)
        histories.append((history, buffer.features))
    (dense, dense_buffer), (sparse_history, sparse_buffer) = histories
    assert len(dense) == 2
    assert sparse_history == pytest.approx(dense, rel=1e-4)
    assert torch.allclose(dense_buffer, sparse_buffer, atol=1e-4)
