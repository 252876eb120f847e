"""Retrieval commands: ``query``, ``serve`` and ``index rebuild|sync|check``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer

from casegraph.config import default_store_path

STORE_OPTION = typer.Option(None, "--store", "-s", help="Store directory (env CASEGRAPH_STORE).")

index_app = typer.Typer(help="Vector indexes of a store (one per model version and "
                             "embedding kind).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("query")(query_command)
    app.command("serve")(serve_command)
    app.add_typer(index_app, name="index")


def query_command(
    slide: list[Path] = typer.Option([], "--slide", help="Patch-feature file (.h5/.pt) of the "
                                     "query patient; repeatable (several slides)."),
    patient: str | None = typer.Option(None, "--patient", help="Query with a stored patient "
                                       "(its own case is excluded from the neighbours)."),
    k: int = typer.Option(10, "--k", help="Number of similar patients to report."),
    candidates: int = typer.Option(100, help="FAISS seeds (M): the query's nearest reference "
                                   "patients in MSRL's graph space."),
    expand: int = typer.Option(-1, help="Add each seed's nearest references (-1 = the "
                               "model's graph K, 0 = none) before the GSL graph is built."),
    cohort: list[str] = typer.Option([], "--cohort", help="Only neighbours of this cohort; "
                                     "repeatable."),
    require: list[str] = typer.Option([], "--require", help="Only neighbours whose modality is "
                                      "authentic: genomics or histology; repeatable."),
    method: str = typer.Option("auto", help="auto (per cohort, the WSI-only method with the "
                               "best validated Harrell C; says which and why), msrl, or knn."),
    version: str | None = typer.Option(None, "--model-version", "--version", help="MSRL model version (default: "
                                       "the latest)."),
    exact: bool = typer.Option(False, help="GSL over the whole buffer (no FAISS pruning)."),
    persist: bool = typer.Option(False, help="Write the query case and its edges into the "
                                 "case graph."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
    km_png: Path | None = typer.Option(None, help="Also draw the neighbourhood's Kaplan-Meier "
                                       "curve to this PNG file."),
    csv_file: Path | None = typer.Option(None, "--csv", help="Also write the neighbours "
                                         "table (rank, patient_id, cohort, similarity, "
                                         "weight, time, event) to this CSV file."),
    threads: int = typer.Option(1, help="torch/FAISS threads (1 is fastest for one query)."),
    heatmap: Path | None = typer.Option(None, "--heatmap", help="Also draw which patches "
                                        "drive the answer on the patch grid to this PNG "
                                        "(docs/evidence.md)."),
    slide_image: Path | None = typer.Option(None, "--slide-image", help="With --heatmap: "
                                            "the whole-slide image to draw it over "
                                            "(openslide)."),
    store: Path | None = STORE_OPTION,
) -> None:
    """WSI-only query: similar historical patients, their outcomes, predicted survival."""
    _set_threads(threads)
    from casegraph.ingest.store import Store
    from casegraph.retrieval.query import QueryEngine, QueryOptions

    if slide_image is not None and heatmap is None:
        from casegraph.errors import InputError

        raise InputError("--slide-image is the picture under --heatmap", column="--slide-image",
                         fix="add --heatmap out.png")

    opts = QueryOptions(k=k, n_candidates=max(candidates, k), expand=expand, cohorts=tuple(cohort),
                        require=tuple(require), method=method, model_version=version,
                        exact=exact, persist=persist)
    with Store.open(store or default_store_path(), create=False, read_only=not persist) as st:
        engine = QueryEngine(st)
        result = engine.query(slide, patient, opts)
        if heatmap is not None:
            from casegraph.retrieval.evidence import query_heatmap

            drawn = query_heatmap(engine, result, slide, heatmap, slide_image)
            typer.echo(f"patch heatmap written to {drawn}", err=True)
    if km_png is not None:
        from casegraph.retrieval.report import plot_km

        plot_km(result, km_png)
    if csv_file is not None:
        _write_neighbours_csv(result.neighbours, csv_file)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    from casegraph.retrieval.report import print_result

    print_result(result)


NEIGHBOUR_COLUMNS = ("rank", "patient_id", "cohort", "similarity", "weight", "time", "event")


def _write_neighbours_csv(neighbours: Sequence[object], path: Path) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(NEIGHBOUR_COLUMNS)
        for n in neighbours:
            writer.writerow([getattr(n, column) for column in NEIGHBOUR_COLUMNS])


def serve_command(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="TCP port."),
    max_body_mb: int = typer.Option(256, help="Largest request body accepted (MiB)."),
    workers: int = typer.Option(1, min=1, help="uvicorn worker processes (each opens the "
                                "store's published snapshot and loads its own model)."),
    threads: int = typer.Option(1, min=1, help="torch/FAISS threads per process (1 is "
                                "fastest for one query's many small ops, and requests run "
                                "in parallel)."),
    replica: bool = typer.Option(False, "--replica", help="One of several services over a "
                                 "store it may not write (a shared, read-only directory): "
                                 "serve only its published snapshots; never publish, never "
                                 "build a missing index."),
    store: Path | None = STORE_OPTION,
) -> None:
    """Serve the REST API (API keys from CASEGRAPH_API_KEYS or CASEGRAPH_API_KEYS_FILE).

    The service answers from the store's newest published snapshot and switches to a newer
    one within CASEGRAPH_RELOAD_SECONDS (default 2) of a writer's publish, without a
    restart; ingest, attach and graph sync may run meanwhile."""
    import os

    import uvicorn

    from casegraph.retrieval.service import APP_FACTORY, REPLICA_ENV, log_config

    root = (store or default_store_path()).resolve()
    _check_serve_config(root, replica)
    # uvicorn's workers are fresh processes that build the app from the import string;
    # the environment is how this command's options reach them
    os.environ.update({"CASEGRAPH_STORE": str(root), "CASEGRAPH_THREADS": str(threads),
                       "CASEGRAPH_MAX_BODY_BYTES": str(max_body_mb * 1024 * 1024),
                       REPLICA_ENV: "1" if replica else "0"})
    typer.echo(f"casegraph service on http://{host}:{port} (store {root}, {workers} "
               f"worker{'s' if workers > 1 else ''}); send the key in the X-API-Key header",
               err=True)
    uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, workers=workers,
                log_level="info", log_config=log_config())


def _check_serve_config(root: Path, replica: bool = False) -> None:
    """Fail here, with one line, on what would make every worker fail at start-up."""
    from casegraph.config import api_keys, bag_limits
    from casegraph.errors import CasegraphError

    if not api_keys():
        raise CasegraphError("no API keys configured: set CASEGRAPH_API_KEYS (comma "
                             "separated) or CASEGRAPH_API_KEYS_FILE")
    bag_limits()
    if replica:
        _check_published(root)
    else:
        _ensure_published(root)


def _check_published(root: Path) -> None:
    """A replica's start: the store's current snapshot opens (nothing is written)."""
    from casegraph.errors import StoreError
    from casegraph.ingest.publish import open_published, read_current
    from casegraph.retrieval.service import never_published

    if read_current(root) is None:
        raise StoreError(never_published(root))
    snapshot, _ = open_published(root)
    snapshot.close()


def _ensure_published(root: Path) -> None:
    """Publish the store once when nobody has (a store from before snapshots), so the
    service reads a snapshot and writers can run beside it; else check the snapshot opens."""
    from casegraph.errors import StoreError
    from casegraph.ingest.publish import open_published, publish_snapshot, read_current
    from casegraph.ingest.store import Store

    try:
        current = read_current(root)
    except StoreError as exc:
        typer.echo(f"{exc}; publishing a new snapshot", err=True)
        current = None
    if current is None:
        with Store.open(root, create=False) as writable:
            info = publish_snapshot(writable)
        typer.echo(f"published snapshot {info.snapshot_id} of {root}", err=True)
        return
    snapshot, _ = open_published(root)
    snapshot.close()


def _set_threads(n: int) -> None:
    """Intra-op threads: one query is many small torch ops, where more threads only add
    synchronisation (measured: 49 ms with 1 thread vs 262 ms with 2 on a busy 2-core CPU)."""
    import faiss
    import torch

    torch.set_num_threads(max(1, n))
    faiss.omp_set_num_threads(max(1, n))


@index_app.command("rebuild")
def index_rebuild(
    version: str | None = typer.Option(None, "--model-version", "--version", help="Only this model version "
                                       "(default: every index; orphans are deleted)."),
    exact_threshold: int = typer.Option(50_000, help="Exact (flat) index below this many "
                                        "patients, IVF at or above it."),
    store: Path | None = STORE_OPTION,
) -> None:
    """Rebuild vector indexes from the store's embeddings."""
    from casegraph.ingest.store import Store
    from casegraph.retrieval.index import rebuild_indexes

    with Store.open(store or default_store_path(), create=False, read_only=True) as st:
        for loaded in rebuild_indexes(st, version, exact_threshold=exact_threshold):
            params = ", ".join(f"{k}={v}" for k, v in loaded.index.params.items())
            typer.echo(f"rebuilt {loaded.key}: {params}")


@index_app.command("sync")
def index_sync(store: Path | None = STORE_OPTION) -> None:
    """Add newly ingested patients to the saved indexes and drop removed ones (no rebuild)."""
    from casegraph.ingest.store import Store
    from casegraph.retrieval.index import build_index, index_keys, sync_index

    with Store.open(store or default_store_path(), create=False, read_only=True) as st:
        for key in index_keys(st):
            if not (key.directory(st) / "meta.json").exists():
                build_index(st, key)
                typer.echo(f"built {key}")
                continue
            added, removed = sync_index(st, key)
            typer.echo(f"synced {key}: +{added} -{removed}")


@index_app.command("check")
def index_check(store: Path | None = STORE_OPTION) -> None:
    """Compare the saved indexes with the store's rows; exit 1 when they disagree."""
    from casegraph.ingest.store import Store
    from casegraph.retrieval.index import check_indexes

    with Store.open(store or default_store_path(), create=False, read_only=True) as st:
        problems = check_indexes(st)
    for problem in problems:
        typer.echo(f"problem: {problem}")
    if problems:
        raise typer.Exit(1)
    typer.echo("indexes consistent with the store")
