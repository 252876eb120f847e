"""MSRLModel: the SurvivalModel wrapper (fit / predict) plus the WSI-only query API.

Variants (``variant``): ``msrl`` (WSI-only inference through the Inductor), ``msrl_h``
(no genomics anywhere), ``msrl_multi`` (authentic genomics at inference). Ablations are
options (see :class:`MSRLConfig`): ``graph``, ``pretrain_steps=0`` with a random GSL,
``buffer_source="online"``, ``buffer_fraction``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from casegraph.errors import InputError
from casegraph.models.base import Prediction
from casegraph.models.data import CohortData
from casegraph.models.losses import risk_from_survival, survival_from_logits
from casegraph.models.metrics import harrell_c
from casegraph.models.msrl.buffer import CaseBuffer
from casegraph.models.msrl.config import MSRLConfig
from casegraph.models.msrl.finetune import (
    EpochSelection,
    TrainingCases,
    batch_logits,
    finetune,
    target_fused,
)
from casegraph.models.msrl.inference import BufferGraph, query_forward, query_neighbours
from casegraph.models.msrl.inputs import (
    bags_to_wsi,
    class_labels,
    genomics_tensors,
    inner_split,
    wsi_inputs,
)
from casegraph.models.msrl.nets import MSRLNetwork, WSIInput
from casegraph.models.msrl.pretrain import pretrain
from casegraph.models.msrl.stage1 import STAGES, Stage1Cache, stage1_key
from casegraph.models.preprocess import GenomicsPreprocessor
from casegraph.models.targets import bin_edges, discretize
from casegraph.runtime import pick_device, seed_everything
from casegraph.schema import SurvivalTarget

VARIANTS = {"msrl": "inductor", "msrl_h": "none", "msrl_multi": "authentic"}


def _to_device(wsi: WSIInput, device: torch.device) -> WSIInput:
    return [bag.to(device) for bag in wsi] if isinstance(wsi, list) else wsi.to(device)


def _groups_to(groups: list[Tensor] | None, device: torch.device) -> list[Tensor] | None:
    return None if groups is None else [g.to(device) for g in groups]


@dataclass
class WSIOnlyAnswer:
    """One WSI-only query: risk (higher = worse), survival (n_bins,) S(t) per bin (None for
    classification), the query's strongest graph neighbours (patient_id, normalised edge
    weight), the Inductor's genomics prompt g~ (d_g,), and the GCN output z (dim,)."""

    risk: float
    survival: npt.NDArray[np.float64] | None
    neighbours: list[tuple[str, float]]
    genomics_prompt: npt.NDArray[np.float32]
    z: npt.NDArray[np.float32]


class MSRLModel:
    """MSRL (graph structure learning over cases with an authentic-case buffer)."""

    def __init__(self, variant: str = "msrl", **options: Any) -> None:
        if variant not in VARIANTS:
            raise InputError(f"unknown MSRL variant {variant!r}; choose among: "
                             + ", ".join(VARIANTS))
        options.setdefault("genomics_mode", VARIANTS[variant])
        # options the CV runner may pass: given bin edges (--bins paper) and epoch selection
        edges = options.pop("bin_edges", None)
        self.given_edges = None if edges is None else np.asarray(edges, dtype=np.float64)
        select = options.pop("select", "last")
        if select != "last":
            raise InputError(f"MSRL reports the last epoch; selection {select!r} is not offered",
                             column="--select", fix="use --select last")
        # runtime options (not part of the model): where Stage-1 checkpoints live, and which
        # stages fit() runs ("pretrain": Stage 1 only; "finetune": needs a checkpoint)
        cache = options.pop("stage1_cache", None)
        self.stage1_cache = None if cache is None else Stage1Cache(Path(cache))
        self.stage = str(options.pop("stage", "all"))
        if self.stage not in STAGES:
            raise InputError(f"unknown MSRL stage {self.stage!r}; choose among: "
                             + ", ".join(STAGES), column="--stage")
        self.name = variant
        self.config = MSRLConfig.from_options(**options)

    # ----------------------------------------------------------------- training
    def fit(self, train: CohortData, valid: CohortData | None = None) -> MSRLModel:
        c = self.config
        seed_everything(c.seed)
        forbidden = set(valid.patient_ids) if valid is not None else set()
        leak = sorted(forbidden & set(train.patient_ids))
        if leak:
            raise InputError(f"patients in both training and evaluation data: {leak[:5]}")
        wsi = wsi_inputs(train, c.wsi_encoder)
        groups = None
        if c.uses_genomics and not train.genomics:
            raise InputError(
                f"no gene groups of set {c.group_set!r} for these patients; "
                f"{self.name} needs genomics for training",
                column="group_set",
                fix="pass the group set the store holds (casegraph info), or use msrl_h",
            )
        if c.uses_genomics:
            self.preprocessor_ = GenomicsPreprocessor().fit(train.genomics)
            groups = genomics_tensors(self.preprocessor_.transform(train.genomics))
        labels, events = self._labels(train)
        bag_dim = int(wsi[0].shape[-1]) if isinstance(wsi, list) else int(wsi.shape[1])
        self.bag_dim_, self.group_sizes_ = bag_dim, train.group_sizes
        n_out = c.n_bins if c.task == "survival" else len(self.classes_)
        self.device_ = pick_device(c.device)
        device = torch.device(self.device_)
        net = MSRLNetwork(c, bag_dim, self.group_sizes_, n_out).to(device)
        key_inputs = (list(train.patient_ids), wsi, groups)  # the Stage-1 key reads CPU tensors
        wsi, groups = _to_device(wsi, device), _groups_to(groups, device)
        self.pretrain_history_ = self._stage1(net, key_inputs, wsi, groups)
        if self.stage == "pretrain":
            self.net_ = net.cpu()
            return self
        seed_everything(c.seed + 1)  # Stage 2 starts from the same RNG state, cached or not
        cases = TrainingCases(list(train.patient_ids), wsi, groups, labels.to(device),
                              events.to(device))
        target, buffer = self._stage2(net, cases, train, forbidden)
        # the fitted model answers on the CPU (one query at a time; FAISS search on CPU)
        self.net_, self.target_ = net.cpu(), target.cpu()
        self._set_buffer(buffer.to("cpu"))
        self.reference_ids_ = list(train.patient_ids)
        self.fitted_ids_ = list(train.patient_ids)
        self.reference_fused_ = target_fused(target, _to_device(wsi, torch.device("cpu")),
                                             _groups_to(groups, torch.device("cpu")))
        if c.buffer_genomics == "shuffled":
            self.shuffle_buffer_genomics(c.seed)
        return self

    def _stage2(self, net: MSRLNetwork, cases: TrainingCases, train: CohortData,
                forbidden: set[str]) -> tuple[MSRLNetwork, CaseBuffer]:
        """Stage 2 on the training fold, or with ``inner_valid`` on its fit part with the
        epoch chosen on the inner part; the inner cases then join the buffer (they are
        authentic training cases), so the buffer covers the training fold either way."""
        c = self.config
        fit_rows, inner_rows = inner_split(train.target.event, c.inner_valid, c.seed)
        if not inner_rows:
            target, buffer, self.finetune_history_ = finetune(net, cases, forbidden, c.seed + 1)
            return target, buffer
        inner = cases.subset(inner_rows)
        inner_target = SurvivalTarget.from_arrays(time=train.target.time[inner_rows],
                                                  event=train.target.event[inner_rows])
        selection = EpochSelection(partial(self._inner_score, inner=inner,
                                           inner_target=inner_target), c.patience)
        target, buffer, self.finetune_history_ = finetune(
            net, cases.subset(fit_rows), forbidden, c.seed + 1, selection=selection)
        self.selection_scores_, self.selected_epoch_ = selection.scores, selection.best_epoch
        buffer.grow(round(c.buffer_fraction * len(cases.patient_ids)))
        buffer.enqueue(inner.patient_ids, target_fused(target, inner.wsi, inner.groups))
        return target, buffer

    def _inner_score(self, net: MSRLNetwork, buffer: CaseBuffer, inner: TrainingCases,
                     inner_target: SurvivalTarget) -> float:
        """Harrell's C (survival) or minus the cross-entropy (classification) of the inner
        cases answered against the current buffer."""
        with torch.no_grad():
            groups = inner.groups if self.config.genomics_mode == "authentic" else None
            f = net.online_fused(net.encode_wsi(inner.wsi), groups)
            logits = batch_logits(net, buffer.features, f).cpu()
        if self.config.task == "survival":
            _, surv = survival_from_logits(logits)
            return harrell_c(risk_from_survival(surv).numpy(), inner_target)
        return -float(torch.nn.functional.cross_entropy(logits, inner.labels.cpu()))

    def shuffle_buffer_genomics(self, seed: int) -> None:
        """The shuffled-buffer ablation on a fitted model: the genomic half of every buffer
        (and reference) case's fused feature is replaced by another case's, by one seeded
        permutation; the slide half stays. A graph that uses the neighbours' authentic
        genomics must answer worse after this."""
        if not self.config.uses_genomics:
            raise InputError(f"{self.name} keeps no genomics in its buffer to shuffle",
                             column="buffer_genomics")
        d, rng = self.config.dim, np.random.default_rng(seed)

        def shuffled(features: Tensor) -> Tensor:
            out = features.clone()
            out[:, :d] = features[torch.from_numpy(rng.permutation(len(features))), :d]
            return out

        buffer = self.buffer_
        self._set_buffer(CaseBuffer.from_state(buffer.ids, shuffled(buffer.features),
                                               capacity=buffer.capacity,
                                               forbidden=buffer.forbidden))
        self.reference_fused_ = shuffled(self.reference_fused_)

    def _stage1(self, net: MSRLNetwork,
                key_inputs: tuple[list[str], WSIInput, list[Tensor] | None],
                wsi: WSIInput, groups: list[Tensor] | None) -> list[float]:
        """Stage 1 (self-supervised pre-training), loaded from the cache when there.
        ``key_inputs``: (patient ids, WSI inputs, genomics) on the CPU, for the cache key."""
        c = self.config
        if not c.pretrain_steps:
            return []
        cache = self.stage1_cache
        key = stage1_key(c, *key_inputs) if cache is not None else ""
        if cache is not None and (history := cache.load(key, net)) is not None:
            return history
        if self.stage == "finetune":
            raise InputError(
                "no Stage-1 checkpoint for these training patients and options"
                + ("" if cache is None else f" in {cache.folder}"),
                column="--stage",
                fix="run the same command with --stage pretrain first (or --stage all)",
            )
        history = pretrain(net, wsi, groups, c.seed)
        if cache is not None:
            cache.save(key, net, history)
        return history

    def _labels(self, train: CohortData) -> tuple[Tensor, Tensor]:
        c = self.config
        if c.task == "survival":
            edges = self.given_edges if self.given_edges is not None else bin_edges(
                train.target, c.n_bins)
            self.bin_edges_: npt.NDArray[np.float64] | None = edges
            labels = discretize(train.target.time, edges)
            events = train.target.event.astype(np.float32)
            self.classes_: list[str] = []
        else:
            self.bin_edges_ = None
            assert c.label is not None
            labels, self.classes_ = class_labels(train, c.label)
            events = np.ones(len(train), dtype=np.float32)
        return torch.from_numpy(labels), torch.from_numpy(events)

    @property
    def buffer_ids(self) -> list[str]:
        """Buffer patient ids in FIFO order (position 0 = oldest)."""
        return self.buffer_.ids

    def _set_buffer(self, buffer: CaseBuffer) -> None:
        self.buffer_ = buffer
        self.buffer_graph_ = BufferGraph.build(self.net_, buffer.features)

    # ----------------------------------------------------------------- inference
    def _online_fused(self, wsi: WSIInput, data: CohortData | None) -> tuple[Tensor, Tensor]:
        """(h (n, dim), online f (n, f_dim)); reads genomics only for MSRL_multi."""
        with torch.no_grad():
            h = self.net_.encode_wsi(wsi)
            groups = None
            if self.config.genomics_mode == "authentic":
                if data is None:
                    raise InputError("msrl_multi needs the query's genomics; use msrl for "
                                     "WSI-only queries")
                groups = genomics_tensors(self.preprocessor_.transform(data.genomics))
            return h, self.net_.online_fused(h, groups)

    def _heads(self, z: Tensor, f: Tensor) -> tuple[Tensor, Tensor | None]:
        """(risk (n,), survival (n, K) or None) from Z and f."""
        logits = self.net_.logits(z, f)
        if self.config.task == "survival":
            _, surv = survival_from_logits(logits)
            return risk_from_survival(surv), surv
        probs = torch.softmax(logits, dim=1)
        # binary: P(last class); multi-class: expected class index
        return probs @ torch.arange(probs.shape[1], dtype=probs.dtype), None

    def _forward_queries(self, f: Tensor, buf: BufferGraph) -> Tensor:
        return torch.stack([query_forward(self.net_, buf, f[i])[0] for i in range(len(f))])

    def predict(self, data: CohortData) -> Prediction:
        self.net_.eval()
        _, f = self._online_fused(wsi_inputs(data, self.config.wsi_encoder), data)
        with torch.no_grad():
            z = self._forward_queries(f, self.buffer_graph_) if len(f) else f[:, : self.config.dim]
            risk, surv = self._heads(z, f)
        return Prediction(
            patient_ids=list(data.patient_ids),
            risk=risk.numpy().astype(np.float64),
            survival=None if surv is None else surv.numpy().astype(np.float64),
            embedding=z.numpy().astype(np.float32),
            # the bins the survival columns refer to: without them the IBS cannot be computed
            bin_edges=None if surv is None or self.bin_edges_ is None
            else np.asarray(self.bin_edges_, dtype=np.float64).copy(),
        )

    def embed_wsi(self, bags: list[npt.NDArray[np.floating]]) -> npt.NDArray[np.float32]:
        """(n, dim) WSI embeddings h of n bags (N_i, D)."""
        self.net_.eval()
        with torch.no_grad():
            return self.net_.encode_wsi(bags_to_wsi(bags, self.config.wsi_encoder)).numpy()

    def query_wsi_only(
        self, bag: npt.NDArray[np.floating], candidate_ids: list[str] | None = None, k: int = 10
    ) -> WSIOnlyAnswer:
        """Answer one new case from its bag (N, D) only: Inductor prompt, graph forward
        against the buffer (``candidate_ids=None``, the paper's exact path) or against the
        given authentic reference cases, prediction from Z."""
        if self.config.genomics_mode == "authentic":
            raise InputError("msrl_multi predicts from authentic genomics; use msrl for "
                             "WSI-only queries")
        self.net_.eval()
        _, f = self._online_fused(bags_to_wsi([bag], self.config.wsi_encoder), None)
        if candidate_ids is None:
            buf, ids = self.buffer_graph_, self.buffer_.ids
        else:
            ids = list(candidate_ids)
            buf = BufferGraph.build(self.net_, self.reference_features(ids))
        with torch.no_grad():
            z, graph = query_forward(self.net_, buf, f[0])
            risk, surv = self._heads(z[None], f)
        prompt = f[0, : self.config.dim] if self.config.uses_genomics else torch.zeros(0)
        return WSIOnlyAnswer(
            risk=float(risk[0]),
            survival=None if surv is None else surv[0].numpy().astype(np.float64),
            neighbours=[(ids[j], w) for j, w in query_neighbours(graph, k)],
            genomics_prompt=prompt.numpy().astype(np.float32),
            z=z.numpy().astype(np.float32),
        )

    def reference_features(self, patient_ids: list[str]) -> Tensor:
        """Authentic fused features (n, f_dim) of known reference patients."""
        pos = {p: i for i, p in enumerate(self.reference_ids_)}
        missing = [p for p in patient_ids if p not in pos]
        if missing:
            raise InputError(f"candidate patients unknown to this model version: {missing[:5]}",
                             fix="pass ids from the version's patient_embeddings ('fused')")
        return self.reference_fused_[[pos[p] for p in patient_ids]]

    # ----------------------------------------------------------------- persistence
    def save_version(self, store: Any, cohort: str | None) -> str:
        from casegraph.models.msrl.artifacts import save_version

        return save_version(self, store, cohort)

    @classmethod
    def load_version(cls, store: Any, version_id: str) -> MSRLModel:
        from casegraph.models.msrl.artifacts import load_version

        return load_version(store, version_id)
