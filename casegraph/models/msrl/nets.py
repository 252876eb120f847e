"""The MSRL network: WSI encoder h, genomics encoder g, Inductor h -> g~, graph learners and
GCNs per view (h, g, fused f), projection heads (pre-training) and the task head.

WSI inputs are either a (B, D) tensor of per-patient mean patch embeddings (``mean_mlp``,
the default: an MLP over the bag mean) or a list of B bags (N_i, D) (``abmil``).
Genomics inputs are a list of G tensors (B, g_j), one per gene group.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from casegraph.models.encoders import SNN, GatedAttentionMIL, GroupSNN
from casegraph.models.msrl.config import MSRLConfig
from casegraph.models.msrl.gcn import GCN
from casegraph.models.msrl.gsl import GraphLearner, normalize_adjacency, raw_adjacency

WSIInput = Tensor | list[Tensor]


def _projection(dim: int, out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out))


class MSRLNetwork(nn.Module):
    """All trainable parts of one MSRL model (online branch; the target branch is an EMA copy)."""

    def __init__(self, config: MSRLConfig, bag_dim: int, group_sizes: list[int], n_out: int):
        super().__init__()
        c = self.config = config
        d = c.dim
        if c.wsi_encoder == "abmil":
            self.h_abmil: nn.Module = GatedAttentionMIL(bag_dim, hidden=d, dropout=c.dropout)
        else:
            self.h_mlp = nn.Sequential(
                nn.Linear(bag_dim, d), nn.ReLU(), nn.Dropout(c.dropout), nn.Linear(d, d), nn.ReLU()
            )
        init = "random" if c.pretrain_steps == 0 and c.graph == "learned" else "ones"

        def learner(dim: int, offset: int) -> GraphLearner:
            return GraphLearner(dim, c.k, c.graph, c.gsl_layers, init=init, seed=c.seed + offset)

        self.gsl_h, self.gcn_h = learner(d, 1), GCN(d, d, c.gcn_layers, c.dropout)
        self.proj_h = _projection(d, c.proj_dim)
        self.f_dim = 2 * d if c.uses_genomics else d
        if c.uses_genomics:
            self.g_encoder = GroupSNN(group_sizes, hidden=d, dropout=c.dropout)
            self.gsl_g, self.gcn_g = learner(d, 2), GCN(d, d, c.gcn_layers, c.dropout)
            self.proj_g = _projection(d, c.proj_dim)
        if c.genomics_mode == "inductor":
            self.inductor = SNN(d, hidden=d, dropout=c.dropout)
        self.gsl_f, self.gcn_f = learner(self.f_dim, 3), GCN(self.f_dim, d, c.gcn_layers, c.dropout)
        self.proj_f = _projection(d, c.proj_dim)
        head_in = d + self.f_dim if c.readout == "z_skip" else d
        self.head = nn.Linear(head_in, n_out)
        if c.readout == "z_gated":
            self.head_f = nn.Linear(self.f_dim, n_out)
            self.gate = nn.Linear(d + self.f_dim, 1)

    # ----------------------------------------------------------------- encoders
    def encode_wsi(self, wsi: WSIInput) -> Tensor:
        """-> h (B, dim)."""
        if isinstance(wsi, list):
            if self.config.wsi_encoder != "abmil":
                wsi = torch.stack([bag.mean(dim=0) for bag in wsi])
            else:
                return torch.stack([self.h_abmil(bag)[0] for bag in wsi])
        return self.h_mlp(wsi)

    def encode_genomics(self, groups: list[Tensor]) -> Tensor:
        """-> g (B, dim): per-group SNN embeddings, mean-pooled over groups."""
        return self.g_encoder(groups).mean(dim=1)

    def prompt(self, h: Tensor) -> Tensor:
        """The Inductor's genomics prompt g~ (B, dim) from h (B, dim)."""
        return self.inductor(h)

    def online_fused(self, h: Tensor, groups: list[Tensor] | None) -> Tensor:
        """f as the online branch sees it: [g~, h] (MSRL), [g, h] (MSRL_multi), h (MSRL_H)."""
        mode = self.config.genomics_mode
        if mode == "none":
            return h
        if mode == "inductor":
            return torch.cat([self.prompt(h), h], dim=1)
        if groups is None:
            raise ValueError("MSRL_multi needs the patient's genomics")
        return torch.cat([self.encode_genomics(groups), h], dim=1)

    def authentic_fused(self, h: Tensor, groups: list[Tensor]) -> Tensor:
        """f = [g, h] with authentic genomics (h only for MSRL_H)."""
        if not self.config.uses_genomics:
            return h
        return torch.cat([self.encode_genomics(groups), h], dim=1)

    # ----------------------------------------------------------------- graph + head
    def graph_forward(self, nodes: Tensor, n_queries: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """Fused graph over nodes (n, f_dim) -> (similarity (n, n), raw adjacency, Z (n, dim)).

        The last ``n_queries`` nodes are the current cases; unless ``batch_edges`` is set they
        may not pick each other as neighbours, so each sees the buffer as a lone query would.
        """
        sim = self.gsl_f.similarity(nodes)
        if n_queries > 1 and not self.config.batch_edges:
            block = torch.ones(n_queries, n_queries, dtype=torch.bool, device=nodes.device)
            mask = torch.zeros_like(sim, dtype=torch.bool)
            mask[-n_queries:, -n_queries:] = block.triu(1) | block.tril(-1)
            sim = sim.masked_fill(mask, float("-inf"))
        raw = raw_adjacency(sim, self.config.k)
        return sim, raw, self.gcn_f(nodes, normalize_adjacency(raw))

    def logits(self, z: Tensor, f: Tensor) -> Tensor:
        """Task head on the readout: Z (B, dim) and f (B, f_dim) -> (B, n_out).

        ``z``: head(Z); ``z_skip``: head([Z, f]); ``z_gated``: head(Z) + a(Z, f) head_f(f)
        with a per-case gate a in (0, 1). While training, ``skip_dropout`` zeroes a case's
        f in the readout (the graph's input is untouched) and rescales the kept ones."""
        c = self.config
        if c.readout == "z":
            return self.head(z)
        f_read = f
        if self.training and c.skip_dropout > 0:
            keep = torch.rand(f.shape[0], 1, device=f.device) >= c.skip_dropout
            f_read = f * keep.to(f.dtype) / (1.0 - c.skip_dropout)
        if c.readout == "z_skip":
            return self.head(torch.cat([z, f_read], dim=1))
        gate = torch.sigmoid(self.gate(torch.cat([z, f_read], dim=1)))
        return self.head(z) + gate * self.head_f(f_read)
