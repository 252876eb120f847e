"""Encoders: shapes, attention sums to one, chunked attention equals unchunked."""

from __future__ import annotations

import torch

from casegraph.models.encoders import SNN, GatedAttentionMIL, GroupSNN, MeanPoolMIL


def test_snn_and_group_snn_shapes() -> None:
    torch.manual_seed(0)
    assert SNN(7, hidden=8).eval()(torch.randn(3, 7)).shape == (3, 8)
    net = GroupSNN([4, 2, 5], hidden=8).eval()
    out = net([torch.randn(3, 4), torch.randn(3, 2), torch.randn(3, 5)])
    assert out.shape == (3, 3, 8)


def test_gated_attention_chunked_equals_single_chunk() -> None:
    torch.manual_seed(0)
    bag = torch.randn(1000, 16)
    whole = GatedAttentionMIL(16, hidden=8, chunk_size=10_000).eval()
    chunked = GatedAttentionMIL(16, hidden=8, chunk_size=37).eval()
    chunked.load_state_dict(whole.state_dict())
    with torch.no_grad():
        e1, a1 = whole(bag)
        e2, a2 = chunked(bag)
    assert e1.shape == (8,) and a1.shape == (1000,)
    assert torch.allclose(a1.sum(), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(e1, e2, atol=1e-5) and torch.allclose(a1, a2, atol=1e-6)
    # the embedding is the attention-weighted mean of the projected patches
    assert torch.allclose(e1, a1 @ whole.project(bag), atol=1e-5)


def test_gated_attention_gradients_flow_through_chunks() -> None:
    net = GatedAttentionMIL(6, hidden=4, chunk_size=5)
    emb, _ = net(torch.randn(1, 23, 6))
    emb.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_mean_pool_uses_the_bag_mean() -> None:
    net = MeanPoolMIL(5, hidden=3).eval()
    bag = torch.randn(10, 5)
    emb, att = net(bag)
    assert torch.allclose(emb, net.project(bag.mean(0)))
    assert torch.allclose(att, torch.full((10,), 0.1))
