"""Tiny literal cohort files for ingest tests."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

HEADER = "case_id,slide_id,survival_months,censorship,age,oncotree_code,TP53_rnaseq,EGFR_rnaseq,TP53_cnv,KRAS_mut"
ROWS = [
    "P1,P1-A.svs,10.5,0,60,BLCA,0.1,1.2,0,1",
    "P1,P1-B.svs,10.5,0,60,BLCA,0.1,1.2,0,1",
    "P2,P2-A.svs,30.0,1,55,BLCA,-0.3,0.4,1,0",
    "P3,P3-A.svs,5.25,0,70,BLCA,2.0,-1.0,-1,0",
]
SIGNATURES = "Tumor Suppressor Genes,Oncogenes\nTP53,EGFR\n,KRAS\n"


def write_table(folder: Path, rows: list[str] | None = None, header: str = HEADER,
                name: str = "tcga_tiny_all_clean.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join([header, *(ROWS if rows is None else rows)]) + "\n", encoding="utf-8")
    return path


def write_signatures(folder: Path) -> Path:
    path = folder / "tiny_signatures.csv"
    path.write_text(SIGNATURES, encoding="utf-8")
    return path


def write_bags(folder: Path, slides: list[str], n: int = 20, dim: int = 8, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for slide in slides:
        path = folder / f"{slide}.h5"
        with h5py.File(path, "w") as handle:
            handle["features"] = rng.normal(size=(n, dim)).astype(np.float32)
            handle["coords"] = rng.integers(0, 1000, size=(n, 2))
        paths.append(path)
    return paths
