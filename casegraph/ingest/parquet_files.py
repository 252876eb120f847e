"""Parquet side files of the store, written under fresh names before the commit that
references them (so a killed writer leaves only an unreferenced file)."""

from __future__ import annotations

import os
import uuid
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq


def write_parquet_atomic(table: pa.Table, folder: Path, prefix: str) -> str:
    """Write ``table`` to ``folder/<prefix>-<uuid>.parquet`` via a temp file; return the name."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{prefix}-{uuid.uuid4().hex[:12]}.parquet"
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, folder / name)
    return name


def write_genomic_file(folder: Path, batch_id: str, patient_ids: list[str],
                       names: list[str], values: npt.NDArray[np.float32]) -> str:
    """One wide file: ``patient_id`` + one float32 column per feature (NaN = no value)."""
    columns = {"patient_id": pa.array(patient_ids, pa.string())}
    for j, name in enumerate(names):
        columns[name] = pa.array(values[:, j], pa.float32())
    return write_parquet_atomic(pa.table(columns), folder, f"genomics-{batch_id}")


@lru_cache(maxsize=64)
def _genomic_table(path: Path) -> pa.Table:
    return pq.read_table(path)


def genomic_file_columns(path: Path) -> list[str]:
    return [c for c in pq.read_schema(path).names if c != "patient_id"]


def read_genomic_file(path: Path, wanted: list[str]) -> tuple[list[str], npt.NDArray[np.float32]]:
    """(columns of ``wanted`` present in the file, (rows, len(columns)) float32 values)."""
    table = _genomic_table(path)
    present = set(table.column_names)
    cols = [c for c in wanted if c in present]
    if not cols:
        return [], np.zeros((table.num_rows, 0), dtype=np.float32)
    values = np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in cols])
    return cols, values.astype(np.float32, copy=False)
