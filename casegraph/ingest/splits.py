"""Cross-validation split files: MCAT ``splits_{k}.csv`` (``train``/``val`` columns of case
ids, NaN-padded) in one folder, stored as a named split set."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from casegraph.errors import InputError
from casegraph.ingest.ids import check_patient_ids
from casegraph.ingest.tables import read_csv_checked


@dataclass
class SplitSet:
    """``folds[k] = (train ids, val ids)``."""

    name: str
    source: Path
    folds: dict[int, tuple[list[str], list[str]]]

    def patients(self) -> set[str]:
        return {p for train, val in self.folds.values() for p in (*train, *val)}


def read_split_dir(folder: str | Path, name: str = "mcat") -> SplitSet:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("split folder not found", file=folder, fix="pass the folder holding splits_0.csv ...")
    files = sorted(folder.glob("splits_*.csv"), key=lambda p: _fold_number(p))
    if not files:
        raise InputError("no splits_{k}.csv files in the folder", file=folder)
    folds = {}
    for path in files:
        df = read_csv_checked(path, dtype={"train": str, "val": str})
        missing = [c for c in ("train", "val") if c not in df.columns]
        if missing:
            raise InputError(f"missing column(s) {missing}", file=path,
                             fix="MCAT split files have 'train' and 'val' columns of case ids")
        train, val = (_fold_ids(df[side], path, side) for side in ("train", "val"))
        overlap = sorted(set(train) & set(val))
        if overlap:
            raise InputError(f"patient {overlap[0]!r} is in both train and val", file=path,
                             column="val", fix="a patient belongs to one side of a fold")
        folds[_fold_number(path)] = (sorted(set(train)), sorted(set(val)))
    return SplitSet(name=name, source=folder, folds=folds)


def _fold_ids(column: pd.Series, path: Path, side: str) -> list[str]:
    """The ids of one side of a fold, kept as given (the column is NaN-padded at its end)."""
    present = column.notna().to_numpy()
    if not present.any():
        return []
    last = int(present.nonzero()[0][-1])
    return check_patient_ids(column.iloc[: last + 1], path, side)


def _fold_number(path: Path) -> int:
    match = re.search(r"splits_(\d+)", path.name)
    return int(match.group(1)) if match else 0
