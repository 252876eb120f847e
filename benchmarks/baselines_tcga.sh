#!/usr/bin/env bash
# Real-data acceptance: genomics-only SNN and CoxNet, 5-fold CV on the shared MCAT splits,
# for BLCA, BRCA, GBMLGG, LUAD, UCEC (CCL Table I / MurreNet Table 1 baselines).
# Usage: benchmarks/baselines_tcga.sh STORE_DIR OUT_DIR   (re-running resumes finished folds)
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${1:?store dir}
OUT=${2:?output dir}
DATA=${CASEGRAPH_SHARED_DATA:-$(cd .. && pwd)/shared/data}/tcga
COHORTS=${COHORTS:-"blca brca gbmlgg luad ucec"}
export CASEGRAPH_NO_PROGRESS=1
for c in $COHORTS; do
  if ! .venv/bin/python -c "
from casegraph.ingest.store import Store
import sys
with Store.open('$STORE', read_only=True) as s: sys.exit(0 if '$c' in s.cohorts() else 1)
" 2>/dev/null; then
    .venv/bin/casegraph ingest --store "$STORE" --table "$DATA/porpoise/tcga_${c}_all_clean.csv.zip" \
      --signatures "$DATA/signatures/mcat_signatures.csv" --splits "$DATA/splits/tcga_$c"
  fi
done
for c in $COHORTS; do
  # MCAT's SNN recipe: all genomic features, 20 epochs, Adam lr 2e-4, wd 1e-5, batch 32, L1 1e-4
  .venv/bin/casegraph train --store "$STORE" --model snn --cohort "$c" --splits mcat \
    --group-set all --epochs 20 --seed 0 --out "$OUT" --threads 1
  .venv/bin/casegraph train --store "$STORE" --model coxnet --cohort "$c" --splits mcat \
    --group-set all --seed 0 --out "$OUT" --threads 1
done
.venv/bin/casegraph evaluate --store "$STORE" --markdown "$OUT/c_index.md" --km-dir "$OUT/km"
