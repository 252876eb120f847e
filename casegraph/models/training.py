"""A discrete-time (NLL) training loop shared by the neural baselines.

Subclasses say how to build the network and how to turn a CohortData into batches; this
class owns bins, labels, seeding, the optimiser loop and honest epoch selection:

- ``select="last"`` (default): the last epoch's weights, no peeking at any evaluation data.
- ``select="inner"``: carve ``inner_fraction`` of the *training* fold (stratified by event,
  seeded) as an inner validation set, train on the rest, keep the epoch with the best inner
  Harrell's C.
- ``select="eval"``: keep the epoch with the best C-index on the ``valid`` data passed to
  ``fit`` (the evaluation fold). Optimistic, as some papers report; the CV runner labels it.

Sampling: ``sampler="shuffle"`` (each patient once per epoch) or ``"balanced"`` (MCAT's
``--weighted_sample``: draws with replacement, classes = time bin x censoring equally likely).

Devices and ranks: ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:1``) is where the network
trains; a saved model loads on that device when the machine has it, else on the CPU. Under
``torchrun`` (``distributed=True``, the default) every optimiser step's patients are split
over the ranks and DDP all-reduces the gradients (:mod:`casegraph.models.distributed`).
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from casegraph.models import distributed as ddp
from casegraph.models.base import Prediction
from casegraph.models.data import CohortData
from casegraph.models.losses import nll_survival_loss, risk_from_survival, survival_from_logits
from casegraph.models.metrics import harrell_c
from casegraph.models.preprocess import GenomicsPreprocessor
from casegraph.models.targets import bin_edges, discretize
from casegraph.models.weights_file import array, load_weights, save_weights
from casegraph.runtime import loading_device, pick_device, seed_everything

SELECTIONS = ("last", "inner", "eval")
SAMPLERS = ("shuffle", "balanced")


class DiscreteSurvivalModel(ABC):
    """Base of NLL-trained models. The network maps a batch to (logits (B, K), embedding (B, d))."""

    name = "discrete"

    def __init__(self, *, epochs: int = 20, lr: float = 2e-4, weight_decay: float = 1e-5,
                 batch_size: int = 32, alpha: float = 0.0, n_bins: int = 4, l1: float = 0.0,
                 select: str = "last", inner_fraction: float = 0.2, sampler: str = "shuffle",
                 bin_edges: npt.ArrayLike | None = None, seed: int = 0,
                 device: str = "auto", distributed: bool = True) -> None:
        if select not in SELECTIONS:
            raise ValueError(f"unknown select {select!r}; choose among: {', '.join(SELECTIONS)}")
        self.epochs, self.lr, self.weight_decay = epochs, lr, weight_decay
        self.batch_size, self.alpha, self.n_bins, self.l1 = batch_size, alpha, n_bins, l1
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose among: {', '.join(SAMPLERS)}")
        self.select, self.inner_fraction, self.sampler = select, inner_fraction, sampler
        self.bin_edges = None if bin_edges is None else np.asarray(bin_edges, dtype=np.float64)
        self.seed, self.device, self.distributed = seed, device, distributed

    # ------------------------------------------------------------------ subclass hooks
    @abstractmethod
    def _fit_preprocessing(self, train: CohortData) -> None:
        """Fit fold-wise preprocessing on the training fold only."""

    @abstractmethod
    def _source(self, data: CohortData) -> Any:
        """An object with ``batch(idx, device)`` giving the network's input for those rows."""

    @abstractmethod
    def _network_shapes(self, train: CohortData) -> dict[str, int]:
        """The input sizes the network is built from (stored with the weights)."""

    @abstractmethod
    def _network(self, shapes: dict[str, int]) -> nn.Module:
        """The network; forward(batch) -> (logits (B, n_bins), embedding (B, d))."""

    def _l1_parameters(self) -> list[Tensor]:
        return list(self.network_.parameters())

    # ------------------------------------------------------------------ fit / predict
    def fit(self, train: CohortData, valid: CohortData | None = None) -> DiscreteSurvivalModel:
        rank = ddp.current() if self.distributed else None
        ddp.announce_fit(self, train, valid, rank)
        rng = seed_everything(self.seed)
        self.device_ = ddp.rank_device(pick_device(self.device), rank)
        self.world_size_ = 1 if rank is None else rank.world_size
        self.edges_ = self.bin_edges if self.bin_edges is not None else bin_edges(
            train.target, self.n_bins)
        fit_data, select_data = train, None
        if self.select == "inner":
            fit_idx, inner_idx = _inner_split(train, self.inner_fraction, rng)
            fit_data, select_data = train.subset(fit_idx), train.subset(inner_idx)
        elif self.select == "eval":
            if valid is None:
                raise ValueError("select='eval' needs the evaluation data passed as valid")
            select_data = valid
        self._fit_preprocessing(fit_data)
        self.shapes_ = self._network_shapes(fit_data)
        self.network_ = self._network(self.shapes_).to(self.device_)
        trainer = ddp.wrap(self.network_, rank, self.device_)
        labels = torch.as_tensor(discretize(fit_data.target.time, self.edges_))
        events = torch.as_tensor(fit_data.target.event, dtype=torch.float32)
        source = self._source(fit_data)
        optimiser = torch.optim.Adam(self.network_.parameters(), lr=self.lr,
                                     weight_decay=self.weight_decay)
        self.history_: list[dict[str, float]] = []
        best_score, best_state = -math.inf, None
        select_source = None if select_data is None else self._source(select_data)
        for epoch in range(self.epochs):
            loss = self._train_epoch(trainer, source, labels, events, optimiser, rng, rank)
            row = {"epoch": float(epoch), "loss": loss}
            if select_data is not None and select_source is not None:
                score = ddp.leader_value(harrell_c(
                    self._predict_risk(select_source, len(select_data)), select_data.target),
                    rank)
                row["select_c_index"] = score
                if not math.isnan(score) and score > best_score:
                    best_score, best_state = score, copy.deepcopy(self.network_.state_dict())
            self.history_.append(row)
        if best_state is not None:
            self.network_.load_state_dict(best_state)
            self.selected_epoch_ = int(max(self.history_,
                                           key=lambda r: r.get("select_c_index", -1.0))["epoch"])
        else:
            self.selected_epoch_ = self.epochs - 1
        return self

    def _train_epoch(self, trainer: nn.Module, source: Any, labels: Tensor, events: Tensor,
                     optimiser: torch.optim.Optimizer, rng: np.random.Generator,
                     rank: ddp.Rank | None) -> float:
        """One epoch; the mean training loss (NLL + L1 penalty) per drawn patient, the same
        on every rank. ``trainer`` is the network, or its DDP wrapper under torchrun."""
        trainer.train()
        order = (_balanced_order(labels, events, rng) if self.sampler == "balanced"
                 else rng.permutation(len(labels)))
        nll_sum, l1_sum = 0.0, 0.0
        for start in range(0, len(order), self.batch_size):
            step = order[start:start + self.batch_size]
            idx, weights = ddp.share(step, rank)
            logits, _ = trainer(source.batch(idx, self.device_))
            index = torch.as_tensor(idx)
            per_row = nll_survival_loss(logits, labels[index].to(self.device_),
                                        events[index].to(self.device_), alpha=self.alpha,
                                        reduction="none")
            weight = torch.as_tensor(weights, dtype=per_row.dtype, device=per_row.device)
            loss = (per_row * weight).sum() / len(step)  # the step's mean once DDP averages
            if self.l1 > 0:
                penalty = self.l1 * sum((p.abs().sum() for p in self._l1_parameters()),
                                        torch.zeros((), device=self.device_))
                loss = loss + penalty
                l1_sum += float(penalty.detach()) * len(step)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            nll_sum += float((per_row.detach() * (weight > 0)).sum())
        total = float(ddp.sum_over_ranks([nll_sum], rank)[0]) + l1_sum
        return total / max(len(order), 1)

    @torch.no_grad()
    def _forward_all(self, source: Any, n: int) -> tuple[Tensor, Tensor]:
        self.network_.eval()
        logits, embeddings = [], []
        for start in range(0, n, max(self.batch_size, 1)):
            out, emb = self.network_(source.batch(range(start, min(n, start + self.batch_size)),
                                                  self.device_))
            logits.append(out.cpu())
            embeddings.append(emb.cpu())
        return torch.cat(logits), torch.cat(embeddings)

    def _predict_risk(self, source: Any, n: int) -> npt.NDArray[np.float64]:
        logits, _ = self._forward_all(source, n)
        return risk_from_survival(survival_from_logits(logits)[1]).double().numpy()

    def predict(self, data: CohortData) -> Prediction:
        if not hasattr(self, "network_"):
            raise RuntimeError(f"{self.name}: predict called before fit")
        logits, emb = self._forward_all(self._source(data), len(data))
        _, surv = survival_from_logits(logits)
        return Prediction(
            patient_ids=list(data.patient_ids),
            risk=risk_from_survival(surv).double().numpy(),
            survival=surv.double().numpy(),
            embedding=emb.float().numpy(),
            bin_edges=self.edges_.copy(),
        )

    def save(self, path: str | Path) -> None:
        """Options, weights, network shapes, bin edges and the fitted preprocessing, in one
        torch file that loads with ``weights_only=True`` (see :mod:`weights_file`)."""
        if not hasattr(self, "network_"):
            raise RuntimeError(f"{self.name}: save called before fit")
        save_weights(path, self.name, {"options": self.get_options(),
                                       "state_dict": self.network_.state_dict(),
                                       "shapes": self.shapes_, "edges": self.edges_,
                                       "history": self.history_,
                                       "selected_epoch": self.selected_epoch_,
                                       "trained_on": self.trained_on(),
                                       "extra": self._extra_state()})

    def trained_on(self) -> dict[str, Any]:
        """Where the fit ran: its device and how many ranks trained it."""
        return {"device": str(getattr(self, "device_", self.device)),
                "world_size": int(getattr(self, "world_size_", 1))}

    @classmethod
    def load(cls, path: str | Path) -> DiscreteSurvivalModel:
        """A fitted model from :meth:`save` (inference only); nothing is unpickled, so a
        file that is not ours is an InputError."""
        blob = load_weights(path, cls.name)
        model = cls(**blob["options"])
        model.device_ = loading_device(model.device)
        model.world_size_ = int(blob.get("trained_on", {}).get("world_size", 1))
        model.edges_ = array(blob["edges"])
        model.shapes_ = {k: int(v) for k, v in blob["shapes"].items()}
        model.history_ = list(blob["history"])
        model.selected_epoch_ = int(blob["selected_epoch"])
        model._set_extra_state(blob["extra"])
        model.network_ = model._network(model.shapes_)
        model.network_.load_state_dict(blob["state_dict"])  # tensors arrive on the CPU
        model.network_.to(model.device_)
        return model

    def save_files(self, folder: Path) -> None:
        """The model-version contract: this model's files in a version folder."""
        self.save(Path(folder) / WEIGHTS_FILE)

    @classmethod
    def load_files(cls, folder: Path) -> DiscreteSurvivalModel:
        return cls.load(Path(folder) / WEIGHTS_FILE)

    def get_options(self) -> dict[str, Any]:
        return constructor_options(self)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _set_extra_state(self, extra: dict[str, Any]) -> None:
        """Restore what :meth:`_extra_state` saved (nothing here)."""
        del extra


WEIGHTS_FILE = "weights.pt"


def constructor_options(model: object) -> dict[str, Any]:
    """The keyword-only constructor options of ``model`` along its class hierarchy, read
    back from the attributes of the same name (scikit-learn style)."""
    import inspect

    names: set[str] = set()
    for klass in type(model).__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        params = inspect.signature(init).parameters
        names |= {p for p, param in params.items()
                  if param.kind is inspect.Parameter.KEYWORD_ONLY}
    return {n: getattr(model, n) for n in sorted(names) if hasattr(model, n)}


def preprocessor_state(pre: GenomicsPreprocessor) -> dict[str, Any]:
    """A fitted :class:`GenomicsPreprocessor` as plain values (for a weights file)."""
    return {"raw_clip": pre.raw_clip, "z_clip": pre.z_clip, "standardize": pre.standardize,
            "mean": list(pre.mean_), "scale": list(pre.scale_), "n_fit": pre.n_fit_}


def preprocessor_from_state(state: dict[str, Any]) -> GenomicsPreprocessor:
    pre = GenomicsPreprocessor(state["raw_clip"], state["z_clip"], bool(state["standardize"]))
    pre.mean_ = [array(m, np.float32) for m in state["mean"]]
    pre.scale_ = [array(s, np.float32) for s in state["scale"]]
    pre.n_fit_ = int(state["n_fit"])
    return pre


def _balanced_order(labels: Tensor, events: Tensor, rng: np.random.Generator
                    ) -> npt.NDArray[np.int64]:
    """MCAT's weighted sampling: n draws with replacement, each (bin, censored) class equally
    likely overall (weight of a patient = n / size of its class)."""
    classes = labels.numpy() * 2 + events.numpy().astype(np.int64)
    _, inverse, counts = np.unique(classes, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    return rng.choice(len(classes), size=len(classes), replace=True, p=weights / weights.sum())


def _inner_split(train: CohortData, fraction: float, rng: np.random.Generator
                 ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Stratified (by event) random split of the training fold into fit / inner-validation."""
    inner: list[int] = []
    for flag in (True, False):
        rows = np.flatnonzero(train.target.event == flag)
        n_inner = round(len(rows) * fraction)
        inner += rng.choice(rows, n_inner, replace=False).tolist() if n_inner else []
    mask = np.zeros(len(train), dtype=bool)
    mask[inner] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)
