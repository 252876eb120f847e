"""Classification heads for ``casegraph train --task classification --label COLUMN``.

A label is a table column kept at ingest (``store.outcomes.labels``: stage, subtype, a
mutation flag), coded 0..C-1 by sorted class name. Two heads, the survival baselines'
encoders with a C-way linear classifier and a cross-entropy (``balance=True``: weighted by
inverse class frequency in the fitting patients; off by default, docs/models.md has the
measured effect):

- ``snn``: SNN (2 x 256, ELU, AlphaDropout) on every genomic feature, standardised on the
  training fold only;
- ``abmil``: gated-attention MIL over the patient's patches (``pooling="mean"``: the bag
  mean), ``rho`` and the classifier.

Epoch selection is the CV runner's: ``last``, or ``inner`` (a stratified fifth of the
training fold held out; the epoch with the lowest inner-validation loss is kept). The
evaluation fold is never looked at while fitting. MSRL's classification head lives in
:mod:`casegraph.models.msrl` and does not run through this module.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from casegraph.errors import InputError
from casegraph.models.data import CohortData
from casegraph.models.encoders import SNN, GatedAttentionMIL, MeanPoolMIL
from casegraph.models.inputs import BagSource, GenomicsSource
from casegraph.models.preprocess import GenomicsPreprocessor
from casegraph.runtime import pick_device, seed_everything

IntArray = npt.NDArray[np.int64]
SELECTIONS = ("last", "inner")


class _Classifier:
    """Shared loop: ``fit(train, labels, n_classes)``, ``predict_proba(data)`` -> (n, C)."""

    name = "classifier"
    uses_slides = False

    def __init__(self, *, epochs: int = 20, lr: float = 2e-4, weight_decay: float = 1e-5,
                 hidden: int = 256, dropout: float = 0.25, batch_size: int = 32,
                 select: str = "last", inner_fraction: float = 0.2, seed: int = 0,
                 balance: bool = False, device: str = "auto") -> None:
        if select not in SELECTIONS:
            raise InputError(f"classification selects epochs by {' or '.join(SELECTIONS)}, "
                             f"not {select!r}", column="--select", fix="use --select inner")
        self.epochs, self.lr, self.weight_decay = epochs, lr, weight_decay
        self.hidden, self.dropout, self.batch_size = hidden, dropout, batch_size
        self.select, self.inner_fraction, self.seed = select, inner_fraction, seed
        self.balance, self.device = balance, device
        self.selected_epoch_: int | None = None

    # the head's inputs and network
    def _prepare(self, train: CohortData) -> None:
        raise NotImplementedError

    def _source(self, data: CohortData) -> Any:
        raise NotImplementedError

    def _network(self, n_classes: int) -> nn.Module:
        raise NotImplementedError

    def fit(self, train: CohortData, labels: IntArray, n_classes: int) -> _Classifier:
        rng = seed_everything(self.seed)
        self.device_ = pick_device(self.device)
        self.n_classes_ = n_classes
        fit_rows, inner_rows = (np.arange(len(train)), np.array([], dtype=np.int64))
        if self.select == "inner":
            fit_rows, inner_rows = stratified_split(labels, self.inner_fraction, rng)
        self._prepare(train.subset(fit_rows))
        source = self._source(train)
        self.network_ = self._network(n_classes).to(self.device_)
        optimiser = torch.optim.Adam(self.network_.parameters(), lr=self.lr,
                                     weight_decay=self.weight_decay)
        counts = np.bincount(labels[fit_rows], minlength=n_classes).astype(np.float64)
        inverse = np.where(counts > 0, counts.sum() / np.maximum(counts, 1.0) / n_classes, 0.0)
        weights = torch.tensor(inverse if self.balance else np.ones(n_classes),
                               dtype=torch.float32, device=self.device_)
        loss_fn = nn.CrossEntropyLoss(weight=weights)
        target = torch.as_tensor(labels, dtype=torch.long, device=self.device_)
        best: tuple[float, int, dict[str, Tensor]] | None = None
        for epoch in range(self.epochs):
            self.network_.train()
            order = rng.permutation(fit_rows)
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                optimiser.zero_grad()
                loss = loss_fn(self.network_(source.batch(idx, self.device_)), target[idx])
                loss.backward()
                optimiser.step()
            if len(inner_rows):
                inner_loss = self._loss(source, inner_rows, target, loss_fn)
                if best is None or inner_loss < best[0]:
                    best = (inner_loss, epoch, copy.deepcopy(self.network_.state_dict()))
        if best is not None:
            self.network_.load_state_dict(best[2])
            self.selected_epoch_ = best[1]
        return self

    def _loss(self, source: Any, rows: IntArray, target: Tensor, loss_fn: nn.Module) -> float:
        self.network_.eval()
        with torch.no_grad():
            logits = torch.cat([self.network_(source.batch(rows[s:s + self.batch_size],
                                                          self.device_))
                                for s in range(0, len(rows), self.batch_size)])
            return float(loss_fn(logits, target[torch.as_tensor(rows)]))

    def predict_proba(self, data: CohortData) -> npt.NDArray[np.float64]:
        """(n, C) class probabilities, rows in ``data.patient_ids`` order."""
        source = self._source(data)
        rows = np.arange(len(data))
        self.network_.eval()
        with torch.no_grad():
            logits = torch.cat([self.network_(source.batch(rows[s:s + self.batch_size],
                                                          self.device_))
                                for s in range(0, len(rows), self.batch_size)])
        return torch.softmax(logits, dim=1).cpu().numpy().astype(np.float64)


class _GenomicsHead(nn.Module):
    def __init__(self, in_dim: int, hidden: int, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.snn = SNN(in_dim, hidden, n_layers=2, dropout=dropout)
        self.classifier = nn.Linear(hidden, n_classes)

    def forward(self, groups: list[Tensor]) -> Tensor:
        return self.classifier(self.snn(torch.cat(groups, dim=1)))


class SNNClassifier(_Classifier):
    """Genomics SNN with a C-way classifier."""

    name = "snn"

    def _prepare(self, train: CohortData) -> None:
        if not train.genomics or train.genomics_flat().shape[1] == 0:
            raise InputError("the snn classifier needs genomic features; the cohort has none",
                             column="--model", fix="use --model abmil, or ingest genomics")
        self.preprocessor_ = GenomicsPreprocessor().fit(train.genomics)

    def _source(self, data: CohortData) -> GenomicsSource:
        return GenomicsSource(self.preprocessor_.transform(data.genomics))

    def _network(self, n_classes: int) -> nn.Module:
        return _GenomicsHead(sum(int(m.shape[0]) for m in self.preprocessor_.mean_), self.hidden,
                             n_classes, self.dropout)


class _BagHead(nn.Module):
    def __init__(self, in_dim: int, hidden: int, n_classes: int, dropout: float,
                 pooling: str) -> None:
        super().__init__()
        self.pool: nn.Module = (GatedAttentionMIL(in_dim, hidden, dropout) if pooling == "attention"
                                else MeanPoolMIL(in_dim, hidden, dropout))
        self.rho = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(hidden, n_classes)

    def forward(self, bags: list[Tensor]) -> Tensor:
        return self.classifier(self.rho(torch.stack([self.pool(b)[0] for b in bags])))


class ABMILClassifier(_Classifier):
    """Attention-MIL (or mean-pool) over the patient's patches with a C-way classifier."""

    name = "abmil"
    uses_slides = True

    def __init__(self, *, pooling: str = "attention", max_patches: int | None = 4096,
                 batch_size: int = 8, **options: Any) -> None:
        super().__init__(batch_size=batch_size, **options)
        if pooling not in ("attention", "mean"):
            raise InputError(f"unknown pooling {pooling!r}; choose attention or mean",
                             column="--option")
        self.pooling, self.max_patches = pooling, max_patches

    def _prepare(self, train: CohortData) -> None:
        if not train.has_bags():
            raise InputError("the abmil classifier needs slide features; the cohort has none",
                             column="--model", fix="ingest --bags, or use --model snn")

    def _source(self, data: CohortData) -> BagSource:
        return BagSource(data, max_patches=self.max_patches, seed=self.seed,
                         mean_only=self.pooling == "mean")

    def _network(self, n_classes: int) -> nn.Module:
        dim = self._source_dim_
        return _BagHead(dim, self.hidden, n_classes, self.dropout, self.pooling)

    def fit(self, train: CohortData, labels: IntArray, n_classes: int) -> _Classifier:
        self._source_dim_ = BagSource(train, max_patches=1, cache=False).feature_dim()
        return super().fit(train, labels, n_classes)


CLASSIFIERS: dict[str, type[_Classifier]] = {"snn": SNNClassifier, "abmil": ABMILClassifier}


def build_classifier(model: str, **options: Any) -> _Classifier:
    """The classification head of ``model``; an InputError naming the heads there are."""
    if model not in CLASSIFIERS:
        raise InputError(f"model {model!r} has no classification head here; heads: "
                         f"{', '.join(CLASSIFIERS)}", column="--model",
                         fix="MSRL's classification head runs from casegraph.models.msrl")
    try:
        return CLASSIFIERS[model](**options)
    except TypeError as exc:
        raise InputError(f"bad option for the {model} classifier ({exc})",
                         column="--option") from None


def stratified_split(labels: IntArray, fraction: float, rng: np.random.Generator
                     ) -> tuple[IntArray, IntArray]:
    """(fit rows, inner-validation rows): ``fraction`` of each class held out (at least
    one of a class with two or more patients)."""
    inner: list[int] = []
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        n_inner = max(1, round(len(rows) * fraction)) if len(rows) > 1 else 0
        inner += rng.choice(rows, n_inner, replace=False).tolist()
    mask = np.zeros(len(labels), dtype=bool)
    mask[inner] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def classification_metrics(labels: IntArray, proba: npt.NDArray[np.float64]
                           ) -> dict[str, float]:
    """Accuracy, ROC AUC (binary: of the second class; more classes: the mean one-vs-rest
    AUC over classes present with positives and negatives in ``labels``; NaN when none is)
    and macro F1 over every class of ``proba``'s columns."""
    from sklearn.metrics import f1_score, roc_auc_score

    predicted = proba.argmax(axis=1)
    n_classes = proba.shape[1]
    aucs = []
    for cls in (range(1, 2) if n_classes == 2 else range(n_classes)):
        positive = labels == cls
        if positive.any() and (~positive).any():
            aucs.append(float(roc_auc_score(positive, proba[:, cls])))
    return {"accuracy": float(np.mean(predicted == labels)),
            "roc_auc": float(np.mean(aucs)) if aucs else float("nan"),
            "macro_f1": float(f1_score(labels, predicted, labels=list(range(n_classes)),
                                       average="macro", zero_division=0))}
