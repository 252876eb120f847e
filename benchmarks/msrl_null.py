"""Is a WSI-only C below 0.5 at signal 0 an anti-ranking bug or the null's own spread?
(issue 16 §6). On a store whose bags carry no genomic information (``--signal 0``):

- the observed 5-fold C of a WSI-only model (default ``abmil-mean``: cheap, and the grid's
  baseline that sat at 0.47-0.49 on HNSC and STAD);
- its training-fold C (the orientation check: risk = -sum S must rank the cases it was fitted
  on the right way round, > 0.5);
- a permutation null: the same 5 folds after permuting (time, event) across patients, R
  times, so no bag can carry survival information; the observed mean is compared with the
  null's 5-fold means (which contain any pessimistic bias of cross-validated C under a
  null, and nothing else).

    .venv/bin/python benchmarks/msrl_null.py --store DIR --cohort hnsc --permutations 4 \\
        --out benchmarks/results/msrl_null_hnsc.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from casegraph.ingest.store import Store
from casegraph.models.cv import stored_folds
from casegraph.models.data import CohortData
from casegraph.models.metrics import harrell_c
from casegraph.models.registry import build_model, load_model_modules
from casegraph.schema import SurvivalTarget

MODELS: dict[str, tuple[str, dict[str, Any]]] = {"abmil-mean": ("abmil", {"pooling": "mean"})}


def cv_c(data: CohortData, folds: dict[int, Any], label: str) -> tuple[list[float], list[float]]:
    """(held-out C per fold, training-fold C per fold)."""
    name, options = MODELS[label]
    held, fitted = [], []
    for fold, (train_idx, eval_idx) in sorted(folds.items()):
        train, test = data.subset(train_idx), data.subset(eval_idx)
        model = build_model(name, **options, seed=fold).fit(train)
        held.append(harrell_c(model.predict(test).risk, test.target))
        fitted.append(harrell_c(model.predict(train).risk, train.target))
    return held, fitted


def permuted(data: CohortData, seed: int) -> CohortData:
    order = np.random.default_rng(seed).permutation(len(data))
    target = SurvivalTarget.from_arrays(data.target.time[order], data.target.event[order])
    return dataclasses.replace(data, target=target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--model", default="abmil-mean", choices=sorted(MODELS))
    parser.add_argument("--permutations", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_model_modules()
    with Store.open(args.store, read_only=True) as store:
        data = CohortData.from_store(store, args.cohort, require_slides=True)
        folds = stored_folds(data, store, "mcat")
        held, fitted = cv_c(data, folds, args.model)
        null = [float(np.mean(cv_c(permuted(data, seed), folds, args.model)[0]))
                for seed in range(args.permutations)]
    result = {"cohort": args.cohort, "model": args.model, "held_out": held,
              "training_fold": fitted, "null_means": null,
              "observed_mean": float(np.mean(held)),
              "null_mean": float(np.mean(null)), "null_sd": float(np.std(null, ddof=1))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"{args.cohort} {args.model}: held-out {result['observed_mean']:.3f} "
          f"({' '.join(f'{c:.3f}' for c in held)}), training-fold "
          f"{np.mean(fitted):.3f}, permutation null {result['null_mean']:.3f} ± "
          f"{result['null_sd']:.3f} ({' '.join(f'{c:.3f}' for c in null)})")


if __name__ == "__main__":
    main()
