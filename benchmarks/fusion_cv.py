"""5-fold CV of MurreNet, CCL, their ablations and the baselines on one store (issue 4).

Runs every configuration through the same runner as ``casegraph train`` (MCAT splits,
bins from the training fold, last epoch), so results are resumable and also visible to
``casegraph evaluate``. Prints a table of mean ± std C-index and writes
``benchmarks/results/fusion_cv_<cohort>.json``.

Run: ``python -m benchmarks.fusion_cv --store DIR --cohort blca [--only murrenet-F ...]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.common import cv_summary, print_cv_rows, write_json

# CPU settings (documented in docs/results.md): the papers' 20 epochs and MurreNet's
# d = 768 do not fit a shared 2-core CPU; MurreNet's step costs ~20x CCL's.
MURRENET_CPU = {"dim": 64, "max_patches": 128, "epochs": 5}
CCL_CPU = {"epochs": 10}

CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "snn": ("snn", {}),
    "abmil": ("abmil", {}),
    "late_fusion": ("late_fusion", {}),
    **{f"murrenet-{a}": ("murrenet", {**MURRENET_CPU, "ablation": a}) for a in "ABCDEF"},
    "ccl": ("ccl", CCL_CPU),
    "ccl-no-cca": ("ccl", {**CCL_CPU, "use_cca": False}),
    "ccl-no-mkd": ("ccl", {**CCL_CPU, "use_mkd": False}),
    "ccl-no-cgm": ("ccl", {**CCL_CPU, "use_cgm": False}),
    "ccl-none": ("ccl", {**CCL_CPU, "use_cca": False, "use_mkd": False, "use_cgm": False}),
    "ccl-enc1": ("ccl", {**CCL_CPU, "n_encoders": 1}),
    "ccl-enc2": ("ccl", {**CCL_CPU, "n_encoders": 2}),
    "ccl-enc3": ("ccl", {**CCL_CPU, "n_encoders": 3}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True)
    parser.add_argument("--cohort", default="blca")
    parser.add_argument("--only", nargs="+", default=None, help="configuration names")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--folds", type=int, nargs="+", default=None, help="only these folds")
    parser.add_argument("--epochs", type=int, default=None, help="override every config's epochs")
    parser.add_argument("--tag", default="", help="suffix of the JSON file name")
    args = parser.parse_args()

    import torch

    from casegraph.ingest.store import Store
    from casegraph.models.cv import CVConfig, run_cv, stored_folds
    from casegraph.models.data import CohortData
    from casegraph.models.registry import load_model_modules
    from casegraph.models.results import ResultStore

    torch.set_num_threads(args.threads)
    load_model_modules()
    names = args.only or list(CONFIGS)
    rows: list[dict[str, Any]] = []
    with Store.open(args.store, create=False) as store:
        # every model sees the same patients: those with slides
        data = CohortData.from_store(store, args.cohort, require_slides=True)
        folds = stored_folds(data, store, "mcat")
        results = ResultStore(store)
        for name in names:
            model, options = CONFIGS[name]
            if args.epochs is not None:
                options = {**options, "epochs": args.epochs}
            config = CVConfig(model=model, cohort=args.cohort, options=dict(options),
                              folds=args.folds)
            started = time.perf_counter()

            def log(message: str, n: str = name) -> None:
                print(f"[{n}] {message}", flush=True)

            fold_results = run_cv(data, config, folds, results=results, log=log)
            rows.append({"name": name, "model": model, "options": options,
                         "run_id": config.run_id(),
                         **cv_summary(results.fold_results(config.run_id())),
                         "seconds": time.perf_counter() - started,
                         "new_folds": len(fold_results)})
            print(f"[{name}] c-index {rows[-1]['c_index_mean']:.4f} ± "
                  f"{rows[-1]['c_index_std']:.4f}", flush=True)
    print_cv_rows(f"5-fold CV on {args.cohort} (simulated bags)", rows)
    suffix = f"_{args.tag}" if args.tag else ("" if args.only is None else "_" + "_".join(names)[:60])
    write_json(f"fusion_cv_{args.cohort}{suffix}", {
        "store": args.store, "rows": rows, "murrenet_settings": MURRENET_CPU,
        "ccl_settings": CCL_CPU, "folds": args.folds or "all"})


if __name__ == "__main__":
    main()
