"""Stage 1: checkpoints keyed by what Stage 1 depends on, reused exactly, required by
``stage="finetune"``; the sparse (O(n K) memory) path against the dense one on tiny inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from casegraph.errors import InputError
from casegraph.models.data import CohortData
from casegraph.models.msrl import MSRLConfig, MSRLModel
from casegraph.models.msrl.contrastive import info_nce
from casegraph.models.msrl.graph_ops import normalized_sparse_adjacency, symmetric_topk_edges
from casegraph.models.msrl.gsl import (
    augment_edge_list,
    augment_edges,
    chunked_median_sq_distance,
    median_sq_distance,
    normalize_adjacency,
    raw_adjacency,
)
from casegraph.models.msrl.nets import MSRLNetwork
from casegraph.models.msrl.pretrain import pretrain, pretrain_losses
from casegraph.models.msrl.stage1 import stage1_key
from casegraph.models.registry import build_model
from tests.models.fusion_data import planted_cohort

torch.set_num_threads(1)
FAST = {"dim": 16, "proj_dim": 8, "batch_size": 8, "pretrain_steps": 3, "epochs": 1}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> CohortData:
    return planted_cohort(tmp_path_factory.mktemp("stage1"), n=30, dim=8)


def test_key_ignores_stage2_options_and_follows_stage1_options_and_data() -> None:
    wsi, groups = torch.ones(3, 4), [torch.zeros(3, 2)]
    ids = ["a", "b", "c"]
    base = stage1_key(MSRLConfig(), ids, wsi, groups)
    assert stage1_key(MSRLConfig(epochs=3, buffer_fraction=0.5, buffer_source="online"),
                      ids, wsi, groups) == base
    assert stage1_key(MSRLConfig(pretrain_steps=7), ids, wsi, groups) != base
    assert stage1_key(MSRLConfig(), ["a", "c", "b"], wsi, groups) != base
    assert stage1_key(MSRLConfig(), ids, wsi * 2, groups) != base


def test_cached_stage1_gives_the_same_model(cohort: CohortData, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    train, test = cohort.subset(range(24)), cohort.subset(range(24, 30))
    first = build_model("msrl", **FAST, stage1_cache=str(tmp_path)).fit(train)
    assert len(list(tmp_path.glob("stage1-*.pt"))) == 1

    def no_pretraining(*_args: object) -> None:
        raise AssertionError("Stage 1 ran although a checkpoint exists")

    monkeypatch.setattr("casegraph.models.msrl.model.pretrain", no_pretraining)
    again = build_model("msrl", **FAST, stage1_cache=str(tmp_path), stage="finetune").fit(train)
    assert isinstance(first, MSRLModel) and isinstance(again, MSRLModel)
    assert again.pretrain_history_ == first.pretrain_history_
    np.testing.assert_allclose(again.predict(test).risk, first.predict(test).risk, atol=1e-6)
    # a Stage-2-only change reuses the checkpoint too
    build_model("msrl", **{**FAST, "epochs": 2}, stage1_cache=str(tmp_path)).fit(train)
    assert len(list(tmp_path.glob("stage1-*.pt"))) == 1


def test_stage_pretrain_only_and_finetune_needs_a_checkpoint(cohort: CohortData,
                                                              tmp_path: Path) -> None:
    train = cohort.subset(range(24))
    with pytest.raises(InputError, match="--stage pretrain first"):
        build_model("msrl", **FAST, stage1_cache=str(tmp_path), stage="finetune").fit(train)
    only = build_model("msrl", **FAST, stage1_cache=str(tmp_path), stage="pretrain").fit(train)
    assert len(only.pretrain_history_) == FAST["pretrain_steps"]
    assert not hasattr(only, "buffer_")
    assert len(list(tmp_path.glob("stage1-*.pt"))) == 1
    with pytest.raises(InputError, match="choose among"):
        build_model("msrl", stage="warmup")


# ---------------------------------------------------------------- sparse (O(n K)) Stage 1
def _tiny_net(graph: str = "learned", dim: int = 8) -> MSRLNetwork:
    torch.manual_seed(0)
    config = MSRLConfig(dim=dim, k=3, proj_dim=4, gcn_layers=2, graph=graph, pretrain_steps=2)
    return MSRLNetwork(config, bag_dim=6, group_sizes=[3, 2], n_out=4)


def _inputs(n: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=gen), [torch.randn(n, 3, generator=gen),
                                              torch.randn(n, 2, generator=gen)]


def _losses_and_grads(net: MSRLNetwork, wsi: torch.Tensor, groups: list[torch.Tensor],
                      sparse: bool) -> tuple[dict[str, float], list[torch.Tensor]]:
    torch.manual_seed(5)  # the GCNs' dropout
    losses = pretrain_losses(net, wsi, groups, torch.Generator().manual_seed(2), sparse=sparse)
    net.zero_grad()
    torch.stack(list(losses.values())).sum().backward()
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
             for p in net.parameters()]
    return {k: float(v.detach()) for k, v in losses.items()}, grads


@pytest.mark.parametrize(("graph", "n"), [("learned", 23), ("cosine_knn", 23),
                                          ("euclidean_knn", 23), ("learned", 300)])
def test_sparse_stage1_losses_and_gradients_equal_the_dense_path(graph: str, n: int) -> None:
    # 300 rows: the top-K comes from the FAISS search, 23 from the dense torch one; at 300,
    # 16-d so that no ReLU'd h row is all zeros (a zero key ties with every row)
    net = _tiny_net(graph, dim=8 if n < 100 else 16).train()
    wsi, groups = _inputs(n)
    assert bool((net.encode_wsi(wsi).abs().sum(dim=1) > 0).all())
    dense, dense_grads = _losses_and_grads(net, wsi, groups, sparse=False)
    sparse, sparse_grads = _losses_and_grads(net, wsi, groups, sparse=True)
    assert dense.keys() == sparse.keys() == {"intra_h", "intra_g", "inter", "intra_f", "fused"}
    for name, value in dense.items():
        assert sparse[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    for want, got in zip(dense_grads, sparse_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_sparse_pretraining_runs_the_same_steps_as_dense() -> None:
    wsi, groups = _inputs(17)
    torch.manual_seed(3)
    dense = pretrain(_tiny_net(), wsi, groups, seed=4, sparse=False)
    torch.manual_seed(3)
    sparse = pretrain(_tiny_net(), wsi, groups, seed=4, sparse=True)
    assert len(dense) == 2
    np.testing.assert_allclose(sparse, dense, rtol=1e-5)


def test_edge_list_augmentation_draws_the_same_view_as_the_dense_one() -> None:
    # five nodes, a literal symmetric raw adjacency with a zero-weight listed pair (2, 4)
    raw = torch.tensor([[1.0, 0.5, 0.0, 0.2, 0.0],
                        [0.5, 1.0, 0.3, 0.0, 0.0],
                        [0.0, 0.3, 1.0, 0.0, 0.0],
                        [0.2, 0.0, 0.0, 1.0, 0.7],
                        [0.0, 0.0, 0.0, 0.7, 1.0]])
    listed = (raw > 0) | (torch.tensor([[0, 0, 0, 0, 0], [0] * 5, [0, 0, 0, 0, 1], [0] * 5,
                                        [0, 0, 1, 0, 0]]) > 0)
    edge_index = listed.nonzero().T
    for seed in range(20):
        want = augment_edges(raw, 0.4, 0.6, torch.Generator().manual_seed(seed))
        gen = torch.Generator().manual_seed(seed)
        index, weight = augment_edge_list(edge_index, raw[listed], 5, 0.4, 0.6, gen, chunk=2)
        got = torch.zeros(5, 5)
        got[index[0], index[1]] = weight
        torch.testing.assert_close(got, want)
        # the generator is left where the dense draw leaves it
        after = torch.Generator().manual_seed(seed)
        augment_edges(raw, 0.4, 0.6, after)
        assert torch.equal(torch.rand(3, generator=gen), torch.rand(3, generator=after))


def test_sparse_adjacency_equals_the_dense_post_processing() -> None:
    gen = torch.Generator().manual_seed(0)
    sim = torch.randn(9, 9, generator=gen)
    sim = (sim + sim.T) / 2
    values, index = sim.fill_diagonal_(float("-inf")).topk(4, dim=1)
    edge_index, weight = symmetric_topk_edges(index, values, 9)
    dense_raw = raw_adjacency(sim, 4)
    got = normalized_sparse_adjacency(edge_index, weight, 9).to_dense()
    torch.testing.assert_close(got, normalize_adjacency(dense_raw))


@pytest.mark.parametrize("symmetric", [True, False])
def test_chunked_info_nce_equals_the_dense_one(symmetric: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(11, 4, generator=gen, requires_grad=True)
    b = torch.randn(11, 4, generator=gen, requires_grad=True)
    dense = info_nce(a, b, 0.3, symmetric)
    (da, db) = torch.autograd.grad(dense, [a, b])
    chunked = info_nce(a, b, 0.3, symmetric, chunk=4)
    (ca, cb) = torch.autograd.grad(chunked, [a, b])
    assert float(chunked.detach()) == pytest.approx(float(dense.detach()), rel=1e-6)
    torch.testing.assert_close(ca, da)
    torch.testing.assert_close(cb, db)


def test_chunked_median_is_the_exact_median_of_all_pairs() -> None:
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0], [7.0]])  # squared distances 0 .. 49
    assert float(chunked_median_sq_distance(x, chunk=2)) == float(median_sq_distance(x))
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(60, 3, generator=gen) * torch.rand(60, 1, generator=gen) * 10
    # tiny bins and cells force the narrowing loop
    got = chunked_median_sq_distance(y, chunk=7, bins=4, keep_at_most=10)
    assert float(got) == float(median_sq_distance(y))
