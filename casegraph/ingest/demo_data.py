"""The demo cohort: scikit-survival's bundled breast-cancer data set, written as an
MCAT-format table, with simulated patch bags.

The data are real (198 patients; 76 expression probes, age, ER status, grade, tumour size;
time to distant metastasis; from scikit-survival), bundled with a dependency so the demo
needs no download. The probes carry no gene symbols, so the demo's gene groups are six
clusters of correlated probes (k-means on the probe correlation profiles, seeded); the
WSI bags are *simulated* (casegraph.ingest.simulate).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DAYS_PER_MONTH = 30.4375
N_DEMO_GROUPS = 6


@dataclass
class DemoFiles:
    table: Path
    signatures: Path
    splits_dir: Path
    n_patients: int


def write_demo_cohort(folder: Path, seed: int = 0, n_folds: int = 5) -> DemoFiles:
    """Write ``tcga_demo``-style table, signature groups and k-fold split files."""
    from sksurv.datasets import load_breast_cancer

    folder.mkdir(parents=True, exist_ok=True)
    x, y = load_breast_cancer()
    probes = [c for c in x.columns if c.startswith("X")]
    rng = np.random.default_rng(seed)
    case_ids = [f"BC-{i:03d}" for i in range(len(x))]
    n_slides = rng.integers(1, 3, size=len(x))  # one or two slides per patient
    rows = []
    for i, case in enumerate(case_ids):
        for s in range(int(n_slides[i])):
            rows.append({"case_id": case, "slide_id": f"{case}-S{s + 1}.svs", "row": i})
    frame = pd.DataFrame(rows)
    base = pd.DataFrame({
        "survival_months": y["t.tdm"] / DAYS_PER_MONTH,
        "censorship": (~y["e.tdm"]).astype(int),
        "age": x["age"].to_numpy(),
        "er": x["er"].astype(str).to_numpy(),
        "grade": x["grade"].astype(str).to_numpy(),
        "size": x["size"].to_numpy(),
    })
    expr = x[probes].to_numpy(dtype=np.float64)
    genes = pd.DataFrame(expr, columns=[f"{p}_rnaseq" for p in probes])
    table = pd.concat([frame[["case_id", "slide_id"]],
                       base.iloc[frame["row"]].reset_index(drop=True),
                       genes.iloc[frame["row"]].reset_index(drop=True)], axis=1)
    table_path = folder / "tcga_demo_all_clean.csv"
    table.to_csv(table_path, index=False)
    sig_path = folder / "demo_signatures.csv"
    _probe_groups(expr, probes, seed).to_csv(sig_path, index=False)
    splits_dir = folder / "splits"
    _write_kfold(splits_dir, case_ids, np.asarray(y["e.tdm"]), n_folds, seed)
    return DemoFiles(table_path, sig_path, splits_dir, len(case_ids))


def _probe_groups(expr: np.ndarray, probes: list[str], seed: int) -> pd.DataFrame:
    from sklearn.cluster import KMeans

    corr = np.corrcoef(expr, rowvar=False)
    labels = KMeans(N_DEMO_GROUPS, n_init=10, random_state=seed).fit_predict(corr)
    groups = {f"probe cluster {g + 1}": [p for p, lab in zip(probes, labels, strict=True) if lab == g]
              for g in range(N_DEMO_GROUPS)}
    longest = max(len(v) for v in groups.values())
    return pd.DataFrame({k: v + [None] * (longest - len(v)) for k, v in groups.items()})


def _write_kfold(folder: Path, ids: list[str], event: np.ndarray, n_folds: int, seed: int) -> None:
    from sklearn.model_selection import StratifiedKFold

    folder.mkdir(parents=True, exist_ok=True)
    folds = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(ids, event)
    for k, (train, val) in enumerate(folds):
        tr = [ids[i] for i in train]
        va = [ids[i] for i in val]
        longest = max(len(tr), len(va))
        pd.DataFrame({"train": tr + [None] * (longest - len(tr)),
                      "val": va + [None] * (longest - len(va))}).to_csv(folder / f"splits_{k}.csv")
