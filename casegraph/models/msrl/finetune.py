"""Stage 2: fine-tuning with the online/target branches and the authentic-case buffer.

Per mini-batch of training cases B (the buffer minus the cases of B is the context C):

- online:  f~_B = [Inductor(h_B), h_B]; graph over [f_C ; f~_B] -> S, A, Z
- target (EMA copy, no gradient): f^_B = [g_B, h_B] (authentic); graph over [f_C ; f^_B]
- L_f_align = InfoNCE(f~_B, f^_B) (+ the same on a mixup view: h mixed between cases,
  target side mixed with the same lambda), L_g_align = InfoNCE(Z_B, Z^_B),
  L_s_align = balanced BCE between the online edge probabilities (S + 1) / 2 and the
  target adjacency pattern, L_task = NLL survival (or cross-entropy) on the head of Z_B;
- then target <- EMA(online) and the buffer takes f^_B (or f~_B: the ablation).

The cases of B are removed from the context so a case never meets its own authentic copy:
at inference the query is never in the buffer, and training matches that.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from casegraph.models.losses import nll_survival_loss
from casegraph.models.msrl.buffer import CaseBuffer
from casegraph.models.msrl.contrastive import balanced_bce, ema_update, info_nce
from casegraph.models.msrl.nets import MSRLNetwork, WSIInput


@dataclass
class TrainingCases:
    """Tensors of the n training cases (inputs already preprocessed)."""

    patient_ids: list[str]
    wsi: WSIInput  # (n, D) means or n bags
    groups: list[Tensor] | None  # G x (n, g_j)
    labels: Tensor  # (n,) long: time bin or class
    events: Tensor  # (n,) float (survival; ones for classification)

    def take(self, idx: Tensor) -> tuple[WSIInput, list[Tensor] | None]:
        wsi = [self.wsi[int(i)] for i in idx] if isinstance(self.wsi, list) else self.wsi[idx]
        groups = [g[idx] for g in self.groups] if self.groups is not None else None
        return wsi, groups


def task_loss(task: str, logits: Tensor, labels: Tensor, events: Tensor) -> Tensor:
    if task == "survival":
        return nll_survival_loss(logits, labels, events)
    return F.cross_entropy(logits, labels)


@torch.no_grad()
def target_fused(target: MSRLNetwork, wsi: WSIInput, groups: list[Tensor] | None) -> Tensor:
    h = target.encode_wsi(wsi)
    return target.authentic_fused(h, groups) if groups is not None else h


def make_target(net: MSRLNetwork) -> MSRLNetwork:
    target = copy.deepcopy(net)
    target.requires_grad_(False)
    target.eval()
    return target


def init_buffer(
    target: MSRLNetwork, cases: TrainingCases, capacity: int, forbidden: set[str], seed: int
) -> CaseBuffer:
    """Buffer filled from the training set (random order, the last ``capacity`` kept)."""
    buffer = CaseBuffer(capacity, target.f_dim, forbidden=forbidden)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(cases.patient_ids)))
    for chunk in order.split(256):
        wsi, groups = cases.take(chunk)
        buffer.enqueue([cases.patient_ids[int(i)] for i in chunk], target_fused(target, wsi, groups))
    return buffer


def finetune_step(
    net: MSRLNetwork, target: MSRLNetwork, buffer: CaseBuffer, cases: TrainingCases,
    idx: Tensor, gen: torch.Generator,
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Losses of one batch; returns (losses, online f~_B, target f^_B)."""
    c = net.config
    ids = [cases.patient_ids[int(i)] for i in idx]
    wsi, groups = cases.take(idx)
    _, context = buffer.without(ids)
    n_ctx = context.shape[0]

    h = net.encode_wsi(wsi)
    f_on = net.online_fused(h, groups)
    sim_on, _, z_on = net.graph_forward(torch.cat([context, f_on]), len(ids))
    with torch.no_grad():
        f_t = target_fused(target, wsi, groups)
        _, raw_t, z_t = target.graph_forward(torch.cat([context, f_t]), len(ids))

    losses = {
        "task": task_loss(c.task, net.logits(z_on[n_ctx:], f_on), cases.labels[idx], cases.events[idx]),
        "f_align": info_nce(f_on, f_t, c.tau),
        "g_align": info_nce(z_on[n_ctx:], z_t[n_ctx:], c.tau),
        "s_align": _structure_loss(sim_on, raw_t),
    }
    if c.mixup_alpha > 0 and len(ids) > 1:
        lam = float(torch.distributions.Beta(c.mixup_alpha, c.mixup_alpha).sample())
        perm = torch.randperm(len(ids), generator=gen)
        f_mix_on = net.online_fused(lam * h + (1 - lam) * h[perm], _mixed(groups, lam, perm))
        f_mix_t = lam * f_t + (1 - lam) * f_t[perm]
        losses["f_align"] = (losses["f_align"] + info_nce(f_mix_on, f_mix_t, c.tau)) / 2.0
    return losses, f_on, f_t


def _structure_loss(sim_on: Tensor, raw_t: Tensor) -> Tensor:
    """Balanced BCE over the finite entries (masked batch-batch pairs are not edges)."""
    finite = torch.isfinite(sim_on)
    return balanced_bce((sim_on[finite] + 1.0) / 2.0, (raw_t[finite] > 0).float())


def _mixed(groups: list[Tensor] | None, lam: float, perm: Tensor) -> list[Tensor] | None:
    return None if groups is None else [lam * g + (1 - lam) * g[perm] for g in groups]


def finetune(
    net: MSRLNetwork, cases: TrainingCases, forbidden: set[str], seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[MSRLNetwork, CaseBuffer, list[float]]:
    """Run Stage 2; returns (target branch, buffer, mean loss per epoch)."""
    c = net.config
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # Beta sampling for mixup
    target = make_target(net)
    n = len(cases.patient_ids)
    buffer = init_buffer(target, cases, round(c.buffer_fraction * n), forbidden, seed)
    weights = {"task": c.w_task, "f_align": c.w_f_align, "g_align": c.w_g_align,
               "s_align": c.w_s_align}
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
    history: list[float] = []
    for epoch in range(c.epochs):
        net.train()
        total, steps = 0.0, 0
        for idx in torch.randperm(n, generator=gen).split(c.batch_size):
            if len(idx) < 2:
                continue
            losses, f_on, f_t = finetune_step(net, target, buffer, cases, idx, gen)
            loss = sum((weights[k] * v for k, v in losses.items()), start=torch.zeros(()))
            opt.zero_grad()
            loss.backward()
            opt.step()
            ema_update(target, net, c.ema_momentum)
            fresh = f_t if c.buffer_source == "target" else f_on.detach()
            buffer.enqueue([cases.patient_ids[int(i)] for i in idx], fresh)
            total, steps = total + float(loss.detach()), steps + 1
        history.append(total / max(steps, 1))
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    net.eval()
    return target, buffer, history
