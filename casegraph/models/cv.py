"""The cross-validation runner behind ``casegraph train``.

Folds are patient-level: the stored split set (``"mcat"``: MCAT's five folds, restricted to
the patients loaded) or a seeded stratified k-fold on event x time quartile. A run is
identified by a hash of its configuration; each finished fold is committed to the store
(metrics + predictions in one transaction), so re-running the same configuration after an
interruption skips finished folds. Model checkpoints go to ``checkpoint_dir/<run>/fold_k.pt``
when the model can save itself.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from casegraph.errors import InputError, StoreError
from casegraph.ingest.outcomes import check_endpoint
from casegraph.ingest.store import Store
from casegraph.models.base import Prediction, SurvivalModel
from casegraph.models.data import CohortData
from casegraph.models.evaluate import evaluate_prediction
from casegraph.models.registry import MODELS, load_model_modules
from casegraph.models.results import FoldResult, ResultStore
from casegraph.models.targets import BIN_SOURCES, bin_edges, discretize
from casegraph.models.training import SELECTIONS
from casegraph.runtime import progress

SPLIT_KINDS = ("mcat", "k-fold")
Folds = dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]


# model options that say how to run, not what to fit: they do not change a run's identity
RUNTIME_OPTIONS = frozenset({"stage1_cache", "stage"})


@dataclass
class CVConfig:
    """Everything that defines a run (its hash is the run id)."""

    model: str
    cohort: str
    splits: str = "mcat"
    n_folds: int = 5
    seed: int = 0
    bins: str = "train"
    n_bins: int = 4
    select: str = "last"
    options: dict[str, Any] = field(default_factory=dict)
    folds: list[int] | None = None  # run only these folds (None = all)
    group_set: str = "mcat"
    data: str = ""  # fingerprint of the cohort data and fold membership (for_data)
    endpoint: str = "OS"  # the outcome the folds are scored on: OS, DSS, PFI, DFI
    task: str = "survival"  # or "classification" of ``label``
    label: str | None = None  # classification: the table column predicted

    def for_data(self, data: CohortData, folds: Folds) -> CVConfig:
        """This configuration bound to the data it runs on: any change of the patients,
        their outcomes, genomic columns or values, slides, or fold membership changes the
        run id, so a run never reuses another run's folds."""
        return replace(self, data=data_fingerprint(data, folds))

    def validate(self) -> None:
        if self.bins not in BIN_SOURCES:
            raise InputError(f"unknown bins {self.bins!r}; choose among: {', '.join(BIN_SOURCES)}",
                             column="--bins")
        check_endpoint(self.endpoint)
        if self.task not in TASKS:
            raise InputError(f"unknown task {self.task!r}; choose among: {', '.join(TASKS)}",
                             column="--task")
        if (self.task == "classification") != (self.label is not None):
            raise InputError("--task classification and --label COLUMN go together",
                             column="--label", fix="give both, or neither")
        if self.task == "classification" and self.select not in ("last", "inner"):
            raise InputError(f"classification selects epochs by last or inner, not "
                             f"{self.select!r}", column="--select", fix="use --select inner")
        if self.select not in SELECTIONS:
            raise InputError(f"unknown selection {self.select!r}; choose among: "
                             f"{', '.join(SELECTIONS)}", column="--select")

    def run_id(self) -> str:
        payload = {k: v for k, v in asdict(self).items()
                   if k != "folds" and not _default_identity(k, v)}
        payload["options"] = {k: v for k, v in self.options.items() if k not in RUNTIME_OPTIONS}
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
        return f"{self.model}-{self.cohort}-{digest.hexdigest()[:10]}"


def _default_identity(name: str, value: object) -> bool:
    """Fields added after runs were stored, at their default: left out of the hash so a
    run stored before them keeps its id (and resumes)."""
    return name in IDENTITY_DEFAULTS and IDENTITY_DEFAULTS[name] == value


IDENTITY_DEFAULTS: dict[str, object] = {"endpoint": "OS", "task": "survival", "label": None}
TASKS = ("survival", "classification")


def data_fingerprint(data: CohortData, folds: Folds) -> str:
    """sha256 (16 hex) over what a CV run sees: ids, outcomes, cohorts, gene groups and
    their values, slide files, and each fold's (train, evaluation) rows."""
    digest = hashlib.sha256()
    digest.update(json.dumps([data.patient_ids, data.cohorts, data.groups, data.group_sizes,
                              [[str(p) for p in bags] for bags in data.bags]]).encode())
    digest.update(np.ascontiguousarray(data.target.time, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(data.target.event, dtype=bool).tobytes())
    for values in data.genomics:
        digest.update(np.ascontiguousarray(values, dtype=np.float32).tobytes())
    if data.labels is not None:  # classification: the classes and every patient's
        digest.update(json.dumps([data.label_classes, data.labels.tolist()]).encode())
    for fold, (train, evaluation) in sorted(folds.items()):
        digest.update(json.dumps([int(fold), np.asarray(train).tolist(),
                                  np.asarray(evaluation).tolist()]).encode())
    return digest.hexdigest()[:16]


def stored_folds(data: CohortData, store: Store, split_set: str) -> Folds:
    """The store's split set mapped to row indices of ``data`` (unknown ids are dropped)."""
    raw = store.splits(split_set)
    if not raw:
        raise InputError(f"the store has no split set {split_set!r} (it has: "
                         f"{', '.join(store.split_sets()) or 'none'})",
                         fix="ingest the split folder, or use --splits k-fold")
    pos = {p: i for i, p in enumerate(data.patient_ids)}
    folds: Folds = {}
    for fold, (train_ids, eval_ids) in sorted(raw.items()):
        train = np.array(sorted(pos[p] for p in train_ids if p in pos), dtype=np.int64)
        evaluation = np.array(sorted(pos[p] for p in eval_ids if p in pos), dtype=np.int64)
        if len(train) and len(evaluation):
            folds[fold] = (train, evaluation)
    if not folds:
        raise InputError(f"split set {split_set!r} shares no patients with this cohort",
                         fix="check that the splits were ingested for this cohort")
    return folds


def kfold_folds(data: CohortData, n_folds: int = 5, seed: int = 0) -> Folds:
    """Seeded stratified k-fold on event x time quartile (of all times; labels only)."""
    from sklearn.model_selection import StratifiedKFold

    quartiles = discretize(data.target.time, np.concatenate(
        [[0.0], np.quantile(data.target.time, [0.25, 0.5, 0.75]), [np.inf]]))
    strata = quartiles * 2 + data.target.event.astype(np.int64)
    _, counts = np.unique(strata, return_counts=True)
    if counts.min() < n_folds:  # too few per stratum: stratify by event only
        strata = data.target.event.astype(np.int64)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return {k: (np.sort(tr).astype(np.int64), np.sort(ev).astype(np.int64))
            for k, (tr, ev) in enumerate(splitter.split(np.zeros(len(data)), strata))}


def check_no_leak(folds: Folds, patient_ids: list[str]) -> None:
    """Raise when a patient is in both the training and evaluation part of a fold."""
    for fold, (train, evaluation) in folds.items():
        shared = {patient_ids[i] for i in train} & {patient_ids[i] for i in evaluation}
        if shared:
            raise StoreError(f"fold {fold} leaks {len(shared)} patient(s) between training "
                             f"and evaluation, e.g. {sorted(shared)[0]}")


def model_options(factory: Callable[..., SurvivalModel], config: CVConfig,
                   edges: npt.NDArray[np.float64] | None, fold: int) -> dict[str, Any]:
    """User options plus what the runner controls (seed, selection, bins), where accepted."""
    options = dict(config.options)
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    def accepts(name: str) -> bool:
        return takes_any or name in params

    if accepts("seed"):
        options.setdefault("seed", config.seed + fold)
    if accepts("n_bins"):
        options.setdefault("n_bins", config.n_bins)
    if config.select != "last":
        if not accepts("select"):
            raise InputError(f"model {config.model!r} has no epoch selection option",
                             column="--select", fix="use --select last")
        options["select"] = config.select
    if edges is not None:
        if not accepts("bin_edges"):
            raise InputError(f"model {config.model!r} cannot take given bin edges",
                             column="--bins", fix="use --bins train")
        options["bin_edges"] = edges
    return options


def prediction_note(pred: Prediction) -> str | None:
    """A warning for a fold whose prediction cannot rank anyone (e.g. CoxNet's inner CV chose
    the null model): Harrell's C is then 0.500 by construction, not by chance."""
    risk = np.asarray(pred.risk, dtype=np.float64)
    if risk.size > 1 and np.all(np.isfinite(risk)) and np.ptp(risk) <= 1e-12 * max(
            1.0, float(np.abs(risk).max())):
        return "constant risk for every patient (null model): C = 0.500 is no ranking"
    return None


def run_cv(
    data: CohortData,
    config: CVConfig,
    folds: Folds,
    results: ResultStore | None = None,
    checkpoint_dir: Path | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> list[FoldResult]:
    """Train and evaluate ``config.model`` on every fold; finished folds are skipped.
    ``config`` is bound to ``data`` and ``folds`` (its ``data`` fingerprint is set), so
    ``config.run_id()`` afterwards names this run."""
    config.validate()
    if check_endpoint(config.endpoint) != data.endpoint:
        raise InputError(f"the run is configured for endpoint {config.endpoint} but the data "
                         f"hold {data.endpoint}", column="--endpoint")
    config.data = data_fingerprint(data, folds)  # the caller's config names this run after
    check_no_leak(folds, data.patient_ids)
    load_model_modules()
    if config.task == "classification":  # an unknown head or option: refused before the
        from casegraph.models.classification import build_classifier  # run is recorded

        build_classifier(config.model, **config.options)
    factory = MODELS.get(config.model)
    run_id = config.run_id()
    if results is not None:
        results.start_run(run_id, {**asdict(config), "run_id": run_id})
    done = results.finished_folds(run_id) if results is not None else set()
    if config.task == "classification":
        return _run_classification(data, config, folds, results, done, log)
    edges = bin_edges(data.target, config.n_bins) if config.bins == "paper" else None
    out: list[FoldResult] = []
    for fold, (train_idx, eval_idx) in progress(sorted(folds.items()), f"{config.model} CV"):
        if config.folds is not None and fold not in config.folds:
            continue
        if fold in done:
            log(f"fold {fold}: already finished in run {run_id}, skipped")
            continue
        started = time.perf_counter()
        train, evaluation = data.subset(train_idx), data.subset(eval_idx)
        model = factory(**model_options(factory, config, edges, fold))
        model.fit(train, evaluation if config.select == "eval" else None)
        pred: Prediction = model.predict(evaluation)
        metrics = evaluate_prediction(pred, train.target, evaluation.target)
        result = FoldResult(fold=fold, n_train=len(train), n_eval=len(evaluation),
                            metrics=metrics, seconds=time.perf_counter() - started,
                            selected_epoch=getattr(model, "selected_epoch_", None),
                            note=prediction_note(pred))
        if checkpoint_dir is not None and hasattr(model, "save"):
            (checkpoint_dir / run_id).mkdir(parents=True, exist_ok=True)
            model.save(checkpoint_dir / run_id / f"fold_{fold}.pt")
        if results is not None:
            results.save_fold(run_id, result, pred, evaluation.target.time,
                              evaluation.target.event)
        log(f"fold {fold}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            + f" ({result.seconds:.1f} s)" + (f" WARNING: {result.note}" if result.note else ""))
        out.append(result)
    return out


def _run_classification(data: CohortData, config: CVConfig, folds: Folds,
                        results: ResultStore | None, done: set[int],
                        log: Callable[[str], None]) -> list[FoldResult]:
    """The classification folds of a run: fit the head on the training fold (inner
    validation inside it when ``select="inner"``), score accuracy / ROC AUC / macro F1 on
    the evaluation fold. Stored predictions: ``risk`` = the probability of the second
    class for a binary label, else the predicted class code."""
    from casegraph.models.classification import build_classifier, classification_metrics

    if data.labels is None:
        raise InputError(f"the data hold no labels for {config.label!r}", column="--label")
    run_id = config.run_id()
    n_classes = len(data.label_classes)
    out: list[FoldResult] = []
    for fold, (train_idx, eval_idx) in progress(sorted(folds.items()), f"{config.model} CV"):
        if (config.folds is not None and fold not in config.folds) or fold in done:
            if fold in done:
                log(f"fold {fold}: already finished in run {run_id}, skipped")
            continue
        started = time.perf_counter()
        train, evaluation = data.subset(train_idx), data.subset(eval_idx)
        head = build_classifier(config.model, **{"seed": config.seed + fold,
                                                 "select": config.select, **config.options})
        head.fit(train, data.labels[train_idx], n_classes)
        proba = head.predict_proba(evaluation)
        metrics = classification_metrics(data.labels[eval_idx], proba)
        result = FoldResult(fold=fold, n_train=len(train), n_eval=len(evaluation),
                            metrics=metrics, seconds=time.perf_counter() - started,
                            selected_epoch=head.selected_epoch_)
        if results is not None:
            risk = proba[:, 1] if n_classes == 2 else proba.argmax(axis=1).astype(np.float64)
            results.save_fold(run_id, result, Prediction(evaluation.patient_ids, risk),
                              evaluation.target.time, evaluation.target.event)
        log(f"fold {fold}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            + f" ({result.seconds:.1f} s)")
        out.append(result)
    return out
