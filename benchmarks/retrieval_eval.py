"""Retrieval evaluation on the shared TCGA cohorts with simulated bags (docs/results.md).

For each cohort: ingest the real table (survival, genomics, MCAT gene groups, MCAT
splits) into a fresh store, simulate one bag per slide (``--patches`` x ``--dim``,
signal 0.5: histology carries part of the genomic signal), then for the first
``--folds`` MCAT folds let every held-out patient query the training patients with
WSI-only embedding kNN, WSI-only MSRL (FAISS candidates + GSL), and multimodal
(authentic genomics) retrieval. See casegraph.retrieval.evaluation for the metrics.

    .venv/bin/python benchmarks/retrieval_eval.py [--cohorts blca,gbmlgg] [--folds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import print_table, write_json
from casegraph.config import shared_data_path
from casegraph.ingest.pipeline import IngestRequest, ingest
from casegraph.ingest.signatures import read_gene_groups
from casegraph.ingest.simulate import simulate_bags
from casegraph.ingest.splits import read_split_dir
from casegraph.ingest.store import Store
from casegraph.ingest.tables import read_mcat_table
from casegraph.models.cv import stored_folds
from casegraph.models.data import CohortData
from casegraph.retrieval.evaluation import evaluate_fold, summarise

MSRL_OPTIONS = {"dim": 32, "proj_dim": 16, "batch_size": 32, "pretrain_steps": 30,
                "epochs": 5, "seed": 0}
SHOWN = ["harrell", "uno", "model_harrell", "model_uno", "acc@10", "mv@10", "mmv@10",
         "recall@10", "risk_abs_diff", "risk_sd"]


def build_store(cohort: str, work: Path, patches: int, dim: int) -> Path:
    tcga = shared_data_path() / "tcga"
    table = read_mcat_table(tcga / "porpoise" / f"tcga_{cohort}_all_clean.csv.zip", cohort)
    bags = work / f"bags-{cohort}"
    by_patient: dict[str, list[str]] = {p: [] for p in table.patient_ids}
    for slide, pid in table.slides:
        by_patient[pid].append(slide)
    genomics = np.nan_to_num(table.genomics, nan=0.0)
    simulate_bags(genomics, table.patient_ids, [by_patient[p] for p in table.patient_ids],
                  bags, n_patches=patches, dim=dim, signal=0.5, seed=0)
    root = work / f"store-{cohort}"
    with Store.open(root) as store:
        ingest(store, IngestRequest(
            tables=[table],
            gene_groups=[read_gene_groups(tcga / "signatures" / "mcat_signatures.csv", "mcat")],
            split_sets=[read_split_dir(tcga / "splits" / f"tcga_{cohort}", "mcat")],
            bag_dirs=[bags], encoder="simulator"))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohorts", default="blca,gbmlgg")
    parser.add_argument("--folds", type=int, default=1)
    parser.add_argument("--patches", type=int, default=256)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    import logging

    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    work = args.work or Path(tempfile.mkdtemp(prefix="casegraph-retrieval-eval-"))
    payload: dict[str, object] = {"settings": {**vars(args), "work": str(work),
                                               "msrl": MSRL_OPTIONS}, "cohorts": {}}
    for cohort in args.cohorts.split(","):
        start = time.perf_counter()
        root = work / f"store-{cohort}"
        if not (root / "store.duckdb").exists():
            root = build_store(cohort, work, args.patches, args.dim)
        print(f"{cohort}: store ready ({time.perf_counter() - start:.0f} s)", flush=True)
        with Store.open(root, read_only=True) as store:
            data = CohortData.from_store(store, cohort, require_slides=True)
            folds = stored_folds(data, store, "mcat")
            results = [evaluate_fold(store, data, tr, te, fold=f, k=args.k,
                                     n_candidates=args.candidates, msrl_options=MSRL_OPTIONS)
                       for f, (tr, te) in sorted(folds.items())[: args.folds]]
        summary = summarise(results)
        rows = [[method] + [_fmt(summary[method].get(m)) for m in SHOWN] for method in summary]
        print_table(f"{cohort}: {len(data)} patients, {len(results)} folds "
                    f"({time.perf_counter() - start:.0f} s)", ["method", *SHOWN], rows)
        payload["cohorts"][cohort] = {  # type: ignore[index]
            "n_patients": len(data), "folds": [r.__dict__ for r in results],
            "summary": {m: {k: list(v) for k, v in s.items()} for m, s in summary.items()}}
    print(f"\nwrote {write_json('retrieval_eval', payload)}")


def _fmt(value: tuple[float, float] | None) -> str:
    if value is None or not np.isfinite(value[0]):
        return "-"
    return f"{value[0]:.3f}±{value[1]:.3f}"


if __name__ == "__main__":
    main()
