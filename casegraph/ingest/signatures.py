"""Gene-group files: columns-of-genes (MCAT ``signatures.csv``, Hallmark lists) or a
gene x group 0/1 matrix (``hallmarks_comps.csv``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from casegraph.errors import InputError
from casegraph.ingest.tables import read_csv_checked


@dataclass
class GeneGroups:
    """``groups``: group name -> unique genes, in file order of groups."""

    group_set: str
    source: Path
    groups: dict[str, list[str]]

    def unique_coverage(self, available_genes: set[str]) -> tuple[int, int]:
        """(unique genes with a feature, unique genes): see :func:`unique_gene_coverage`."""
        return unique_gene_coverage(self.groups, available_genes)

    def coverage(self, available_genes: set[str]) -> dict[str, tuple[int, int]]:
        """group -> (genes present in ``available_genes``, genes in the group)."""
        return {g: (sum(x in available_genes for x in genes), len(genes))
                for g, genes in self.groups.items()}


def unique_gene_coverage(groups: dict[str, list[str]],
                         available_genes: set[str]) -> tuple[int, int]:
    """(genes of the set that have a feature, genes of the set), each gene counted once however
    many groups hold it: the one definition of "genes found" (ingest and ``info``)."""
    genes = {g for members in groups.values() for g in members}
    return len(genes & available_genes), len(genes)


def group_set_from_path(path: Path) -> str:
    """``mcat_signatures.csv`` -> ``mcat``; ``hallmarks_comps.csv`` -> ``hallmarks``."""
    stem = path.name.split(".")[0]
    for suffix in ("_signatures", "_comps", "_signature", "_groups"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def read_gene_groups(path: str | Path, group_set: str | None = None) -> GeneGroups:
    path = Path(path)
    df = read_csv_checked(path, keep_index_column=True)
    name = group_set or group_set_from_path(path)
    groups = _from_matrix(df, path) if _looks_like_matrix(df) else _from_columns(df, path)
    empty = [g for g, genes in groups.items() if not genes]
    if empty:
        raise InputError(f"gene group(s) with no genes: {empty[:5]}", file=path,
                         column=str(empty[0]), fix="remove empty columns")
    return GeneGroups(group_set=name, source=path, groups=groups)


def _looks_like_matrix(df: pd.DataFrame) -> bool:
    if df.shape[1] < 2 or df.iloc[:, 0].dtype.kind in "fiu":
        return False
    values = df.iloc[:, 1:]
    if not all(values[c].dtype.kind in "iub" or values[c].dtype.kind == "f" for c in values):
        return False
    arr = values.to_numpy(dtype=np.float64)
    return bool(np.isin(arr[np.isfinite(arr)], (0.0, 1.0)).all())


def _from_matrix(df: pd.DataFrame, path: Path) -> dict[str, list[str]]:
    genes = df.iloc[:, 0].astype(str).str.strip()
    if genes.duplicated().any():
        row = int(np.flatnonzero(genes.duplicated().to_numpy())[0])
        raise InputError(f"gene {genes.iloc[row]!r} listed twice", file=path, row=row + 2,
                         column=str(df.columns[0]))
    out: dict[str, list[str]] = {}
    for col in df.columns[1:]:
        member = df[col].fillna(0).to_numpy() == 1
        out[str(col)] = list(genes[member])
    return out


def _from_columns(df: pd.DataFrame, path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for col in df.columns:
        values = [str(v).strip() for v in df[col].dropna() if str(v).strip()]
        out[str(col)] = list(dict.fromkeys(values))
    return out
