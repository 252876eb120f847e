"""Stage 1: self-supervised pre-training of the encoders, graph learners and GCNs (no labels).

Full-batch over the pre-training patients (the training fold only: evaluation patients
never enter). Per step, for each view m in {h, g, f}: the learned graph A_m and an
edge-dropout/edge-addition view A'_m of it give node embeddings Z_m, Z'_m through the
same GCN; the loss is

    sum_m InfoNCE(P_m Z_m, P_m Z'_m)                 (intra-modality)
  + InfoNCE(P_h Z_h, P_g Z_g)                        (inter-modality, same case = positive)
  + InfoNCE(P_f Z_f, P_h Z_h) + InfoNCE(P_f Z_f, P_g Z_g)   (fused vs each modality)

with P_m the projection heads. MSRL_H (no genomics) keeps only the h and f intra terms.
"""

from __future__ import annotations

import torch
from torch import Tensor

from casegraph.models.msrl.contrastive import info_nce
from casegraph.models.msrl.gcn import GCN
from casegraph.models.msrl.gsl import GraphLearner, augment_edges, normalize_adjacency
from casegraph.models.msrl.nets import MSRLNetwork, WSIInput


def _view_pair(
    gsl: GraphLearner, gcn: GCN, x: Tensor, drop: float, add: float, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """(Z on the learned graph, Z on its augmented view), both (n, dim)."""
    raw = gsl.raw(x)
    z = gcn(x, normalize_adjacency(raw))
    z_aug = gcn(x, normalize_adjacency(augment_edges(raw, drop, add, gen)))
    return z, z_aug


def pretrain_losses(
    net: MSRLNetwork, wsi: WSIInput, groups: list[Tensor] | None, gen: torch.Generator
) -> dict[str, Tensor]:
    """The Stage 1 loss terms for one full batch."""
    c = net.config
    h = net.encode_wsi(wsi)
    z_h, z_h2 = _view_pair(net.gsl_h, net.gcn_h, h, c.edge_drop, c.edge_add, gen)
    p_h = net.proj_h(z_h)
    losses = {"intra_h": info_nce(p_h, net.proj_h(z_h2), c.tau)}
    if c.uses_genomics and groups is not None:
        g = net.encode_genomics(groups)
        z_g, z_g2 = _view_pair(net.gsl_g, net.gcn_g, g, c.edge_drop, c.edge_add, gen)
        p_g = net.proj_g(z_g)
        losses["intra_g"] = info_nce(p_g, net.proj_g(z_g2), c.tau)
        losses["inter"] = info_nce(p_h, p_g, c.tau)
        f = torch.cat([g, h], dim=1)
    else:
        p_g, f = None, h
    z_f, z_f2 = _view_pair(net.gsl_f, net.gcn_f, f, c.edge_drop, c.edge_add, gen)
    p_f = net.proj_f(z_f)
    losses["intra_f"] = info_nce(p_f, net.proj_f(z_f2), c.tau)
    if p_g is not None:
        losses["fused"] = info_nce(p_f, p_h, c.tau) + info_nce(p_f, p_g, c.tau)
    return losses


def pretrain(
    net: MSRLNetwork, wsi: WSIInput, groups: list[Tensor] | None, seed: int
) -> list[float]:
    """Run ``config.pretrain_steps`` full-batch Adam steps; returns the loss per step."""
    c = net.config
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=c.pretrain_lr, weight_decay=c.weight_decay)
    net.train()
    history: list[float] = []
    for _ in range(c.pretrain_steps):
        losses = pretrain_losses(net, wsi, groups, gen)
        loss = torch.stack(list(losses.values())).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return history
