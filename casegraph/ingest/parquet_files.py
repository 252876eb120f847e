"""Parquet side files of the store, written under fresh names before the commit that
references them (so a killed writer leaves only an unreferenced file)."""

from __future__ import annotations

import json
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
    pq.write_table(table, tmp, compression="snappy")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, folder / name)
    return name


def write_genomic_file(folder: Path, batch_id: str, patient_ids: list[str],
                       names: list[str], values: npt.NDArray[np.float32]) -> str:
    """One file a batch: ``patient_id`` + ``values`` (a fixed-size list of float32, NaN = no
    value); the feature names are in the schema metadata. One list column instead of
    thousands of scalar columns keeps writes and reads fast for wide genomic tables."""
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1), pa.float32())
    table = pa.table({
        "patient_id": pa.array(patient_ids, pa.string()),
        "values": pa.FixedSizeListArray.from_arrays(flat, max(len(names), 1))
        if names else pa.array([[0.0]] * len(patient_ids), pa.list_(pa.float32(), 1)),
    }).replace_schema_metadata({"casegraph.features": json.dumps(names)})
    return write_parquet_atomic(table, folder, f"genomics-{batch_id}")


@lru_cache(maxsize=32)
def _genomic_file(path: Path) -> tuple[tuple[str, ...], npt.NDArray[np.float32]]:
    table = pq.read_table(path)
    names = tuple(json.loads(table.schema.metadata[b"casegraph.features"]))
    flat = table.column("values").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    values = np.asarray(flat, dtype=np.float32).reshape(table.num_rows, -1)[:, : len(names)]
    return names, values


def genomic_file_columns(path: Path) -> list[str]:
    return list(_genomic_file(path)[0])


def read_genomic_file(path: Path, wanted: list[str]) -> tuple[list[str], npt.NDArray[np.float32]]:
    """(columns of ``wanted`` present in the file, (rows, len(columns)) float32 values)."""
    names, values = _genomic_file(path)
    index = {n: j for j, n in enumerate(names)}
    cols = [c for c in wanted if c in index]
    return cols, values[:, [index[c] for c in cols]]
