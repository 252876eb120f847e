"""MurreNet building blocks (Liu et al., MICCAI 2025).

Shapes: ``N`` pathology tokens, ``G`` genomic groups (tokens), ``d`` width. Token sets are
(n, d) for a single patient (the models run one patient at a time, as the paper does).
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """The paper's MLP: two FC layers with LayerNorm and GELU: FC -> LN -> GELU -> FC."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CoAttentionCommon(nn.Module):
    """The modality-common encoder: a two-branch MLP around a co-attention matrix.

    ``A = Linear_p(h_p)^T . Linear_g(h_g)`` is the (d, d) outer product of the projected
    modality vectors h_p, h_g (d,). Row-wise MLPs (d -> hidden -> 1) read ``A^T`` and ``A``
    into per-feature gates: common parts ``c_p = MLP_p(A^T) * h_p`` and ``c_g = MLP_g(A) * h_g``
    (each (d,)); each modality's feature i is gated by how it co-varies with the other.
    Also used (with separate parameters) by CCL's common and synergy encoders, whose gates
    are single FC layers (``gate="linear"``: ``C = fc1(A^T) * F_p + fc1(A) * F_g``).
    """

    def __init__(self, dim: int, hidden: int | None = None, gate: str = "mlp") -> None:
        super().__init__()
        hidden = hidden or dim
        self.proj_p = nn.Linear(dim, dim)
        self.proj_g = nn.Linear(dim, dim)
        self.mlp_p: nn.Module
        self.mlp_g: nn.Module
        if gate == "mlp":
            self.mlp_p, self.mlp_g = MLP(dim, hidden, 1), MLP(dim, hidden, 1)
        elif gate == "linear":
            self.mlp_p, self.mlp_g = nn.Linear(dim, 1), nn.Linear(dim, 1)
        else:
            raise ValueError(f"unknown gate {gate!r}; choose among: mlp, linear")

    def coattention(self, h_p: torch.Tensor, h_g: torch.Tensor) -> torch.Tensor:
        """(d,), (d,) -> A (d, d) with A[i, j] = Linear_p(h_p)_i * Linear_g(h_g)_j."""
        return torch.outer(self.proj_p(h_p), self.proj_g(h_g))

    def forward(self, h_p: torch.Tensor, h_g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.coattention(h_p, h_g)
        c_p = self.mlp_p(a.T).squeeze(-1) * h_p
        c_g = self.mlp_g(a).squeeze(-1) * h_g
        return c_p, c_g


class Decomposition(nn.Module):
    """Multimodal Representation Decomposition (MRD).

    Input tokens P (N, d), G (G, d). Specific parts: token-wise MLPs, S_p (N, d), S_g (G, d).
    Common parts: :class:`CoAttentionCommon` on the token means h_p, h_g, giving c_p, c_g (d,).
    """

    def __init__(self, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.specific_p = MLP(dim, dim, dim, dropout)
        self.specific_g = MLP(dim, dim, dim, dropout)
        self.common = CoAttentionCommon(dim)

    def forward(self, p: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
        h_p, h_g = p.mean(dim=0), g.mean(dim=0)
        c_p, c_g = self.common(h_p, h_g)
        return {
            "h_p": h_p, "h_g": h_g,
            "s_p": self.specific_p(p), "s_g": self.specific_g(g),
            "c_p": c_p, "c_g": c_g,
        }


class ReconstructionDecoder(nn.Module):
    """Reconstructs a modality's tokens from its specific tokens and its common vector:
    MLP([s_i ; c]) -> (n, d)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = MLP(2 * dim, dim, dim)

    def forward(self, specific: torch.Tensor, common: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([specific, common.expand_as(specific)], dim=-1))


class CrossAttention(nn.Module):
    """Residual multi-head cross-attention: queries (n, d) attend to context (m, d)."""

    def __init__(self, dim: int, heads: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q, kv = self.norm_q(queries)[None], self.norm_kv(context)[None]
        out, _ = self.attn(q, kv, kv, need_weights=False)
        return queries + out[0]


def orthogonal_component(features: torch.Tensor, common: torch.Tensor,
                         eps: float = 1e-8) -> torch.Tensor:
    """Remove from each row of ``features`` (n, d) its projection on ``common`` (d,):
    f - (f . c / |c|^2) c. Each result is orthogonal to ``common``."""
    coef = (features @ common) / (common @ common).clamp(min=eps)
    return features - coef[:, None] * common[None, :]


class DHOFHead(nn.Module):
    """Deep Holistic Orthogonal Fusion head: (specific tokens (n, d), common vector (d,))
    -> logits (K,). The specific tokens lose their projection on the common vector, are
    mean-pooled, concatenated with the common vector and mapped by FC to K hazard logits.
    """

    def __init__(self, dim: int, n_bins: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(2 * dim, n_bins)

    def fuse(self, specific: torch.Tensor, common: torch.Tensor) -> torch.Tensor:
        """The fused patient vector (2d,) used as the embedding."""
        pooled = orthogonal_component(specific, common).mean(dim=0)
        return torch.cat([self.norm(pooled), common])

    def forward(self, specific: torch.Tensor, common: torch.Tensor) -> torch.Tensor:
        return self.fc(self.fuse(specific, common))
