"""MurreNet's decomposition losses as pure tensor functions.

Total loss (paper): ``L = NLL + alpha * L_sim + beta * L_diff + gamma * L_recon`` with
alpha = beta = 1e-4 and gamma = 1. Choices where the paper is silent are in docs/models.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KL_NORMALISATIONS = ("softmax", "sigmoid")
DIFF_FORMS = ("exp_neg_kl", "neg_kl", "kl")


def similarity_loss(original: torch.Tensor, common: torch.Tensor) -> torch.Tensor:
    """L_sim: mean absolute difference (L1) between h^o and h^c, both (..., d)."""
    return (original - common).abs().mean()


def to_distribution(x: torch.Tensor, normalisation: str = "softmax") -> torch.Tensor:
    """Turn embeddings (..., d) into distributions for KL.

    ``softmax``: one categorical distribution over the d features (default);
    ``sigmoid``: d independent Bernoulli probabilities (returned as (..., d, 2)).
    """
    if normalisation == "softmax":
        return torch.softmax(x, dim=-1)
    if normalisation == "sigmoid":
        p = torch.sigmoid(x)
        return torch.stack([p, 1.0 - p], dim=-1)
    raise ValueError(f"unknown KL normalisation {normalisation!r}; choose among: "
                     f"{', '.join(KL_NORMALISATIONS)}")


def kl_divergence(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KL(p || q) summed over the last axis, averaged over the rest (scalar)."""
    p = p.clamp(min=eps)
    q = q.clamp(min=eps)
    return (p * (p.log() - q.log())).sum(dim=-1).mean()


def difference_loss(common: torch.Tensor, specific: torch.Tensor,
                    normalisation: str = "softmax", form: str = "exp_neg_kl") -> torch.Tensor:
    """L_diff between a common vector (d,) and specific tokens (n, d) (or vector (d,)).

    KL(P(common) || P(specific_i)) averaged over tokens, with P from :func:`to_distribution`.
    The loss must *push the parts apart*, so it is minimised in a decreasing form of KL:
    ``exp_neg_kl`` = exp(-KL) in (0, 1] (default, bounded), ``neg_kl`` = -KL (unbounded),
    ``kl`` = +KL (the equation read literally; pulls the parts together).
    """
    p = to_distribution(common, normalisation)
    q = to_distribution(specific, normalisation)
    kl = kl_divergence(p.expand_as(q), q)
    if form == "exp_neg_kl":
        return torch.exp(-kl)
    if form == "neg_kl":
        return -kl
    if form == "kl":
        return kl
    raise ValueError(f"unknown difference form {form!r}; choose among: {', '.join(DIFF_FORMS)}")


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_recon: mean squared error, (..., d) vs (..., d)."""
    return F.mse_loss(reconstruction, target)
