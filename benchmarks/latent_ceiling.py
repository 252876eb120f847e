"""What the simulated histology could tell at best: a Cox model on the simulator's *true*
per-patient phenotype mixes (log π_i, not the bags), per MCAT fold of the real tables.

The bags are noisy draws from these mixes, so a WSI-only model fitted on the same folds
should not do much better than this (up to fold noise). At signal 0 the mixes are
independent of genomics, but one seed's draws can still correlate with survival by chance
in a small cohort; this shows how much. Rows use ``msrl_cv.py``'s JSON format (model
``latent-cox``), so ``msrl_tables.py`` puts them beside the models.

    .venv/bin/python benchmarks/latent_ceiling.py --cohorts blca,brca --signals 0.8,0.0 \\
        --out benchmarks/results/msrl_grid_latent.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sksurv.linear_model import CoxPHSurvivalAnalysis

from casegraph.config import shared_data_path
from casegraph.ingest.simulate import BagSettings, phenotype_mix
from casegraph.ingest.tables import read_mcat_table
from casegraph.models.metrics import harrell_c
from casegraph.schema import SurvivalTarget


def fold_rows(cohort: str, signal: float, genomic_map: str, seed: int) -> list[dict[str, object]]:
    data = shared_data_path() / "tcga"
    # the simulator's own reader, so the mixes are exactly those behind the bags
    table = read_mcat_table(data / "porpoise" / f"tcga_{cohort}_all_clean.csv.zip")
    settings = BagSettings(signal=signal, genomic_map=genomic_map, seed=seed)
    x = np.log(phenotype_mix(table.genomics, table.patient_ids, settings))
    event, time = table.event, table.time
    y = np.array(list(zip(event, time, strict=True)), dtype=[("event", bool), ("time", float)])
    ids = pd.Series(table.patient_ids)
    rows: list[dict[str, object]] = []
    for fold in range(5):
        split = pd.read_csv(data / "splits" / f"tcga_{cohort}" / f"splits_{fold}.csv")
        train = ids.isin(split.train.dropna()).to_numpy()
        test = ids.isin(split.val.dropna()).to_numpy()
        model = CoxPHSurvivalAnalysis(alpha=1.0).fit(x[train], y[train])
        target = SurvivalTarget.from_arrays(time=time[test], event=event[test])
        rows.append({"cohort": cohort, "signal": str(signal), "model": "latent-cox",
                     "fold": fold, "c_index": harrell_c(model.predict(x[test]), target),
                     "options": {"genomic_map": genomic_map, "seed": seed}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", default="blca,brca,stad,hnsc,coadread")
    parser.add_argument("--signals", default="0.8,0.0")
    parser.add_argument("--genomic-map", default="pca")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results"
                        / "msrl_grid_latent.json")
    args = parser.parse_args()
    rows = [row for cohort in args.cohorts.split(",") for signal in args.signals.split(",")
            for row in fold_rows(cohort, float(signal), args.genomic_map, args.seed)]
    args.out.write_text(json.dumps(rows, indent=1))
    for cohort in args.cohorts.split(","):
        for signal in args.signals.split(","):
            values = [float(r["c_index"]) for r in rows  # type: ignore[arg-type]
                      if r["cohort"] == cohort and r["signal"] == str(float(signal))]
            print(f"{cohort:<9} signal {signal}: latent-cox C {np.mean(values):.3f} "
                  f"(folds {', '.join(f'{v:.3f}' for v in values)})")


if __name__ == "__main__":
    main()
