"""Match patch-feature files to slides and register the new or changed ones.

Files are matched by slide id without extension (``.svs`` in tables, ``.h5``/``.pt`` on
disk). A file whose path, size and modification time equal the stored ones is not read
again; any other file is hashed and summarised (mean embedding, k-means centres, coords,
provenance) by the batch's executor (:mod:`casegraph.ingest.executors`).

Hashes across algorithms: a stored slide hashed with another algorithm (sha256 in older
stores) is re-hashed with that one too, in the same read, and compared with it: a file
rewritten with identical bytes stays a no-op and its row keeps its old digest.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from casegraph.errors import InputError
from casegraph.ingest.bags import BAG_SUFFIXES, slide_key
from casegraph.ingest.executors import Executor, LocalExecutor, SlideTask
from casegraph.ingest.files import check_regular_file
from casegraph.ingest.hashes import DEFAULT_ALGORITHM
from casegraph.ingest.store import Store
from casegraph.ingest.summaries import SummaryRow
from casegraph.ingest.tables import CohortTable
from casegraph.runtime import progress

# slide_id, patient_id, cohort, feature_path, digest, n_patches, feature_dim, encoder,
# file_size, file_mtime, hash_algorithm, provenance (JSON)
SlideRow = tuple[str, str, str, str | None, str | None, int | None, int | None, str | None,
                 int | None, float | None, str | None, str | None]


# Skipping such an entry would drop a slide's features silently.
BAG_ENTRY_FIX = "put the feature file itself in the bag folder, or remove this entry"


@dataclass
class BagPlan:
    records: list[SummaryRow] = field(default_factory=list)
    new_slide_rows: list[SlideRow] = field(default_factory=list)
    updated_slide_rows: list[SlideRow] = field(default_factory=list)
    unmatched_files: list[str] = field(default_factory=list)
    batch_slides: int = 0  # slides of this batch's tables
    batch_slides_without_bags: int = 0  # of those, with no feature file stored or found
    store_slides_without_bags: int = 0  # all slides, once this batch is in
    warnings: list[str] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        return bool(self.new_slide_rows or self.updated_slide_rows)


def find_bag_files(folders: list[Path]) -> dict[str, Path]:
    """slide key -> file, over every ``.h5``/``.pt`` below the folders."""
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            raise InputError("bag folder not found", file=folder, fix="check --bags")
        for path in sorted(folder.rglob("*")):
            if path.suffix in BAG_SUFFIXES:
                check_regular_file(path, "feature file", BAG_ENTRY_FIX)
                key = slide_key(path.name)
                if key in found and found[key] != path.resolve():
                    raise InputError(f"two feature files for slide {key!r}: {found[key]}",
                                     file=path, fix="keep one file per slide")
                found[key] = path.resolve()
    return found


def plan_bags(store: Store, tables: list[CohortTable], folders: list[Path], k: int, seed: int,
              encoder: str, executor: Executor | None = None) -> BagPlan:
    plan = BagPlan()
    files = find_bag_files(folders)
    stored = {row[0]: row for row in store.con.execute(
        "SELECT slide_id, patient_id, cohort, feature_path, sha256, n_patches, feature_dim, "
        "encoder, file_size, file_mtime, coalesce(hash_algorithm, 'sha256') FROM slides"
    ).fetchall()}
    wanted: dict[str, tuple[str, str]] = {}
    for table in tables:
        for key, pid in table.slides:
            wanted[key] = (pid, table.cohort)
    in_batch = set(wanted)
    plan.batch_slides = len(in_batch)
    for key, old_row in stored.items():
        wanted.setdefault(key, (old_row[1], old_row[2]))
    plan.unmatched_files = sorted(str(p) for key, p in files.items() if key not in wanted)
    if plan.unmatched_files:
        plan.warnings.append(f"{len(plan.unmatched_files)} feature file(s) match no slide of any "
                             f"table, e.g. {plan.unmatched_files[0]}; they were not ingested")
    to_register: list[tuple[str, str, str, Path]] = []
    for key, (pid, cohort) in sorted(wanted.items()):
        path = files.get(key)
        old = stored.get(key)
        if path is None:
            if old is None:
                plan.new_slide_rows.append((key, pid, cohort, None, None, None, None, None, None,
                                            None, None, None))
            if old is None or old[3] is None:
                plan.store_slides_without_bags += 1
                plan.batch_slides_without_bags += key in in_batch
            continue
        info = path.stat()
        if old is not None and old[3] == str(path) and old[8] == info.st_size \
                and old[9] == info.st_mtime and old[1] == pid:
            continue
        to_register.append((key, pid, cohort, path))
    tasks = [SlideTask(key, str(path), k, seed, _algorithms(stored.get(key)))
             for key, _, _, path in to_register]
    summaries = list(progress((executor or LocalExecutor()).register(tasks),
                              "registering bags", total=len(tasks)))
    _check_dims(stored, [(cohort, summary.dim, path) for (_, _, cohort, path), summary
                         in zip(to_register, summaries, strict=True)])
    for (key, pid, cohort, path), summary in zip(to_register, summaries, strict=True):
        info = path.stat()
        row: SlideRow = (key, pid, cohort, str(path), summary.content_hash, summary.n_patches,
                         summary.dim, encoder, info.st_size, info.st_mtime,
                         summary.hash_algorithm, json.dumps(summary.provenance, sort_keys=True))
        old = stored.get(key)
        if old is None:
            plan.new_slide_rows.append(row)
        elif (old[1], old[3]) == (pid, str(path)) and summary.hashes.get(old[10]) == old[4]:
            continue  # rewritten with identical bytes (under the stored algorithm): a no-op
        else:
            plan.updated_slide_rows.append(row)
        plan.records.append(SummaryRow.from_record(key, summary, k, seed))
    return plan


def _algorithms(old: tuple[Any, ...] | None) -> tuple[str, ...]:
    """The default algorithm, then the stored row's own when it differs (to compare)."""
    if old is None or old[4] is None or old[10] == DEFAULT_ALGORITHM:
        return (DEFAULT_ALGORITHM,)
    return (DEFAULT_ALGORITHM, str(old[10]))


def _check_dims(stored: dict[str, tuple[Any, ...]], new: list[tuple[str, int, Path]]) -> None:
    """Every slide of a cohort has one feature dim. The reference is the stored slides' dim,
    else the dim most files of this batch have; the error names a new file that differs and
    one that has the reference dim."""
    by_cohort: dict[str, list[tuple[int, str, bool]]] = {}
    for row in stored.values():
        if row[6] is not None and row[3] is not None:
            by_cohort.setdefault(row[2], []).append((int(row[6]), row[3], True))
    for cohort, dim, path in new:
        by_cohort.setdefault(cohort, []).append((dim, str(path), False))
    for cohort, entries in by_cohort.items():
        _check_cohort_dims(cohort, entries)


def _check_cohort_dims(cohort: str, entries: list[tuple[int, str, bool]]) -> None:
    old = [d for d, _, was_stored in entries if was_stored]
    reference = Counter(old or [d for d, _, _ in entries]).most_common(1)[0][0]
    odd = next((e for e in entries if e[0] != reference and not e[2]), None)
    if odd is None:
        return
    same = [p for d, p, _ in entries if d == reference]
    where = "already stored" if old else "in this batch"
    raise InputError(f"feature dim {odd[0]} differs from dim {reference} of {len(same)} "
                     f"other file(s) of cohort {cohort!r} {where} (e.g. {same[0]})",
                     file=odd[1], column="features",
                     fix="extract every slide of a cohort with the same encoder")
