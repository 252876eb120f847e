"""Published snapshots: what readers (the REST service) open while writers keep working.

DuckDB lets one process hold a database file for writing, and a writer's lock also keeps
readers out. So a writer, after its last commit, *publishes*: it copies the database from
its own open connection into ``<store>/published/<UTC stamp>-<6 hex>.duckdb`` and then
names that file in ``published/CURRENT.json`` (temp file, fsync, ``os.replace``: a reader
sees the old name or the new one, never half a file). Readers open the named file
read-only; it is never written again, and the Parquet files and artifacts its rows name are
written under fresh names and never rewritten, so a snapshot stays valid while it is read.

:func:`publish_snapshot` keeps the newest :data:`KEEP` snapshot files and deletes older
ones; a reader that still has one open keeps reading it (an unlinked file lives on until
its last handle closes, on Linux). ``Store.close()`` publishes when the store committed a
transaction; a store that committed nothing (a repeated ingest that found nothing new)
publishes nothing.

``CURRENT.json``::

    {"snapshot": "20260102T030405123456Z-1a2b3c.duckdb", "published_at": "...+00:00",
     "batch": "<newest ingest batch id>" | null, "model_versions": {model: version id},
     "patients": 123}
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from casegraph.errors import StoreError

if TYPE_CHECKING:
    from casegraph.ingest.store import Store

PUBLISHED_DIR = "published"
CURRENT_FILE = "CURRENT.json"
SNAPSHOT_SUFFIX = ".duckdb"
KEEP = 3
_ALIAS = "casegraph_snapshot"


@dataclass(frozen=True)
class SnapshotInfo:
    """What ``CURRENT.json`` says: the snapshot file (name inside ``published/``), when it
    was published, the newest ingest batch, the newest version id of each model, and the
    number of patients."""

    snapshot: str
    published_at: str
    batch: str | None
    model_versions: dict[str, str] = field(default_factory=dict)
    patients: int = 0

    @property
    def snapshot_id(self) -> str:
        return self.snapshot.removesuffix(SNAPSHOT_SUFFIX)


def published_dir(root: str | Path) -> Path:
    return Path(root) / PUBLISHED_DIR


def publish_snapshot(store: Store) -> SnapshotInfo:
    """Copy the store's database into a fresh snapshot file and make it the current one.

    Runs on the writer's own connection (outside any transaction), so the copy is exactly
    what the writer committed. Deletes snapshot files beyond the newest :data:`KEEP`.
    """
    if store.read_only:
        raise StoreError(f"store {store.root} is open read-only; only a writer publishes")
    folder = published_dir(store.root)
    folder.mkdir(exist_ok=True)
    _remove_partial_copies(folder)
    name = _new_snapshot_name()
    _copy_database(store.con, folder / name)
    facts = store_facts(store)
    info = SnapshotInfo(snapshot=name,
                        published_at=datetime.now(UTC).isoformat(timespec="seconds"),
                        batch=facts.batch, model_versions=facts.model_versions,
                        patients=facts.patients)
    _write_current(folder, info)
    _keep_newest(folder, keep=KEEP, current=name)
    return info


@dataclass(frozen=True)
class StoreFacts:
    """What a state of the store holds, in brief: the newest ingest batch id, the newest
    version id of each model, the number of patients."""

    batch: str | None
    model_versions: dict[str, str]
    patients: int


def store_facts(store: Store) -> StoreFacts:
    """The :class:`StoreFacts` of an open store (main database or snapshot)."""
    return StoreFacts(batch=_newest_batch(store.con), model_versions=_newest_versions(store),
                      patients=_patient_count(store.con))


def read_current(root: str | Path) -> SnapshotInfo | None:
    """The store's current snapshot, or None when nothing was published yet.

    A ``CURRENT.json`` that is not valid, or names a file that is not there, is a
    :class:`StoreError`.
    """
    path = published_dir(root) / CURRENT_FILE
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data: dict[str, Any] = json.loads(raw)
        info = SnapshotInfo(snapshot=str(data["snapshot"]),
                            published_at=str(data["published_at"]),
                            batch=None if data.get("batch") is None else str(data["batch"]),
                            model_versions={str(k): str(v) for k, v in
                                            dict(data.get("model_versions") or {}).items()},
                            patients=int(data.get("patients") or 0))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StoreError(f"{path} is not a valid snapshot pointer; run any writing "
                         "command (or `casegraph serve`, which publishes once) to "
                         "rewrite it") from None
    if Path(info.snapshot).name != info.snapshot or not info.snapshot.endswith(SNAPSHOT_SUFFIX):
        raise StoreError(f"{path} names {info.snapshot!r}, not a snapshot file")
    if not (published_dir(root) / info.snapshot).is_file():
        raise StoreError(f"{path} names {info.snapshot}, which is missing")
    return info


def open_published(root: str | Path) -> tuple[Store, SnapshotInfo]:
    """The current snapshot as a read-only :class:`Store` (its ``root`` is the store
    directory, so the paths its rows hold resolve as in the main database), and its info.

    Raises :class:`StoreError` when nothing was published or the snapshot cannot be opened.
    """
    from casegraph.ingest.store import Store

    info = read_current(root)
    if info is None:
        raise StoreError(f"store {root} has no published snapshot ({PUBLISHED_DIR}/"
                         f"{CURRENT_FILE}); run `casegraph serve`, which publishes once")
    return Store.open_snapshot(root, published_dir(root) / info.snapshot), info


# ---------------------------------------------------------------------- helpers
def _new_snapshot_name() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{uuid.uuid4().hex[:6]}{SNAPSHOT_SUFFIX}"


def _copy_database(con: duckdb.DuckDBPyConnection, target: Path) -> None:
    """``COPY FROM DATABASE`` into ``target`` (via a temp name, fsynced, then renamed)."""
    tmp = target.with_name(f".{target.name}.tmp")
    source = str(con.execute("SELECT current_database()").fetchall()[0][0])
    quoted = '"' + source.replace('"', '""') + '"'
    try:
        con.execute(f"ATTACH ? AS {_ALIAS}", [str(tmp)])
        try:
            con.execute(f"COPY FROM DATABASE {quoted} TO {_ALIAS}")  # our own names
        finally:
            con.execute(f"DETACH {_ALIAS}")
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(target.parent)
    except (duckdb.Error, OSError) as exc:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
        raise StoreError(f"cannot publish a snapshot into {target.parent}: {exc}") from None


def _newest_batch(con: duckdb.DuckDBPyConnection) -> str | None:
    rows = con.execute("SELECT batch_id FROM ingest_batches "
                       "ORDER BY started_at DESC, batch_id DESC LIMIT 1").fetchall()
    return str(rows[0][0]) if rows else None


def _newest_versions(store: Store) -> dict[str, str]:
    newest: dict[str, str] = {}
    try:
        versions = store.versions.all()
    except duckdb.Error:  # a read-only store from before the version columns existed
        rows = store.con.execute("SELECT model, version_id FROM model_versions "
                                 "ORDER BY created_at, version_id").fetchall()
        return dict(sorted({str(m): str(v) for m, v in rows}.items()))
    for version in versions:  # oldest first: the last one of a model wins
        newest[version.model] = version.version_id
    return dict(sorted(newest.items()))


def _patient_count(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT count(*) FROM patients").fetchall()[0][0])


def _write_current(folder: Path, info: SnapshotInfo) -> None:
    tmp = folder / f".{CURRENT_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(asdict(info), out, indent=1)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, folder / CURRENT_FILE)
    _fsync(folder)


def _keep_newest(folder: Path, *, keep: int, current: str) -> None:
    """Delete snapshot files beyond the newest ``keep`` (names sort by publish time)."""
    snapshots = sorted(p.name for p in folder.glob(f"*{SNAPSHOT_SUFFIX}")
                       if not p.name.startswith("."))
    for name in snapshots[:-keep]:
        if name != current:
            (folder / name).unlink(missing_ok=True)


def _remove_partial_copies(folder: Path) -> None:
    """Temp files of a publish that was killed (one writer at a time holds the store, so
    no publish is in flight now)."""
    for leftover in folder.glob(".*.tmp*"):
        leftover.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
