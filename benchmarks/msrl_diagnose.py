"""Where does MSRL's WSI-only answer lose the genomic information the slide carries?
(issue 16 §2). Per CV fold of one store (MCAT-style splits, evaluation fold never seen):

(a) the Inductor's prompt g~ vs the held-out authentic g: R² of g~ against the target
    branch's genomics embedding, and per gene group the held-out R² of a ridge map
    (fitted on the training fold) from g~ -- and, as the ceiling, from the bag mean --
    to the group's leading principal components (PCA of the training fold);
(b) the buffer's genomics shuffled across buffer cases on the fitted model: the change of
    the predictions (mean |Δ risk| / sd(risk), Spearman) and of C;
(c) readouts: [Z, f] (default), [Z, f] with f dropped from the readout (``skip_dropout``),
    a gated [Z, f], Z alone with a longer schedule;
(d) the paper's budget (100 + 20) with the epoch chosen on an inner validation split of
    the training fold;
(e) no Stage 1 (``pretrain_steps=0``);
and the WSI-only ABMIL baselines (default and tuned presets). Rows are appended to the
JSON after every fit; a rerun skips what is there.

    .venv/bin/python benchmarks/msrl_diagnose.py --store DIR --cohort C --group-set G \\
        --folds 0,1,2 --out benchmarks/results/msrl_diagnose_<tag>.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge

from casegraph.ingest.store import Store
from casegraph.models.cv import stored_folds
from casegraph.models.data import CohortData
from casegraph.models.evaluate import evaluate_prediction
from casegraph.models.msrl import MSRLModel
from casegraph.models.msrl.inputs import bag_means, genomics_tensors, wsi_inputs
from casegraph.models.registry import build_model, load_model_modules

# the diagnosis runs MSRL small: d = 128, half the Stage-1/Stage-2 budget (CPU shared by 8)
SMALL = {"dim": 128, "proj_dim": 64, "pretrain_steps": 50, "epochs": 10}
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "msrl": ("msrl", {}),
    "msrl_skipdrop50": ("msrl", {"skip_dropout": 0.5}),
    "msrl_gated": ("msrl", {"readout": "z_gated"}),
    "msrl_z_20ep": ("msrl", {"readout": "z", "epochs": 20}),
    "msrl_paper_inner": ("msrl", {"pretrain_steps": 100, "epochs": 20, "inner_valid": 0.2,
                                  "patience": 5}),
    "msrl_inner": ("msrl", {"epochs": 20, "inner_valid": 0.2, "patience": 5}),
    "msrl_skipdrop50_inner": ("msrl", {"skip_dropout": 0.5, "epochs": 20, "inner_valid": 0.2,
                                       "patience": 5}),
    "msrl_no_stage1": ("msrl", {"pretrain_steps": 0}),
    "abmil-mean": ("abmil", {"pooling": "mean"}),
    "abmil_mean_tuned": ("abmil_mean_tuned", {}),
    "abmil": ("abmil", {}),
    "abmil_tuned": ("abmil_tuned", {}),
}
N_PCS = 4


def r2(pred: np.ndarray, true: np.ndarray) -> float:
    """Pooled R² over columns: 1 - SSE / SST around the true columns' means."""
    sst = float(((true - true.mean(axis=0)) ** 2).sum())
    return 1.0 - float(((pred - true) ** 2).sum()) / sst if sst > 0 else float("nan")


def prompt_r2(model: MSRLModel, train: CohortData, test: CohortData) -> dict[str, Any]:
    """(a): how much of the held-out authentic genomics the prompt g~ carries."""
    net, target = model.net_, model.target_
    with torch.no_grad():
        prompts = [net.prompt(net.encode_wsi(wsi_inputs(d, "mean_mlp"))).numpy()
                   for d in (train, test)]
        g_test = target.encode_genomics(
            genomics_tensors(model.preprocessor_.transform(test.genomics))).numpy()
    out: dict[str, Any] = {"r2_prompt_vs_g": r2(prompts[1], g_test), "groups": {}}
    means = [bag_means(d) for d in (train, test)]
    groups_train = model.preprocessor_.transform(train.genomics)
    groups_test = model.preprocessor_.transform(test.genomics)
    for j, name in enumerate(train.groups):
        pca = PCA(n_components=min(N_PCS, groups_train[j].shape[1])).fit(groups_train[j])
        y_train, y_test = pca.transform(groups_train[j]), pca.transform(groups_test[j])
        row = {}
        for source, (x_train, x_test) in {"prompt": prompts, "bag_mean": means}.items():
            fit = Ridge(alpha=1.0).fit(x_train, y_train)
            row[source] = r2(fit.predict(x_test), y_test)
        out["groups"][name] = row
    return out


def shuffled_buffer(model: MSRLModel, test: CohortData, seed: int) -> dict[str, float]:
    """(b): the same fitted model with its buffer's genomics permuted across cases."""
    before = model.predict(test).risk
    model.shuffle_buffer_genomics(seed)
    after = model.predict(test).risk
    return {"rel_change": float(np.mean(np.abs(after - before)) / (np.std(before) + 1e-12)),
            "spearman": float(spearmanr(before, after)[0]), "risk": after.tolist()}


def fit_one(label: str, train: CohortData, test: CohortData, fold: int,
            cache: Path) -> dict[str, Any]:
    name, options = CONFIGS[label]
    options = {**options, "seed": fold}
    if name.startswith("msrl"):
        options = {**SMALL, **options, "stage1_cache": str(cache)}
    start = time.perf_counter()
    model = build_model(name, **options).fit(train)
    pred = model.predict(test)
    metrics = evaluate_prediction(pred, train.target, test.target)
    row: dict[str, Any] = {"model": label, "fold": fold, "seconds": time.perf_counter() - start,
                           "options": {k: v for k, v in options.items() if k != "stage1_cache"},
                           **{k: float(v) for k, v in metrics.items()}}
    if isinstance(model, MSRLModel):
        row["selected_epoch"] = getattr(model, "selected_epoch_", None)
        row["selection_scores"] = getattr(model, "selection_scores_", None)
        if label == "msrl":
            row["prompt"] = prompt_r2(model, train, test)
        shuffled = shuffled_buffer(model, test, seed=fold)
        fake = type(pred)(patient_ids=pred.patient_ids, risk=np.asarray(shuffled.pop("risk")))
        row["shuffled"] = {**shuffled, "c_index": float(
            evaluate_prediction(fake, train.target, test.target)["c_index"])}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--group-set", default="mcat")
    parser.add_argument("--folds", default="0,1,2")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--small", type=json.loads, default={},
                        help="JSON overrides of the MSRL settings (default: SMALL)")
    args = parser.parse_args()
    SMALL.update(args.small)
    torch.set_num_threads(1)
    load_model_modules()
    rows: list[dict[str, Any]] = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["model"], r["fold"]) for r in rows}
    with Store.open(args.store, read_only=True) as store:
        data = CohortData.from_store(store, args.cohort, group_set=args.group_set,
                                     require_slides=True)
        folds = stored_folds(data, store, "mcat")
        cache = args.out.with_suffix(".stage1")
        for fold in [int(f) for f in args.folds.split(",")]:
            train, test = data.subset(folds[fold][0]), data.subset(folds[fold][1])
            for label in args.configs.split(","):
                if (label, fold) in done:
                    continue
                row = {"cohort": args.cohort, **fit_one(label, train, test, fold, cache)}
                rows.append(row)
                args.out.write_text(json.dumps(rows, indent=1))
                extra = f" shuffled {row['shuffled']['c_index']:.3f}" if "shuffled" in row else ""
                print(f"{args.cohort} fold {fold} {label:<22} C {row['c_index']:.3f}{extra} "
                      f"({row['seconds']:.0f} s)", flush=True)
    summarise(rows)


def summarise(rows: list[dict[str, Any]]) -> None:
    labels = [c for c in CONFIGS if any(r["model"] == c for r in rows)]
    base = {r["fold"]: r["c_index"] for r in rows if r["model"] == "abmil-mean"}
    print("| config | folds | C | Δ vs abmil-mean (sd, won) | shuffled-buffer C | "
          "Δrisk/sd | Spearman | selected epoch |")
    print("|---|---|---|---|---|---|---|---|")
    for label in labels:
        mine = [r for r in rows if r["model"] == label]
        c = np.array([r["c_index"] for r in mine])
        diffs = np.array([r["c_index"] - base[r["fold"]] for r in mine if r["fold"] in base])
        delta = (f"{diffs.mean():+.3f} ({diffs.std():.3f}, {int((diffs > 0).sum())}/{len(diffs)})"
                 if len(diffs) else "–")
        sh = [r["shuffled"] for r in mine if "shuffled" in r]
        shuf = (f"{np.mean([s['c_index'] for s in sh]):.3f} | "
                f"{np.mean([s['rel_change'] for s in sh]):.3f} | "
                f"{np.mean([s['spearman'] for s in sh]):.3f}") if sh else "– | – | –"
        epochs = [r.get("selected_epoch") for r in mine if r.get("selected_epoch") is not None]
        print(f"| {label} | {len(mine)} | {c.mean():.3f} ± {c.std():.3f} | {delta} | {shuf} | "
              f"{','.join(str(e) for e in epochs) or '–'} |")
    prompts = [r["prompt"] for r in rows if "prompt" in r]
    if prompts:
        print(f"\nR² prompt g~ vs held-out g: "
              f"{np.mean([p['r2_prompt_vs_g'] for p in prompts]):.3f}")
        print("| gene group | R² from prompt g~ | R² from bag mean (ceiling) |\n|---|---|---|")
        for group in prompts[0]["groups"]:
            vals = {s: np.mean([p["groups"][group][s] for p in prompts])
                    for s in ("prompt", "bag_mean")}
            print(f"| {group} | {vals['prompt']:.3f} | {vals['bag_mean']:.3f} |")


if __name__ == "__main__":
    main()
