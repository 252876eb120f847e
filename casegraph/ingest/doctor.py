"""``casegraph doctor``: find what no longer matches the store.

Checks: every referenced bag file still exists and has the stored sha256 (or, without
``rehash``, the stored size and modification time); every Parquet file the tables reference
exists; Parquet files no table references (left by a killed writer) are listed.
"""

from __future__ import annotations

from pathlib import Path

from casegraph.ingest.store import Store
from casegraph.runtime import progress, sha256_file


def run_checks(store: Store, rehash: bool = True) -> list[str]:
    return [*check_bag_files(store, rehash), *check_parquet_files(store)]


def check_bag_files(store: Store, rehash: bool = True) -> list[str]:
    problems = []
    rows = store.con.execute(
        "SELECT slide_id, feature_path, sha256, file_size, file_mtime FROM slides "
        "WHERE feature_path IS NOT NULL ORDER BY slide_id"
    ).fetchall()
    for slide_id, path_text, sha, size, mtime in progress(rows, "checking bag files"):
        path = Path(path_text)
        if not path.is_file():
            problems.append(f"slide {slide_id}: feature file vanished: {path} "
                            "(restore it, or re-ingest with --bags pointing to its new folder)")
            continue
        stat = path.stat()
        if rehash:
            if sha256_file(path) != sha:
                problems.append(f"slide {slide_id}: feature file changed since ingest: {path} "
                                "(re-run `casegraph ingest --bags ...` to register the new content)")
        elif stat.st_size != size or stat.st_mtime != mtime:
            problems.append(f"slide {slide_id}: feature file size/time changed: {path} "
                            "(run `casegraph doctor --full` to compare hashes)")
    return problems


def check_parquet_files(store: Store) -> list[str]:
    problems = []
    for folder, table in ((store.genomics_dir, "genomic_rows"), (store.summaries_dir, "slide_summaries")):
        referenced = {r[0] for r in store.con.execute(
            f"SELECT DISTINCT file FROM {table}").fetchall()}  # table names are ours
        for name in sorted(referenced):
            if not (folder / name).is_file():
                problems.append(f"{table} references a missing file {folder / name}; the store "
                                "is damaged: re-ingest the affected cohort into a new store")
        if folder.is_dir():
            for path in sorted(folder.glob("*.parquet")):
                if path.name not in referenced:
                    problems.append(f"unreferenced file {path} (left by an interrupted ingest; "
                                    "safe to delete)")
            for path in sorted(folder.glob(".*.tmp")):
                problems.append(f"temporary file {path} (left by an interrupted ingest; safe to delete)")
    return problems
