"""MSRL variants, ablations and baselines under 5-fold CV on stores of real TCGA genomics +
simulated bags (or synthetic cohorts), at several simulator signal strengths; stores are
opened read-only, so several runs may share them.

    .venv/bin/python benchmarks/msrl_cv.py --store 0.5=/path/store_s05 --store 0.0=/path/s00 \\
        --cohort blca --configs msrl,msrl_h,msrl_multi,snn,abmil-mean,late_fusion-mean \\
        --folds 0,1,2,3,4 --option pretrain_steps=50 --option epochs=10 --out results.json

``--configs`` takes names of :data:`CONFIGS` (a model + its options); ``--option`` applies
to every MSRL configuration except where an ablation preset fixes that option
(``msrl_random_gsl`` keeps ``pretrain_steps=0``). Folds run fold-major (every configuration and signal on fold
0, then fold 1, ...) so a cut-short run still compares like with like; each finished fold
is appended to the JSON at once and a re-run skips what is there (the job resumes).
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch

from casegraph.ingest.store import Store
from casegraph.models.cv import stored_folds
from casegraph.models.data import CohortData
from casegraph.models.evaluate import evaluate_prediction
from casegraph.models.msrl import ABLATIONS
from casegraph.models.registry import build_model, load_model_modules

OUT = Path(__file__).parent / "results" / "msrl_cv.json"

# label -> (registered model, its options); MSRL rows also get the --option values
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "snn": ("snn", {}),
    "abmil": ("abmil", {}),
    "abmil-mean": ("abmil", {"pooling": "mean"}),
    # issue 16: the WSI-only baselines on MSRL's budget with inner-validation epochs, and
    # the two retrieval baselines (registry presets / models, their defaults)
    "abmil_tuned": ("abmil_tuned", {}),
    "abmil_mean_tuned": ("abmil_mean_tuned", {}),
    "retrieval_impute": ("retrieval_impute", {}),
    "neighbour_km": ("neighbour_km", {}),
    "msrl_shuffled_buffer": ("msrl_shuffled_buffer", {}),
    "late_fusion-mean": ("late_fusion", {"pooling": "mean"}),
    "msrl": ("msrl", {}),
    "msrl_h": ("msrl_h", {}),
    "msrl_multi": ("msrl_multi", {}),
    "msrl_knn_cosine": ("msrl_knn_cosine", {}),
    "msrl_knn_euclidean": ("msrl_knn_euclidean", {}),
    "msrl_random_gsl": ("msrl_random_gsl", {}),
    "msrl_online_buffer": ("msrl_online_buffer", {}),
    "msrl_readout_z": ("msrl", {"readout": "z"}),  # prediction from the graph output alone
    **{f"msrl_buffer{round(100 * f)}": ("msrl", {"buffer_fraction": f})
       for f in (0.0, 0.25, 0.5, 0.75)},
}


def _options(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _config(label: str, msrl_options: dict[str, Any], fold: int) -> tuple[str, dict[str, Any]]:
    if label not in CONFIGS:
        raise SystemExit(f"unknown configuration {label!r}; choose among: {', '.join(CONFIGS)}")
    model, options = CONFIGS[label]
    shared = {k: v for k, v in msrl_options.items() if k not in ABLATIONS.get(model, {})}
    options = {**(shared if model.startswith("msrl") else {}), **options}
    options.setdefault("seed", fold)
    return model, options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", action="append", required=True, help="SIGNAL=DIR")
    parser.add_argument("--cohort", default="blca")
    parser.add_argument("--group-set", default="mcat")
    parser.add_argument("--configs", default="msrl,msrl_h,msrl_multi,snn")
    parser.add_argument("--folds", default="0,1,2,3,4")
    parser.add_argument("--option", action="append", default=[],
                        help="KEY=VALUE for the MSRL models (JSON value)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--stage1-cache", type=Path, default=None,
                        help="share MSRL Stage-1 checkpoints here (Stage-2-only variants reuse)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_model_modules()
    msrl_options = _options(args.option)
    if args.stage1_cache is not None:
        msrl_options["stage1_cache"] = str(args.stage1_cache)
    with ExitStack() as stack:  # stores stay open: bag models read summaries lazily
        datasets = {}
        for spec in args.store:
            signal, _, path = spec.partition("=")
            store = stack.enter_context(Store.open(path, read_only=True))
            data = CohortData.from_store(store, args.cohort, group_set=args.group_set,
                                         require_slides=True)
            datasets[signal] = (data, stored_folds(data, store, "mcat"))
        rows = run_folds(args, datasets, msrl_options)
    summarise(rows)


def run_folds(args: argparse.Namespace, datasets: dict[str, Any],
              msrl_options: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["signal"], r["model"], r["fold"], r["cohort"]) for r in rows}
    for fold in [int(f) for f in args.folds.split(",")]:
        for signal, (data, folds) in datasets.items():
            train_idx, eval_idx = folds[fold]
            train, evaluation = data.subset(train_idx), data.subset(eval_idx)
            for label in args.configs.split(","):
                if (signal, label, fold, args.cohort) in done:
                    continue
                model_name, options = _config(label, msrl_options, fold)
                start = time.perf_counter()
                model = build_model(model_name, **options).fit(train)
                metrics = evaluate_prediction(model.predict(evaluation), train.target,
                                              evaluation.target)
                kept = {k: v for k, v in options.items() if k != "stage1_cache"}
                row = {"cohort": args.cohort, "signal": signal, "model": label, "fold": fold,
                       "seconds": time.perf_counter() - start, "options": kept,
                       **{k: float(v) for k, v in metrics.items()}}
                rows.append(row)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(rows, indent=1))
                print(f"{args.cohort} fold {fold} signal {signal} {label:<20} "
                      f"c_index {row['c_index']:.4f} ({row['seconds']:.0f} s)", flush=True)
    return rows


def summarise(rows: list[dict[str, Any]]) -> None:
    keys = sorted({(r["cohort"], r["signal"], r["model"]) for r in rows})
    print("| cohort | signal | model | C-index (mean ± sd) | folds |")
    print("|---|---|---|---|---|")
    for cohort, signal, model in keys:
        vals = [r["c_index"] for r in rows
                if (r["cohort"], r["signal"], r["model"]) == (cohort, signal, model)]
        print(f"| {cohort} | {signal} | {model} | {np.mean(vals):.3f} ± {np.std(vals):.3f} "
              f"| {len(vals)} |")


if __name__ == "__main__":
    main()
