"""MSRL variants vs baselines with the MCAT 5-fold splits on stores of real TCGA genomics +
simulated bags, at two simulator signal strengths; one process, stores opened read-only.

    .venv/bin/python benchmarks/msrl_cv.py --store 0.5=/path/store_s0.5 --store 0.0=/path/s0 \\
        --cohort blca --models msrl,msrl_h,msrl_multi,snn --folds 0,1,2,3,4 \\
        --option pretrain_steps=50 --option epochs=15

Folds run fold-major (every model and signal on fold 0, then fold 1, ...) so a cut-short run
still compares like with like; each finished fold is appended to the JSON at once.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from casegraph.ingest.store import Store
from casegraph.models.cv import stored_folds
from casegraph.models.data import CohortData
from casegraph.models.evaluate import evaluate_prediction
from casegraph.models.registry import MODELS, build_model, load_model_modules

OUT = Path(__file__).parent / "results" / "msrl_cv.json"


def _options(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", action="append", required=True, help="SIGNAL=DIR")
    parser.add_argument("--cohort", default="blca")
    parser.add_argument("--group-set", default="mcat")
    parser.add_argument("--models", default="msrl,msrl_h,msrl_multi,snn")
    parser.add_argument("--folds", default="0,1,2,3,4")
    parser.add_argument("--option", action="append", default=[],
                        help="KEY=VALUE for the MSRL models (JSON value)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_model_modules()
    msrl_options = _options(args.option)
    datasets = {}
    for spec in args.store:
        signal, _, path = spec.partition("=")
        with Store.open(path, read_only=True) as store:
            data = CohortData.from_store(store, args.cohort, group_set=args.group_set,
                                         require_slides=True)
            datasets[signal] = (data, stored_folds(data, store, "mcat"))
    rows: list[dict[str, Any]] = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["signal"], r["model"], r["fold"], r["cohort"]) for r in rows}
    for fold in [int(f) for f in args.folds.split(",")]:
        for signal, (data, folds) in datasets.items():
            train_idx, eval_idx = folds[fold]
            train, evaluation = data.subset(train_idx), data.subset(eval_idx)
            for name in args.models.split(","):
                if (signal, name, fold, args.cohort) in done:
                    continue
                options = dict(msrl_options) if name.startswith("msrl") else {}
                if "seed" in _params(name):
                    options.setdefault("seed", fold)
                start = time.perf_counter()
                model = build_model(name, **options).fit(train)
                metrics = evaluate_prediction(model.predict(evaluation), train.target,
                                              evaluation.target)
                row = {"cohort": args.cohort, "signal": signal, "model": name, "fold": fold,
                       "seconds": time.perf_counter() - start, "options": options,
                       **{k: float(v) for k, v in metrics.items()}}
                rows.append(row)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(rows, indent=1))
                print(f"fold {fold} signal {signal} {name:<12} c_index {row['c_index']:.4f} "
                      f"({row['seconds']:.0f} s)", flush=True)
    _summary(rows)


def _params(name: str) -> set[str]:
    import inspect

    params = inspect.signature(MODELS.get(name)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {"seed"}
    return set(params)


def _summary(rows: list[dict[str, Any]]) -> None:
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
