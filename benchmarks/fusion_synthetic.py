"""Fusion vs unimodal baselines on a synthetic cohort (issue 4 evidence).

Same runner as ``casegraph train`` and ``benchmarks.fusion_cv`` (the cohort's own five
splits, bins from the training fold, last epoch). On ``casegraph simulate --synthetic``
cohorts the bags carry survival information in proportion to ``signal``
(docs/simulator.md), so this measures whether fusion beats the better unimodal model.
Writes ``benchmarks/results/fusion_synthetic_<tag>.json``.

Run: ``python -m benchmarks.fusion_synthetic --store DIR --tag s05 [--only snn ccl ...]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.common import cv_summary, print_cv_rows, write_json
from benchmarks.fusion_cv import CCL_CPU, MURRENET_CPU
from benchmarks.fusion_cv import CONFIGS as FUSION_CV_CONFIGS

CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    **FUSION_CV_CONFIGS,  # baselines, MurreNet rows A-F, CCL and its ablations
    "abmil-mean": ("abmil", {"pooling": "mean"}),
    "late_fusion-mean": ("late_fusion", {"pooling": "mean"}),
    "ccl": ("ccl", CCL_CPU),
    "murrenet": ("murrenet", MURRENET_CPU),
    # the paper's 20 epochs, every patch of these 256-patch bags (still d = 64)
    "murrenet-20ep": ("murrenet", {**MURRENET_CPU, "epochs": 20, "max_patches": 256}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True)
    parser.add_argument("--cohort", default="synthetic")
    parser.add_argument("--only", nargs="+", default=None, help="configuration names")
    parser.add_argument("--group-set", default="signatures", help="gene-group set of the store")
    parser.add_argument("--tag", required=True, help="suffix of the JSON file name")
    parser.add_argument("--note", default="", help="free text stored in the JSON (settings)")
    args = parser.parse_args()

    import torch

    from casegraph.ingest.store import Store
    from casegraph.models.cv import CVConfig, run_cv, stored_folds
    from casegraph.models.data import CohortData
    from casegraph.models.registry import load_model_modules
    from casegraph.models.results import ResultStore

    torch.set_num_threads(1)
    load_model_modules()
    rows: list[dict[str, Any]] = []
    with Store.open(args.store, create=False) as store:
        data = CohortData.from_store(store, args.cohort, group_set=args.group_set,
                                     require_slides=True)
        folds = stored_folds(data, store, "mcat")
        results = ResultStore(store)
        for name in args.only or list(CONFIGS):
            model, options = CONFIGS[name]
            config = CVConfig(model=model, cohort=args.cohort, options=dict(options))
            started = time.perf_counter()
            def log(message: str, n: str = name) -> None:
                print(f"[{n}] {message}", flush=True)

            run_cv(data, config, folds, results=results, log=log)
            rows.append({"name": name, "model": model, "options": options,
                         "run_id": config.run_id(),
                         **cv_summary(results.fold_results(config.run_id())),
                         "seconds": time.perf_counter() - started})
            print(f"[{name}] c-index {rows[-1]['c_index_mean']:.4f} ± "
                  f"{rows[-1]['c_index_std']:.4f}", flush=True)
            write_json(f"fusion_synthetic_{args.tag}", {
                "store": args.store, "note": args.note, "rows": rows})
    print_cv_rows(f"5-fold CV on {args.cohort} ({args.tag})", rows)


if __name__ == "__main__":
    main()
