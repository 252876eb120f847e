"""Nyström attention, PPEG and the TransMIL blocks on tiny inputs."""

from __future__ import annotations

import torch

from casegraph.models.nystrom import (
    PPEG,
    NystromAttention,
    TransMILBlocks,
    iterative_pinv,
)


def test_iterative_pinv_inverts_a_well_conditioned_softmax_matrix() -> None:
    torch.manual_seed(0)
    x = torch.softmax(torch.randn(5, 5) * 0.5 + 4 * torch.eye(5), dim=-1)
    z = iterative_pinv(x, n_iter=20)
    assert torch.allclose(x @ z, torch.eye(5), atol=1e-4)


def test_nystrom_with_one_token_per_landmark_equals_exact_attention() -> None:
    torch.manual_seed(0)
    attn = NystromAttention(dim=8, heads=2, n_landmarks=4, pinv_iter=30)
    q = torch.randn(1, 2, 4, 4) * 2
    k = torch.randn(1, 2, 4, 4) * 2
    v = torch.randn(1, 2, 4, 4)
    exact = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
    approx = attn._nystrom(q, k, v, m=4)
    assert torch.allclose(approx, exact, atol=1e-3)


def test_nystrom_attention_shapes_for_long_and_short_sequences() -> None:
    torch.manual_seed(0)
    attn = NystromAttention(dim=16, heads=4, n_landmarks=8)
    for n in (3, 8, 37):
        out = attn(torch.randn(2, n, 16))
        assert out.shape == (2, n, 16)
        assert torch.isfinite(out).all()


def test_ppeg_keeps_the_class_token_and_the_length() -> None:
    torch.manual_seed(0)
    ppeg = PPEG(dim=6)
    x = torch.randn(1, 1 + 10, 6)  # 10 tokens -> padded 4x4 grid internally
    out = ppeg(x)
    assert out.shape == x.shape
    assert torch.equal(out[:, 0], x[:, 0])


def test_transmil_blocks_backpropagate() -> None:
    torch.manual_seed(0)
    blocks = TransMILBlocks(dim=16, heads=4, n_landmarks=8)
    x = torch.randn(1, 1 + 30, 16, requires_grad=True)
    blocks(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
