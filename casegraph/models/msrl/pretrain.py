"""Stage 1: self-supervised pre-training of the encoders, graph learners and GCNs (no labels).

Full-batch over the pre-training patients (the training fold only: evaluation patients
never enter). Per step, for each view m in {h, g, f}: the learned graph A_m and an
edge-dropout/edge-addition view A'_m of it give node embeddings Z_m, Z'_m through the
same GCN; the loss is

    sum_m InfoNCE(P_m Z_m, P_m Z'_m)                 (intra-modality)
  + InfoNCE(P_h Z_h, P_g Z_g)                        (inter-modality, same case = positive)
  + InfoNCE(P_f Z_f, P_h Z_h) + InfoNCE(P_f Z_f, P_g Z_g)   (fused vs each modality)

with P_m the projection heads. MSRL_H (no genomics) keeps only the h and f intra terms.

Memory: from :data:`SPARSE_FROM` patients on, no n x n tensor is built: each learned graph
is O(n K) coalesced edges (exact top-K by :meth:`GraphLearner.raw_edges`), its augmented
view is edited on the edge list with the same random draws as the dense view
(:func:`augment_edge_list`), the GCNs run on sparse adjacencies and every InfoNCE is summed
over row blocks of its logits, recomputed in the backward pass. A step then holds
O(n K + chunk x n) memory; the losses equal the dense path's within float tolerance
(tests/models/test_msrl_stage1.py). Compute stays O(n² d) per step (every row's top-K
and every InfoNCE term cover all pairs: that is the method).
"""

from __future__ import annotations

import torch
from torch import Tensor

from casegraph.models.msrl.contrastive import info_nce
from casegraph.models.msrl.gcn import GCN
from casegraph.models.msrl.graph_ops import normalized_sparse_adjacency
from casegraph.models.msrl.gsl import (
    ROW_CHUNK,
    GraphLearner,
    augment_edge_list,
    augment_edges,
    normalize_adjacency,
)
from casegraph.models.msrl.nets import MSRLNetwork, WSIInput

# from this many patients on, Stage 1 is built without an n x n tensor; the same threshold
# as Stage 2's (finetune.SPARSE_FROM: dense was faster up to ~1,500 nodes there, and an
# n x n float matrix at 2,048 is 16 MB)
SPARSE_FROM = 2048


def _view_pair(
    gsl: GraphLearner, gcn: GCN, x: Tensor, drop: float, add: float, gen: torch.Generator,
    sparse: bool,
) -> tuple[Tensor, Tensor]:
    """(Z on the learned graph, Z on its augmented view), both (n, dim)."""
    if sparse:
        n = x.shape[0]
        edge_index, raw_w = gsl.raw_edges(x)
        z = gcn(x, normalized_sparse_adjacency(edge_index, raw_w, n))
        view_index, view_w = augment_edge_list(edge_index, raw_w, n, drop, add, gen)
        return z, gcn(x, normalized_sparse_adjacency(view_index, view_w, n))
    raw = gsl.raw(x)
    z = gcn(x, normalize_adjacency(raw))
    z_aug = gcn(x, normalize_adjacency(augment_edges(raw, drop, add, gen)))
    return z, z_aug


def pretrain_losses(
    net: MSRLNetwork, wsi: WSIInput, groups: list[Tensor] | None, gen: torch.Generator,
    sparse: bool | None = None,
) -> dict[str, Tensor]:
    """The Stage 1 loss terms for one full batch. ``sparse``: build no n x n tensor
    (None: when the batch has at least :data:`SPARSE_FROM` patients)."""
    c = net.config
    h = net.encode_wsi(wsi)
    use_sparse = h.shape[0] >= SPARSE_FROM if sparse is None else sparse
    chunk = ROW_CHUNK if use_sparse else None

    def nce(a: Tensor, b: Tensor) -> Tensor:
        return info_nce(a, b, c.tau, chunk=chunk)

    def views(gsl: GraphLearner, gcn: GCN, x: Tensor) -> tuple[Tensor, Tensor]:
        return _view_pair(gsl, gcn, x, c.edge_drop, c.edge_add, gen, use_sparse)

    z_h, z_h2 = views(net.gsl_h, net.gcn_h, h)
    p_h = net.proj_h(z_h)
    losses = {"intra_h": nce(p_h, net.proj_h(z_h2))}
    if c.uses_genomics and groups is not None:
        g = net.encode_genomics(groups)
        z_g, z_g2 = views(net.gsl_g, net.gcn_g, g)
        p_g = net.proj_g(z_g)
        losses["intra_g"] = nce(p_g, net.proj_g(z_g2))
        losses["inter"] = nce(p_h, p_g)
        f = torch.cat([g, h], dim=1)
    else:
        p_g, f = None, h
    z_f, z_f2 = views(net.gsl_f, net.gcn_f, f)
    p_f = net.proj_f(z_f)
    losses["intra_f"] = nce(p_f, net.proj_f(z_f2))
    if p_g is not None:
        losses["fused"] = nce(p_f, p_h) + nce(p_f, p_g)
    return losses


def pretrain(
    net: MSRLNetwork, wsi: WSIInput, groups: list[Tensor] | None, seed: int,
    sparse: bool | None = None,
) -> list[float]:
    """Run ``config.pretrain_steps`` full-batch Adam steps; returns the loss per step.
    ``sparse``: see :func:`pretrain_losses`."""
    c = net.config
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=c.pretrain_lr, weight_decay=c.weight_decay)
    net.train()
    history: list[float] = []
    for _ in range(c.pretrain_steps):
        losses = pretrain_losses(net, wsi, groups, gen, sparse)
        loss = torch.stack(list(losses.values())).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return history
