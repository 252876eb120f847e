"""graph_ops.coalesce matches torch_geometric's coalesce (the function it replaces)."""

from __future__ import annotations

import pytest
import torch

from casegraph.models.msrl.graph_ops import coalesce

pyg_utils = pytest.importorskip("torch_geometric.utils")


@pytest.mark.parametrize("seed", range(8))
def test_coalesce_matches_torch_geometric_on_random_edges_with_duplicates(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    num_nodes = int(torch.randint(1, 12, (1,), generator=gen))
    n_edges = int(torch.randint(1, 60, (1,), generator=gen))  # many duplicates on few nodes
    edge_index = torch.randint(0, num_nodes, (2, n_edges), generator=gen)
    weight = torch.randn(n_edges, generator=gen)

    got_index, got_weight = coalesce(edge_index, weight, num_nodes)
    want_index, want_weight = pyg_utils.coalesce(edge_index, weight, num_nodes, reduce="sum")

    assert torch.equal(got_index, want_index)
    torch.testing.assert_close(got_weight, want_weight)


def test_coalesce_sums_duplicates_and_sorts_by_row_then_column() -> None:
    edge_index = torch.tensor([[2, 0, 2, 1, 0], [1, 2, 1, 0, 0]])
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])

    index, summed = coalesce(edge_index, weight, 3)

    assert index.tolist() == [[0, 0, 1, 2], [0, 2, 0, 1]]
    assert summed.tolist() == [5.0, 2.0, 4.0, 4.0]


def test_coalesce_keeps_feature_columns_of_two_dimensional_weights() -> None:
    edge_index = torch.tensor([[1, 1, 0], [0, 0, 1]])
    weight = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])

    index, summed = coalesce(edge_index, weight, 2)
    want_index, want = pyg_utils.coalesce(edge_index, weight, 2, reduce="sum")

    assert torch.equal(index, want_index)
    assert summed.tolist() == [[3.0, 30.0], [3.0, 30.0]]
    torch.testing.assert_close(summed, want)


def test_coalesce_of_no_edges_is_empty() -> None:
    index, summed = coalesce(torch.zeros((2, 0), dtype=torch.long), torch.zeros(0), 4)

    assert index.shape == (2, 0)
    assert summed.shape == (0,)
