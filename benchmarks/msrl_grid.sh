#!/usr/bin/env bash
# Issue 5 evidence: MSRL variants vs baselines, 5-fold CV (MCAT splits) on five TCGA cohorts
# (real genomics + survival, simulated bags) at simulator signal 0.8 and 0 (SIGNALS).
# Usage: benchmarks/msrl_grid.sh WORK_DIR [COHORT ...]   (re-running resumes finished folds)
# Bags: 256 patches x 64 dims, 8 phenotypes, seed 0, genomic map "pca" (docs/simulator.md).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:?work dir}; shift
COHORTS=${*:-"blca brca stad hnsc coadread"}
DATA=${CASEGRAPH_SHARED_DATA:-$(cd .. && pwd)/shared/data}/tcga
CONFIGS=${CONFIGS:-msrl,msrl_h,msrl_multi,snn,abmil-mean,late_fusion-mean}
SIGNALS=${SIGNALS:-"0.8 0.0"}
MSRL_OPTIONS=${MSRL_OPTIONS:-"--option pretrain_steps=50 --option epochs=10"}
export CASEGRAPH_NO_PROGRESS=1
mkdir -p "$WORK"
for c in $COHORTS; do
  stores=()
  for s in $SIGNALS; do
    store="$WORK/store_${c}_s$s"
    if [ ! -f "$store/.ingested" ]; then
      rm -rf "$store" "$WORK/bags_${c}_s$s"
      .venv/bin/casegraph simulate --table "$DATA/porpoise/tcga_${c}_all_clean.csv.zip" \
        --out "$WORK/bags_${c}_s$s" --patches 256 --dim 64 --signal "$s" --seed 0 \
        --genomic-map pca
      .venv/bin/casegraph ingest --store "$store" \
        --table "$DATA/porpoise/tcga_${c}_all_clean.csv.zip" \
        --signatures "$DATA/signatures/mcat_signatures.csv" --splits "$DATA/splits/tcga_$c" \
        --bags "$WORK/bags_${c}_s$s"
      touch "$store/.ingested"
    fi
    stores+=(--store "$s=$store")
  done
  # shellcheck disable=SC2086
  .venv/bin/python benchmarks/msrl_cv.py "${stores[@]}" --cohort "$c" --configs "$CONFIGS" \
    $MSRL_OPTIONS --out "benchmarks/results/msrl_grid_${c}.json"
done
