"""``casegraph attach``: new store patients flow into a trained model version (no retraining)."""

from __future__ import annotations

from pathlib import Path

import typer

from casegraph.config import default_store_path


def attach(
    version: str = typer.Option(None, "--model-version", "--version",
                                help="Model version to attach to (default: the newest MSRL "
                                "version, derived ones included)."),
    store_dir: Path = typer.Option(None, "--store", help="Store directory [CASEGRAPH_STORE]."),
    refresh_buffer: bool = typer.Option(False, "--refresh-buffer",
                                        help="New patients with both authentic modalities "
                                        "enter the buffer (FIFO: oldest out)."),
    skip_unfit: bool = typer.Option(False, "--skip-unfit",
                                    help="Attach the patients that fit and list the others "
                                    "(default: refuse and write nothing)."),
    index: bool = typer.Option(True, "--index/--no-index",
                               help="Also extend the version's vector indexes by the delta."),
) -> None:
    """Attach every store patient VERSION has not seen: a derived version with their
    neighbours, predictions and embeddings (VERSION itself is left unchanged)."""
    from casegraph.errors import InputError
    from casegraph.ingest.store import Store
    from casegraph.retrieval.attach import attach_patients
    from casegraph.retrieval.index import index_keys, open_index

    with Store.open(store_dir or default_store_path(), create=False) as store:
        if version is None:
            from casegraph.retrieval.msrl_adapter import msrl_versions

            candidates = msrl_versions(store)
            if not candidates:
                raise InputError("no MSRL model version in this store", column="--model-version",
                                 fix="train one (casegraph train --model msrl --save-version) "
                                     "or name a version (casegraph versions)")
            version = candidates[-1]
        report = attach_patients(store, version, refresh_buffer=refresh_buffer,
                                 skip_unfit=skip_unfit, log=typer.echo)
        for pid, why in report.skipped:
            typer.echo(f"skipped {pid}: it {why}")
        typer.echo(report.summary())
        if report.version_id is not None and index:
            for key in index_keys(store):
                if key.version_id == report.version_id:
                    loaded = open_index(store, key)
                    typer.echo(f"index {key}: {len(loaded.index)} vectors "
                               f"(+{loaded.meta.get('added', len(loaded.index))})")


def register(app: typer.Typer) -> None:
    app.command("attach")(attach)
