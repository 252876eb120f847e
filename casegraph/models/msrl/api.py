"""Train an MSRL model on a store cohort and save it as a model version in one call.

For the CLI (``casegraph train --model msrl ... --save-version``) and the demo: the model is
fitted on the training part of one fold of a stored split set (so that fold's evaluation
patients stay out of the buffer and can be queried honestly), or on every patient with
slides when ``fold`` is None.
"""

from __future__ import annotations

from typing import Any

from casegraph.errors import InputError
from casegraph.ingest.store import Store
from casegraph.models.data import CohortData
from casegraph.models.msrl.model import MSRLModel
from casegraph.models.registry import build_model


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
        known = set(data.patient_ids)
        train_ids, eval_ids = folds[fold]
        train = data.select([p for p in train_ids if p in known])
        evaluation = data.select([p for p in eval_ids if p in known])
    msrl.fit(train, evaluation)
    return msrl.save_version(store, cohort)
