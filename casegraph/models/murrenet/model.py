"""MurreNet (Liu et al., MICCAI 2025): decomposition into modality-specific and -common
parts, then Deep Holistic Orthogonal Fusion. Design choices where the paper is silent are
documented in docs/models.md ("MurreNet").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from casegraph.models.data import CohortData
from casegraph.models.fusion_common import (
    Inputs,
    PatientFusionModel,
    load_patient_bag,
    subsample_patches,
)
from casegraph.models.murrenet.blocks import (
    CrossAttention,
    Decomposition,
    DHOFHead,
    ReconstructionDecoder,
)
from casegraph.models.murrenet.losses import (
    difference_loss,
    reconstruction_loss,
    similarity_loss,
)
from casegraph.models.nystrom import TransMILBlocks

FUSIONS = ("concat", "dhof")
SIM_TARGETS = ("as_written", "both", "cross")


@dataclass(frozen=True)
class Ablation:
    """One row of the paper's Table 2."""

    use_mrd: bool
    fusion: str
    alpha: float
    beta: float
    gamma: float


ABLATIONS: dict[str, Ablation] = {
    "A": Ablation(False, "concat", 0.0, 0.0, 0.0),  # concatenation baseline
    "B": Ablation(True, "concat", 0.0, 0.0, 0.0),  # + MRD
    "C": Ablation(True, "dhof", 0.0, 0.0, 0.0),  # + DHOF
    "D": Ablation(True, "dhof", 1e-4, 0.0, 0.0),  # + L_sim
    "E": Ablation(True, "dhof", 1e-4, 1e-4, 0.0),  # + L_diff
    "F": Ablation(True, "dhof", 1e-4, 1e-4, 1.0),  # + L_recon (full model)
}


class MurreNetNet(nn.Module):
    """Pathology patches (N, D_in) + gene groups [(1, g_j)] -> (logits (K,), embedding, aux).

    Tokens: P = ReLU(FC(patches)) (N, d); G = stack_j ReLU(FC_j(g_j)) (G, d).
    """

    def __init__(self, in_dim: int, group_sizes: list[int], dim: int, n_bins: int,
                 use_mrd: bool, fusion: str, heads: int = 8, dropout: float = 0.25) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; choose among: {', '.join(FUSIONS)}")
        if fusion == "dhof" and not use_mrd:
            raise ValueError("fusion 'dhof' needs the decomposition (use_mrd=True)")
        self.use_mrd, self.fusion = use_mrd, fusion
        self.path_fc = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.gene_fc = nn.ModuleList(
            nn.Sequential(nn.Linear(g, dim), nn.ReLU(), nn.Dropout(dropout)) for g in group_sizes
        )
        if use_mrd:
            self.mrd = Decomposition(dim)
            self.decoder_p = ReconstructionDecoder(dim)
            self.decoder_g = ReconstructionDecoder(dim)
        if fusion == "dhof":
            self.cross = CrossAttention(dim, heads)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.blocks = TransMILBlocks(dim, heads=heads)
            self.head: nn.Module = DHOFHead(dim, n_bins)
        else:
            width = 4 * dim if use_mrd else 2 * dim
            self.head = nn.Linear(width, n_bins)

    def tokens(self, bag: torch.Tensor, genomics: list[torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.path_fc(bag)
        g = torch.cat([fc(x) for fc, x in zip(self.gene_fc, genomics, strict=True)], dim=0)
        return p, g

    def forward(self, bag: torch.Tensor, genomics: list[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        p, g = self.tokens(bag, genomics)
        if not self.use_mrd:
            emb = torch.cat([p.mean(dim=0), g.mean(dim=0)])
            return self.head(emb), emb, {}
        parts = self.mrd(p, g)
        aux = dict(parts, p=p, g=g)
        aux["rec_p"] = self.decoder_p(parts["s_p"], parts["c_p"])
        aux["rec_g"] = self.decoder_g(parts["s_g"], parts["c_g"])
        if self.fusion == "concat":
            emb = torch.cat([parts["s_p"].mean(0), parts["s_g"].mean(0), parts["c_p"],
                             parts["c_g"]])
            return self.head(emb), emb, aux
        specific = torch.cat([parts["s_p"], parts["s_g"]], dim=0)
        common_tokens = torch.stack([parts["c_p"], parts["c_g"]])
        x = self.cross(specific, common_tokens)
        x = self.blocks(torch.cat([self.cls_token, x[None]], dim=1))[0]
        common = common_tokens.mean(dim=0)
        head = self.head
        assert isinstance(head, DHOFHead)
        emb = head.fuse(x, common)
        return head.fc(emb), emb, aux


class MurreNetModel(PatientFusionModel):
    """MurreNet: multimodal fusion with shared/specific decomposition (DHOF, MMLoss).

    ``ablation`` picks a row of the paper's Table 2 ("A".."F", default the full model "F");
    ``use_mrd``, ``fusion``, ``alpha``, ``beta``, ``gamma`` override single switches.
    ``dim`` is the token width (the paper: 768). ``sim_target`` and ``kl_normalisation`` /
    ``diff_form`` choose how L_sim and L_diff are read (docs/models.md).
    """

    name = "murrenet"

    def __init__(self, *, ablation: str = "F", use_mrd: bool | None = None,
                 fusion: str | None = None, alpha: float | None = None,
                 beta: float | None = None, gamma: float | None = None, dim: int = 768,
                 heads: int = 8, dropout: float = 0.25, sim_target: str = "as_written",
                 kl_normalisation: str = "softmax", diff_form: str = "exp_neg_kl",
                 epochs: int = 20, lr: float = 2e-4, weight_decay: float = 1e-5,
                 n_bins: int = 4, grad_accum: int = 1,
                 max_patches: int | None = None, seed: int = 0, nll_alpha: float = 0.0,
                 bin_edges: npt.ArrayLike | None = None, device: str = "cpu",
                 verbose: bool = False) -> None:
        super().__init__(n_bins=n_bins, epochs=epochs, lr=lr, weight_decay=weight_decay,
                         grad_accum=grad_accum, max_patches=max_patches, seed=seed,
                         nll_alpha=nll_alpha, bin_edges=bin_edges, device=device,
                         verbose=verbose)
        if ablation not in ABLATIONS:
            raise ValueError(f"unknown ablation {ablation!r}; choose among: "
                             f"{', '.join(ABLATIONS)}")
        if sim_target not in SIM_TARGETS:
            raise ValueError(f"unknown sim_target {sim_target!r}; choose among: "
                             f"{', '.join(SIM_TARGETS)}")
        preset = ABLATIONS[ablation]
        self.ablation = ablation
        self.use_mrd = preset.use_mrd if use_mrd is None else use_mrd
        self.fusion = preset.fusion if fusion is None else fusion
        self.alpha = preset.alpha if alpha is None else alpha
        self.beta = preset.beta if beta is None else beta
        self.gamma = preset.gamma if gamma is None else gamma
        self.dim, self.heads, self.dropout = dim, heads, dropout
        self.sim_target, self.kl_normalisation = sim_target, kl_normalisation
        self.diff_form = diff_form

    def _before_fit(self, train: CohortData) -> None:
        self.bag_rng_ = np.random.default_rng(self.seed + 1)
        self.in_dim_ = int(load_patient_bag(train, 0).shape[1])

    def _network(self) -> nn.Module:
        return MurreNetNet(self.in_dim_, self.group_sizes_, self.dim, self.n_bins,
                           self.use_mrd, self.fusion, self.heads, self.dropout)

    def _patient_inputs(self, data: CohortData, i: int, genomics: list[torch.Tensor],
                        training: bool) -> Inputs:
        bag = load_patient_bag(data, i)
        if training:
            bag = subsample_patches(bag, self.max_patches, self.bag_rng_)
        return {"bag": torch.from_numpy(bag).to(self.device),
                "genomics": [g[i:i + 1] for g in genomics]}

    def _forward(self, inputs: Inputs, training: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        return self.net_(inputs["bag"], inputs["genomics"])  # type: ignore[no-any-return]

    def _sim(self, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.sim_target == "as_written":
            return similarity_loss(aux["h_p"], aux["c_p"])
        if self.sim_target == "both":
            return similarity_loss(aux["h_p"], aux["c_p"]) + similarity_loss(aux["h_g"], aux["c_g"])
        return similarity_loss(aux["c_p"], aux["c_g"])

    def _loss(self, logits: torch.Tensor, aux: dict[str, torch.Tensor], label: int,
              event: bool, index: int) -> tuple[torch.Tensor, dict[str, float]]:
        nll = self._nll(logits, label, event)
        total = nll
        parts = {"nll": float(nll.detach())}
        if self.use_mrd:
            sim = self._sim(aux)
            diff = (difference_loss(aux["c_p"], aux["s_p"], self.kl_normalisation, self.diff_form)
                    + difference_loss(aux["c_g"], aux["s_g"], self.kl_normalisation,
                                      self.diff_form))
            recon = (reconstruction_loss(aux["rec_p"], aux["p"])
                     + reconstruction_loss(aux["rec_g"], aux["g"]))
            total = total + self.alpha * sim + self.beta * diff + self.gamma * recon
            parts.update(sim=float(sim.detach()), diff=float(diff.detach()),
                         recon=float(recon.detach()))
        parts["loss"] = float(total.detach())
        return total, parts
