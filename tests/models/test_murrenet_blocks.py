"""MurreNet blocks and loss terms against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from casegraph.models.murrenet.blocks import (
    CoAttentionCommon,
    CrossAttention,
    Decomposition,
    DHOFHead,
    ReconstructionDecoder,
    orthogonal_component,
)
from casegraph.models.murrenet.losses import (
    difference_loss,
    kl_divergence,
    reconstruction_loss,
    similarity_loss,
)


def test_coattention_is_the_outer_product_of_the_projections() -> None:
    torch.manual_seed(0)
    block = CoAttentionCommon(dim=4)
    h_p, h_g = torch.randn(4), torch.randn(4)
    a = block.coattention(h_p, h_g)
    assert a.shape == (4, 4)
    expected = block.proj_p(h_p)[:, None] * block.proj_g(h_g)[None, :]
    assert torch.allclose(a, expected)
    c_p, c_g = block(h_p, h_g)
    assert c_p.shape == c_g.shape == (4,)
    gate_p = block.mlp_p(a.T).squeeze(-1)
    assert torch.allclose(c_p, gate_p * h_p)


def test_decomposition_shapes() -> None:
    torch.manual_seed(0)
    out = Decomposition(dim=8)(torch.randn(13, 8), torch.randn(6, 8))
    assert out["s_p"].shape == (13, 8)
    assert out["s_g"].shape == (6, 8)
    assert out["c_p"].shape == out["c_g"].shape == out["h_p"].shape == (8,)


def test_reconstruction_decoder_and_cross_attention_shapes() -> None:
    torch.manual_seed(0)
    rec = ReconstructionDecoder(8)(torch.randn(5, 8), torch.randn(8))
    assert rec.shape == (5, 8)
    out = CrossAttention(8, heads=2)(torch.randn(5, 8), torch.randn(2, 8))
    assert out.shape == (5, 8)


def test_orthogonal_component_is_orthogonal_to_the_common_vector() -> None:
    torch.manual_seed(0)
    feats, common = torch.randn(7, 5), torch.randn(5)
    ortho = orthogonal_component(feats, common)
    assert torch.allclose(ortho @ common, torch.zeros(7), atol=1e-5)
    # hand case: (1, 1) minus its projection on (1, 0) is (0, 1)
    out = orthogonal_component(torch.tensor([[1.0, 1.0]]), torch.tensor([1.0, 0.0]))
    assert torch.allclose(out, torch.tensor([[0.0, 1.0]]))


def test_dhof_head_outputs_logits_and_a_fused_vector() -> None:
    torch.manual_seed(0)
    head = DHOFHead(dim=6, n_bins=4)
    s, c = torch.randn(9, 6), torch.randn(6)
    assert head(s, c).shape == (4,)
    assert head.fuse(s, c).shape == (12,)


def test_similarity_and_reconstruction_losses_by_hand() -> None:
    a = torch.tensor([1.0, 2.0, 3.0])
    b = torch.tensor([0.0, 2.0, 5.0])
    assert similarity_loss(a, b).item() == pytest.approx((1 + 0 + 2) / 3)
    assert reconstruction_loss(a, b).item() == pytest.approx((1 + 0 + 4) / 3)


def test_difference_loss_softmax_kl_by_hand() -> None:
    c = torch.tensor([0.0, 0.0])  # softmax (0.5, 0.5)
    s = torch.tensor([[math.log(3.0), 0.0]])  # softmax (0.75, 0.25)
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert difference_loss(c, s, form="kl").item() == pytest.approx(kl, rel=1e-5)
    assert difference_loss(c, s, form="neg_kl").item() == pytest.approx(-kl, rel=1e-5)
    assert difference_loss(c, s).item() == pytest.approx(math.exp(-kl), rel=1e-5)


def test_difference_loss_sigmoid_is_bernoulli_kl_per_feature() -> None:
    c, s = torch.tensor([0.0]), torch.tensor([[math.log(3.0)]])  # p=0.5 vs q=0.75
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    got = difference_loss(c, s, normalisation="sigmoid", form="kl")
    assert got.item() == pytest.approx(kl, rel=1e-5)
    assert kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5])).item() == 0.0


def test_difference_loss_rejects_unknown_options() -> None:
    with pytest.raises(ValueError, match="choose among"):
        difference_loss(torch.zeros(2), torch.zeros(1, 2), form="bogus")
    with pytest.raises(ValueError, match="choose among"):
        difference_loss(torch.zeros(2), torch.zeros(1, 2), normalisation="bogus")
