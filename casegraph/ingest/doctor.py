"""``casegraph doctor``: find what no longer matches the store.

Checks: every referenced bag file still exists and has the stored content hash, under
the algorithm its row records (xxh3_128, or sha256 for slides of older stores), or,
without ``rehash``, the stored size and modification time; every Parquet file the tables reference
exists; Parquet files no table references (left by a killed writer, or superseded by an
``--update``) are listed, and :func:`remove_leftovers` (``doctor --fix``, and every ingest
for its own killed batches) deletes those it can prove are casegraph's and unreferenced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from casegraph.errors import StoreError
from casegraph.ingest.hashes import hash_file
from casegraph.ingest.store import Store
from casegraph.runtime import progress


def run_checks(store: Store, rehash: bool = True) -> list[str]:
    return [*check_bag_files(store, rehash), *check_parquet_files(store)]


def check_bag_files(store: Store, rehash: bool = True) -> list[str]:
    problems = []
    rows = [row for row in store.slide_hashes() if row[1] is not None]
    for slide_id, path_text, digest, algorithm, size, mtime in progress(rows, "checking bag files"):
        path = Path(str(path_text))
        if not path.is_file():
            problems.append(f"slide {slide_id}: feature file vanished: {path} "
                            "(restore it, or re-ingest with --bags pointing to its new folder)")
            continue
        stat = path.stat()
        if rehash:
            if hash_file(path, algorithm) != digest:
                problems.append(f"slide {slide_id}: feature file changed since ingest ({algorithm} "
                                f"differs): {path} (re-run `casegraph ingest --bags ...` to "
                                "register the new content)")
        elif stat.st_size != size or stat.st_mtime != mtime:
            problems.append(f"slide {slide_id}: feature file size/time changed: {path} "
                            "(run `casegraph doctor --full` to compare hashes)")
    return problems


BATCH_ID = r"\d{8}T\d{6}-[0-9a-f]{8}"  # pipeline.ingest's batch ids
# The only names ingest writes (parquet_files.write_genomic_file, summaries.write_summary_file),
# each with its temporary ".<name>.tmp" twin; the group is the batch id.
SIDE_FILE_NAMES = {
    "genomic_rows": re.compile(rf"genomics-({BATCH_ID})-[0-9a-f]{{12}}\.parquet"),
    "slide_summaries": re.compile(rf"({BATCH_ID})-[0-9a-f]{{8}}\.parquet"),
}


@dataclass(frozen=True)
class Leftover:
    """A file in a side folder that no table references. ``batch_id`` is None for a name
    casegraph never writes (never removed); ``committed`` tells a file a later ``--update``
    superseded from one of a batch that never committed (a killed ingest)."""

    path: Path
    table: str
    batch_id: str | None
    committed: bool
    temporary: bool

    @property
    def removable(self) -> bool:
        return self.batch_id is not None

    def describe(self) -> str:
        if not self.removable:
            return (f"unexpected file {self.path} (not a name casegraph writes; inspect it, "
                    "doctor --fix leaves it)")
        kind = "temporary file" if self.temporary else "unreferenced file"
        why = ("superseded by a later --update" if self.committed
               else "left by an interrupted ingest")
        return f"{kind} {self.path} ({why}; safe to delete: casegraph doctor --fix)"


def find_leftovers(store: Store) -> list[Leftover]:
    """Unreferenced files of the store's side folders, proven so by the tables."""
    committed = {r[0] for r in store.con.execute("SELECT batch_id FROM ingest_batches").fetchall()}
    out = []
    for folder, table in _side_folders(store):
        referenced = _referenced(store, table)
        pattern = SIDE_FILE_NAMES[table]
        for path in sorted(folder.glob("*.parquet")) + sorted(folder.glob(".*.tmp")):
            temporary = path.name.startswith(".") and path.name.endswith(".tmp")
            name = path.name[1:-4] if temporary else path.name
            if not temporary and name in referenced:
                continue
            match = pattern.fullmatch(name)
            batch = match.group(1) if match else None
            out.append(Leftover(path, table, batch, batch in committed, temporary))
    return out


def remove_leftovers(store: Store, *, uncommitted_only: bool) -> list[Path]:
    """Delete the removable leftovers (only those of batches that never committed when
    ``uncommitted_only``); return what was removed.

    Needs the store open read-write: DuckDB then holds the file's exclusive lock, so no
    other process has an ingest in flight whose not-yet-committed files would look the same.
    """
    if store.read_only:
        raise StoreError(f"store {store.root} is open read-only; cannot remove files")
    removed = []
    for leftover in find_leftovers(store):
        if leftover.removable and not (uncommitted_only and leftover.committed):
            leftover.path.unlink(missing_ok=True)
            removed.append(leftover.path)
    return removed


def check_parquet_files(store: Store) -> list[str]:
    problems = []
    for folder, table in _side_folders(store):
        for name in sorted(_referenced(store, table)):
            if not (folder / name).is_file():
                problems.append(f"{table} references a missing file {folder / name}; the store "
                                "is damaged: re-ingest the affected cohort into a new store")
    return problems + [leftover.describe() for leftover in find_leftovers(store)]


def _side_folders(store: Store) -> list[tuple[Path, str]]:
    return [(store.genomics_dir, "genomic_rows"), (store.summaries_dir, "slide_summaries")]


def _referenced(store: Store, table: str) -> set[str]:
    return {r[0] for r in store.con.execute(
        f"SELECT DISTINCT file FROM {table}").fetchall()}  # table names are ours
