"""CCL, Cohort-individual Cooperative Learning (Zhou, Zhou, Chen, IEEE TMI 2024).

Pathology enters as k = 6 k-means centres of the patch features, aligned to a running
anchor (CCA); genomics as the gene groups. Multimodal knowledge decomposition (MKD) gives
four components (pathology/genomics uniqueness, common = redundancy, synergy), cohort
guidance (CGM) adds l_k and the cohort-bank contrastive l_p, and a Transformer with a
class token fuses the components into sigmoid hazards. Choices where the paper is silent
are in docs/models.md ("CCL").
"""

from __future__ import annotations

import logging
import weakref

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from casegraph.models.ccl.alignment import CentreAnchor
from casegraph.models.ccl.bank import CohortBank
from casegraph.models.ccl.losses import cohort_contrastive_loss, knowledge_loss
from casegraph.models.data import CohortData
from casegraph.models.encoders import SNN, GroupSNN
from casegraph.models.fusion_common import Inputs, PatientFusionModel, load_patient_bag
from casegraph.models.murrenet.blocks import MLP, CoAttentionCommon
from casegraph.models.targets import bin_edges, discretize

log = logging.getLogger(__name__)

COMPONENTS = ("pathology", "genomics", "common", "synergy")
# CCL Table VI: number of knowledge encoders -> which ones
ENCODER_SETS: dict[int, tuple[str, ...]] = {
    1: ("common",),
    2: ("pathology", "genomics"),
    3: ("pathology", "genomics", "common"),
    4: COMPONENTS,
}
CENTRE_SOURCES = ("auto", "bag")


class CCLNet(nn.Module):
    """Aligned centres (k, D) + gene groups [(1, g_j)] -> (logits (K,), embedding (d,), aux)."""

    def __init__(self, in_dim: int, group_sizes: list[int], k: int, dim: int, n_bins: int,
                 encoders: tuple[str, ...], use_cca: bool, use_mkd: bool, tau: float,
                 alignment_metric: str, n_risk_groups: int, bank_length: int,
                 fusion_layers: int = 2, heads: int = 8, dropout: float = 0.25) -> None:
        super().__init__()
        self.use_cca, self.use_mkd = use_cca, use_mkd
        self.encoder_names = encoders if use_mkd else ("pathology", "genomics")
        self.anchor = CentreAnchor(k, in_dim, tau, alignment_metric)
        self.path_snn = SNN(in_dim, dim, n_layers=1, dropout=dropout)
        self.path_fc = nn.Linear(k * dim, dim)
        self.gene_snn = GroupSNN(group_sizes, dim, n_layers=2, dropout=dropout)
        self.gene_fc = nn.Linear(len(group_sizes) * dim, dim)
        self.encoders = nn.ModuleDict()
        if use_mkd:
            for name in encoders:
                if name in ("common", "synergy"):
                    self.encoders[name] = CoAttentionCommon(dim, gate="linear")
                else:
                    self.encoders[name] = MLP(dim, dim, dim, dropout)
        self.bank = CohortBank(n_risk_groups, bank_length, len(self.encoder_names), dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim,
                                           dropout=dropout, batch_first=True)
        self.fusion = nn.TransformerEncoder(layer, fusion_layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, n_bins)

    def modality_features(self, centres: torch.Tensor, genomics: list[torch.Tensor]
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """F_p = FC(flatten SNN(centres)) (d,), F_g = FC(flatten GroupSNN(groups)) (d,)."""
        f_p = self.path_fc(self.path_snn(centres).flatten())
        f_g = self.gene_fc(self.gene_snn(genomics).flatten())
        return f_p, f_g

    def decompose(self, f_p: torch.Tensor, f_g: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.use_mkd:
            return {"pathology": f_p, "genomics": f_g}
        out: dict[str, torch.Tensor] = {}
        for name in self.encoder_names:
            enc = self.encoders[name]
            if isinstance(enc, CoAttentionCommon):
                c_p, c_g = enc(f_p, f_g)
                out[name] = c_p + c_g
            else:
                out[name] = enc(f_p if name == "pathology" else f_g)
        return out

    def forward(self, centres: npt.NDArray[np.float32], genomics: list[torch.Tensor],
                training: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        if self.use_cca:
            centres = self.anchor.align(centres, update=training)
        x = torch.from_numpy(np.array(centres, dtype=np.float32)).to(self.cls_token)
        return self.forward_aligned(x, genomics)

    def forward_aligned(self, x: torch.Tensor, genomics: list[torch.Tensor]
                        ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`forward` from centres already aligned to the anchor, as a tensor (k, D)
        (differentiable: patch attribution reads its gradient)."""
        f_p, f_g = self.modality_features(x, genomics)
        comps = self.decompose(f_p, f_g)
        stacked = torch.stack([comps[n] for n in self.encoder_names])  # (c, d)
        tokens = torch.cat([self.cls_token, stacked[None]], dim=1)
        emb = self.fusion(tokens)[0, 0]
        aux = {"f_p": f_p, "f_g": f_g, "stacked": stacked}
        aux.update({f"comp_{n}": v for n, v in comps.items()})
        return self.head(emb), emb, aux


class CCLModel(PatientFusionModel):
    """CCL: cohort-guided contrastive fusion (CCA, MKD, CGM) of WSI and genomics.

    Ablation switches (paper Table IV): ``use_cca``, ``use_mkd``, ``use_cgm``; Table VI:
    ``n_encoders`` (1-4, see ``ENCODER_SETS``) or an explicit ``encoders`` tuple.
    ``centres="auto"`` uses the store's precomputed per-slide centres when ``k`` and
    ``kmeans_seed`` match the ingested ones, else k-means of the bag; ``"bag"`` always
    computes them. The anchor and the cohort bank are buffers of ``net_`` (saved).
    """

    name = "ccl"

    def __init__(self, *, k: int = 6, kmeans_seed: int = 0, centres: str = "auto",
                 dim: int = 256, tau: float = 0.1, alignment_metric: str = "euclidean",
                 n_risk_groups: int = 4, bank_length: int = 10,
                 bank_includes_censored: bool = False, contrastive_temperature: float = 0.1,
                 cohort_weight: float = 1.0, use_cca: bool = True, use_mkd: bool = True,
                 use_cgm: bool = True, n_encoders: int | None = None,
                 encoders: tuple[str, ...] | None = None, fusion_layers: int = 2,
                 heads: int = 8, dropout: float = 0.25, epochs: int = 20, lr: float = 2e-4,
                 weight_decay: float = 1e-5, n_bins: int = 4, grad_accum: int = 1,
                 max_patches: int | None = None, seed: int = 0, nll_alpha: float = 0.0,
                 bin_edges: npt.ArrayLike | None = None, device: str = "cpu",
                 verbose: bool = False) -> None:
        super().__init__(n_bins=n_bins, epochs=epochs, lr=lr, weight_decay=weight_decay,
                         grad_accum=grad_accum, max_patches=max_patches, seed=seed,
                         nll_alpha=nll_alpha, bin_edges=bin_edges, device=device,
                         verbose=verbose)
        if centres not in CENTRE_SOURCES:
            raise ValueError(f"unknown centres source {centres!r}; choose among: "
                             f"{', '.join(CENTRE_SOURCES)}")
        if n_encoders is not None and encoders is not None:
            raise ValueError("give n_encoders or encoders, not both")
        if n_encoders is not None:
            if n_encoders not in ENCODER_SETS:
                raise ValueError(f"n_encoders must be one of {sorted(ENCODER_SETS)}")
            encoders = ENCODER_SETS[n_encoders]
        encoders = tuple(encoders or COMPONENTS)
        unknown = [e for e in encoders if e not in COMPONENTS]
        if unknown or not encoders:
            raise ValueError(f"unknown encoders {unknown}; choose among: {', '.join(COMPONENTS)}")
        self.k, self.kmeans_seed, self.centres = k, kmeans_seed, centres
        self.dim, self.tau, self.alignment_metric = dim, tau, alignment_metric
        self.n_risk_groups, self.bank_length = n_risk_groups, bank_length
        self.bank_includes_censored = bank_includes_censored
        self.contrastive_temperature, self.cohort_weight = contrastive_temperature, cohort_weight
        self.use_cca, self.use_mkd, self.use_cgm = use_cca, use_mkd, use_cgm
        self.encoders = encoders
        self.fusion_layers, self.heads, self.dropout = fusion_layers, heads, dropout

    # ------------------------------------------------------------------ centres
    def patient_centres(self, data: CohortData) -> list[npt.NDArray[np.float32]]:
        """(k, D) centres per patient: the store's per-slide centres where available (one
        slide: as stored; several: k-means of the stacked slide centres), else k-means of
        the patient's bag. Counts by source go to ``centre_sources_``."""
        from casegraph.ingest.summaries import summarize_features

        stored: dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]] = {}
        if self.centres == "auto" and data.summaries is not None and data.slide_ids:
            wanted = [s for ids in data.slide_ids for s in ids]
            try:
                stored = data.summaries(wanted, self.k, self.kmeans_seed)
            except Exception as exc:  # a closed store: fall back to the bags, loudly
                log.warning("ccl: precomputed centres unavailable (%s); using k-means of bags",
                            exc)
        out = []
        sources = getattr(self, "centre_sources_", {"store": 0, "bag": 0})
        for i in range(len(data)):
            ids = data.slide_ids[i] if data.slide_ids else []
            if ids and all(s in stored for s in ids):
                parts = [stored[s][1] for s in ids]
                centres = parts[0] if len(parts) == 1 else summarize_features(
                    np.concatenate(parts), self.k, self.kmeans_seed)[1]
                sources["store"] += 1
            else:
                centres = summarize_features(load_patient_bag(data, i), self.k,
                                             self.kmeans_seed)[1]
                sources["bag"] += 1
            out.append(np.asarray(centres, dtype=np.float32))
        self.centre_sources_ = sources
        return out

    # ------------------------------------------------------------------ hooks
    def _before_fit(self, train: CohortData) -> None:
        self.group_edges_ = bin_edges(train.target, self.n_risk_groups)
        self.groups_ = discretize(train.target.time, self.group_edges_)
        self.centre_sources_ = {"store": 0, "bag": 0}
        centres = self.patient_centres(train)
        self._centres_cache: tuple[weakref.ref[CohortData], list[npt.NDArray[np.float32]]] = (
            weakref.ref(train), centres)
        self.in_dim_ = int(centres[0].shape[1])

    def _network(self) -> nn.Module:
        return CCLNet(self.in_dim_, self.group_sizes_, self.k, self.dim, self.n_bins,
                      self.encoders, self.use_cca, self.use_mkd, self.tau,
                      self.alignment_metric, self.n_risk_groups, self.bank_length,
                      self.fusion_layers, self.heads, self.dropout)

    def _patient_inputs(self, data: CohortData, i: int, genomics: list[torch.Tensor],
                        training: bool) -> Inputs:
        cache = getattr(self, "_centres_cache", None)
        if cache is not None and cache[0]() is data:
            cached = cache[1]
        else:
            cached = self.patient_centres(data)
            self._centres_cache = (weakref.ref(data), cached)
        return {"centres": cached[i], "genomics": [g[i:i + 1] for g in genomics]}

    def _forward(self, inputs: Inputs, training: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        return self.net_(inputs["centres"], inputs["genomics"], training)  # type: ignore[no-any-return]

    def _loss(self, logits: torch.Tensor, aux: dict[str, torch.Tensor], label: int,
              event: bool, index: int) -> tuple[torch.Tensor, dict[str, float]]:
        nll = self._nll(logits, label, event)
        total, parts = nll, {"nll": float(nll.detach())}
        if self.use_cgm:
            net = self.net_
            assert isinstance(net, CCLNet)
            group = int(self.groups_[index])
            l_p = cohort_contrastive_loss(aux["stacked"], net.bank, group, not event,
                                          self.contrastive_temperature)
            l_k = nll * 0.0
            if self.use_mkd:
                comps = {k[5:]: v for k, v in aux.items() if k.startswith("comp_")}
                l_k = knowledge_loss(comps, aux["f_p"], aux["f_g"])
            total = total + self.cohort_weight * (l_k + l_p)
            parts.update(l_k=float(l_k.detach()), l_p=float(l_p.detach()))
            if event or self.bank_includes_censored:
                net.bank.push(group, aux["stacked"])
        parts["loss"] = float(total.detach())
        return total, parts
