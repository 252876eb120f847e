"""Train an MSRL model on a store cohort and save it as a model version in one call.

For the CLI (``casegraph train --model msrl ... --save-version``) and the demo: the model is
fitted on the training part of one fold of a stored split set (so that fold's evaluation
patients stay out of the buffer and can be queried honestly), or on every patient with
slides when ``fold`` is None.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from casegraph.errors import InputError
from casegraph.ingest.store import Store
from casegraph.models.cv import CVConfig, Folds, model_options
from casegraph.models.data import CohortData
from casegraph.models.msrl.model import MSRLModel
from casegraph.models.registry import MODELS, build_model


def train_version(
    store: Store,
    cohort: str | None,
    model: str = "msrl",
    fold: int | None = 0,
    split_set: str = "mcat",
    **options: Any,
) -> str:
    """Fit ``model`` (an MSRL name) and store it; returns the new version id."""
    msrl = build_model(model, **options)
    if not isinstance(msrl, MSRLModel):
        raise InputError(f"model {model!r} is not an MSRL model", column="--model")
    data = CohortData.from_store(store, cohort, group_set=msrl.config.group_set,
                                 require_slides=True)
    if len(data) == 0:
        raise InputError(f"cohort {cohort!r} has no patients with slides in the store")
    if fold is None:
        train, evaluation = data, None
    else:
        folds = store.splits(split_set)
        if fold not in folds:
            raise InputError(f"split set {split_set!r} has no fold {fold}", column="fold",
                             fix=f"folds: {sorted(folds) or 'none (ingest --splits)'}")
        train_ids, eval_ids = (set(ids) for ids in folds[fold])
        # the store's patient order, as the CV runner uses: fold k's Stage-1 checkpoint fits
        train = data.select([p for p in data.patient_ids if p in train_ids])
        evaluation = data.select([p for p in data.patient_ids if p in eval_ids])
    msrl.fit(train, evaluation)
    return msrl.save_version(store, cohort)


def pretrain_folds(data: CohortData, config: CVConfig, folds: Folds,
                   log: Callable[[str], None] = lambda _msg: None) -> None:
    """Stage 1 only, for every selected fold, into the Stage-1 cache (``stage1_cache`` in
    ``config.options``); ``casegraph train --stage finetune`` then reuses them."""
    factory = MODELS.get(config.model)
    for fold, (train_idx, _) in sorted(folds.items()):
        if config.folds is not None and fold not in config.folds:
            continue
        started = time.perf_counter()
        model = factory(**{**model_options(factory, config, None, fold), "stage": "pretrain"})
        model.fit(data.subset(train_idx))
        steps = len(getattr(model, "pretrain_history_", []))
        log(f"fold {fold}: Stage 1 ready ({steps} steps, {time.perf_counter() - started:.1f} s)")
