"""Pure loss functions of MSRL: InfoNCE and the sparsity-balanced BCE, plus the EMA update."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def info_nce(
    a: Tensor, b: Tensor, tau: float = 0.2, symmetric: bool = True, chunk: int | None = None
) -> Tensor:
    """InfoNCE between row-paired views a (n, d) and b (n, d); row i of a and b are positives,
    every other row of b a negative. Similarity = cosine / tau.

    ``L(a->b) = mean_i -log( exp(s_ii) / sum_j exp(s_ij) )``; symmetric averages L(a->b)
    and L(b->a). Returns a scalar. ``chunk``: compute it ``chunk`` rows of the n x n
    logits at a time (recomputed in the backward pass), O(chunk x n) memory; None: dense.
    """
    if chunk is not None:
        return _chunked_info_nce(a, b, tau, symmetric, chunk)
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / tau
    labels = torch.arange(a.shape[0], device=a.device)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T, labels)) / 2.0
    return loss


def _chunked_info_nce(a: Tensor, b: Tensor, tau: float, symmetric: bool, chunk: int) -> Tensor:
    """:func:`info_nce` as mean(logsumexp of a row - the positive), row blocks checkpointed:
    L(b->a) is the same sum over the columns, i.e. over the rows of b against a."""
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    positive = (a * b).sum(dim=1) / tau
    loss = (_row_logsumexp(a, b, tau, chunk) - positive).mean()
    if symmetric:
        loss = (loss + (_row_logsumexp(b, a, tau, chunk) - positive).mean()) / 2.0
    return loss


def _row_logsumexp(a: Tensor, b: Tensor, tau: float, chunk: int) -> Tensor:
    """logsumexp_j (a_i . b_j / tau) for every row i of a (n,), a block of rows at a time."""
    blocks = [checkpoint(_block_logsumexp, a[start:start + chunk], b, tau, use_reentrant=False)
              for start in range(0, a.shape[0], chunk)]
    return torch.cat(blocks)


def _block_logsumexp(rows: Tensor, b: Tensor, tau: float) -> Tensor:
    return torch.logsumexp(rows @ b.T / tau, dim=1)


def balanced_bce_weights(target: Tensor) -> tuple[float, float]:
    """alpha_0 = (c0 + c1) / (2 c0), alpha_1 = (c0 + c1) / (2 c1) for a 0/1 target,
    c0 / c1 = number of zeros / ones (a class with no member gets weight 0)."""
    c1 = float((target > 0.5).sum())
    c0 = float(target.numel()) - c1
    total = c0 + c1
    alpha0 = total / (2.0 * c0) if c0 > 0 else 0.0
    alpha1 = total / (2.0 * c1) if c1 > 0 else 0.0
    return alpha0, alpha1


def balanced_bce(prob: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """Sparsity-balanced BCE between an edge-probability matrix ``prob`` (any shape, in [0,1])
    and a 0/1 ``target`` of the same shape (the target branch's adjacency pattern):
    mean of -[alpha_1 y log p + alpha_0 (1 - y) log(1 - p)]."""
    alpha0, alpha1 = balanced_bce_weights(target)
    p = prob.clamp(eps, 1.0 - eps)
    y = (target > 0.5).to(p.dtype)
    loss = -(alpha1 * y * torch.log(p) + alpha0 * (1.0 - y) * torch.log(1.0 - p))
    return loss.mean()


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, parameter by parameter
    (buffers are copied). Both modules must have the same structure."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(momentum).add_(o.detach(), alpha=1.0 - momentum)
    for tb, ob in zip(target.buffers(), online.buffers(), strict=True):
        tb.copy_(ob)
