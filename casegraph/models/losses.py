"""Survival losses as pure tensor functions (torchsurv / pycox style).

Discrete time: ``logits`` (B, K) -> hazards ``h = sigmoid(logits)`` -> survival
``S_k = prod_{j<=k} (1 - h_j)``; the NLL is the MCAT ``nll_loss`` (Zadeh & Schmid 2020).
Continuous risk: the negative Cox partial log-likelihood with Breslow or Efron ties.
"""

from __future__ import annotations

import torch
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")
TIES = ("breslow", "efron")


def survival_from_logits(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(B, K) logits -> (hazards (B, K), survival (B, K)); S is in [0, 1], non-increasing."""
    hazards = torch.sigmoid(logits)
    return hazards, torch.cumprod(1.0 - hazards, dim=1)


def risk_from_survival(survival: Tensor) -> Tensor:
    """(B, K) survival -> (B,) risk = -sum_k S_k (higher = worse, the MCAT convention)."""
    return -survival.sum(dim=1)


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ValueError(f"unknown reduction {reduction!r}; choose among: {', '.join(REDUCTIONS)}")


def nll_survival_loss(
    logits: Tensor,
    label: Tensor,
    event: Tensor,
    alpha: float = 0.0,
    reduction: str = "mean",
    eps: float = 1e-7,
) -> Tensor:
    """Discrete-time negative log-likelihood (MCAT ``nll_loss``).

    logits (B, K); label (B,) long bin index; event (B,) bool/float, 1 = death observed.
    Uncensored: ``-log S_{y-1} - log h_y``; censored: ``-log S_y`` (S_{-1} = 1).
    ``alpha`` up-weights the uncensored term: ``(1-alpha)*nll + alpha*uncensored``.
    Returns a scalar (or (B,) with ``reduction="none"``).
    """
    hazards, surv = survival_from_logits(logits)
    y = label.long().view(-1, 1)
    observed = event.to(logits.dtype).view(-1, 1)
    censored = 1.0 - observed
    surv_padded = torch.cat([torch.ones_like(observed), surv], dim=1)
    s_before = torch.gather(surv_padded, 1, y).clamp(min=eps)
    h_at = torch.gather(hazards, 1, y).clamp(min=eps)
    s_at = torch.gather(surv_padded, 1, y + 1).clamp(min=eps)
    uncensored_loss = -observed * (torch.log(s_before) + torch.log(h_at))
    censored_loss = -censored * torch.log(s_at)
    loss = (1.0 - alpha) * (censored_loss + uncensored_loss) + alpha * uncensored_loss
    return _reduce(loss.view(-1), reduction)


def cox_ph_loss(risk: Tensor, time: Tensor, event: Tensor, ties: str = "breslow") -> Tensor:
    """Negative Cox partial log-likelihood divided by the number of events (scalar).

    risk (B,) log-hazard (higher = worse); time (B,); event (B,) bool/float.
    Risk set of an event at t = everyone with time >= t. Ties: ``breslow`` (each tied
    event sees the full risk set) or ``efron``. No events gives 0 (still differentiable).
    """
    if ties not in TIES:
        raise ValueError(f"unknown ties {ties!r}; choose among: {', '.join(TIES)}")
    risk = risk.view(-1)
    observed = event.view(-1).bool()
    n_events = int(observed.sum())
    if n_events == 0:
        return risk.sum() * 0.0
    order = torch.argsort(time.view(-1), descending=True, stable=True)
    r, t, e = risk[order], time.view(-1)[order], observed[order]
    _, inverse, counts = torch.unique_consecutive(t, return_inverse=True, return_counts=True)
    last_of_group = torch.cumsum(counts, 0) - 1
    log_risk_set = torch.logcumsumexp(r, dim=0)[last_of_group][inverse]  # (B,) per patient
    if ties == "breslow":
        log_denominator = log_risk_set
    else:
        shift = r.max().detach()
        exp_r = torch.exp(r - shift)
        e_f = e.to(r.dtype)
        tied_sum = torch.zeros(len(counts), dtype=r.dtype).index_add(0, inverse, exp_r * e_f)
        d = torch.zeros(len(counts), dtype=r.dtype).index_add(0, inverse, e_f)
        # rank of each event within its tie group: 0, 1, ..., d-1
        cum_events = torch.cumsum(e_f, 0)
        group_start = torch.cumsum(torch.zeros(len(counts), dtype=r.dtype).index_add(
            0, inverse, e_f), 0) - d
        rank = cum_events - 1.0 - group_start[inverse]
        fraction = torch.where(e, rank / d[inverse].clamp(min=1.0), torch.zeros_like(rank))
        risk_set = torch.exp(log_risk_set - shift)
        log_denominator = torch.log(risk_set - fraction * tied_sum[inverse]) + shift
    return -((r - log_denominator)[e]).sum() / n_events
