"""Store commands: ``ingest``, ``info``, ``doctor``."""

from __future__ import annotations

from pathlib import Path

import typer

from casegraph.config import default_store_path

STORE_OPTION = typer.Option(None, "--store", "-s", help="Store directory (env CASEGRAPH_STORE).")


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_command)
    app.command("info")(info_command)
    app.command("doctor")(doctor_command)


def ingest_command(
    table: list[Path] = typer.Option([], "--table", "-t", help="MCAT/PORPOISE or generic cohort table (.csv/.csv.zip); repeatable."),
    cohort: str | None = typer.Option(None, help="Cohort name (default: from the file name, e.g. tcga_blca_... -> blca)."),
    labels: Path | None = typer.Option(None, help="SurvPath label table (use with --rna)."),
    rna: Path | None = typer.Option(None, help="SurvPath patients x genes RNA matrix (use with --labels)."),
    signatures: list[Path] = typer.Option([], "--signatures", "-g", help="Gene-group file (columns of genes, or a gene x group 0/1 matrix); repeatable."),
    group_set: str | None = typer.Option(None, help="Name of the gene-group set (default: from the file name)."),
    splits: list[Path] = typer.Option([], "--splits", help="Folder of MCAT splits_{k}.csv files; repeatable."),
    split_name: str = typer.Option("mcat", help="Name to store the split set under."),
    bags: list[Path] = typer.Option([], "--bags", "-b", help="Folder of patch-feature files (.h5/.pt) named by slide id; repeatable."),
    patient_col: str = typer.Option("case_id", help="Generic tables: patient id column."),
    time_col: str = typer.Option("survival_months", help="Generic tables: survival time column."),
    event_col: str | None = typer.Option(None, help="Generic tables: event column, 1 = event observed (death)."),
    censorship_col: str | None = typer.Option(None, help="Generic tables: censorship column, 1 = censored (MCAT convention; the default 'censorship' when neither is given)."),
    slide_col: str = typer.Option("slide_id", help="Generic tables: slide id column."),
    update: bool = typer.Option(False, help="Overwrite changed survival/genomic values of existing patients (recorded in the batch)."),
    k: int = typer.Option(6, help="k-means centres per slide (CCL uses 6)."),
    seed: int = typer.Option(0, help="Seed of the per-slide k-means."),
    encoder: str = typer.Option("unknown", help="Name of the patch encoder that produced the bags."),
    executor: str = typer.Option("local", "--executor", help="Where bags are read, hashed and summarised: local (a thread per core), local:N (N threads) or dask://HOST:PORT (the workers of a Dask scheduler; they must see the bag paths)."),
    store: Path | None = STORE_OPTION,
) -> None:
    """Ingest cohort tables, gene groups, splits and patch bags as one all-or-nothing batch."""
    from casegraph.ingest.executors import executor_from_spec
    from casegraph.ingest.pipeline import IngestRequest, ingest
    from casegraph.ingest.signatures import read_gene_groups
    from casegraph.ingest.splits import read_split_dir
    from casegraph.ingest.store import Store
    from casegraph.ingest.tables import ColumnMapping, read_mcat_table, read_survpath

    if (labels is None) != (rna is None):
        raise typer.BadParameter("--labels and --rna go together")
    mapping = ColumnMapping(patient=patient_col, time=time_col, event=event_col,
                            censorship=None if event_col else (censorship_col or "censorship"),
                            slide=slide_col)
    executor_from_spec(executor)  # a malformed --executor fails before any table is read
    request = IngestRequest(update=update, k=k, seed=seed, encoder=encoder, bag_dirs=list(bags),
                            executor=executor)
    request.tables = [read_mcat_table(p, cohort if len(table) == 1 else None, mapping) for p in table]
    if labels is not None and rna is not None:
        request.tables.append(read_survpath(labels, rna, cohort))
    request.gene_groups = [read_gene_groups(p, group_set if len(signatures) == 1 else None)
                           for p in signatures]
    request.split_sets = [read_split_dir(p, split_name if len(splits) == 1 else f"{split_name}-{p.name}")
                          for p in splits]
    with Store.open(store or default_store_path()) as s:
        report = ingest(s, request)
    _print_report(report)


def _print_report(report) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=False, soft_wrap=True)  # one line per message, also in pipes and logs
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    for path in report.removed_leftovers:
        console.print(f"removed {path} (left by an interrupted ingest, referenced by nothing)",
                      markup=False)
    for name, cov in report.coverage.items():
        console.print(_coverage_line(name, cov), markup=False)
    if not report.changed:
        console.print("nothing to do: the store already holds these inputs")
    else:
        console.print(
            f"batch {report.batch_id}, this batch: {report.new_patients} new patients, "
            f"{len(report.updated_patients)} updated, {report.unchanged_patients} unchanged; "
            f"{report.new_slides} new slides, {report.bags_registered} bags registered; "
            f"{report.slides_without_bags} of its tables' {report.batch_slides} slides without "
            "features", markup=False)
    console.print(f"store total: {report.store_patients} patients, {report.store_slides} slides, "
                  f"{report.store_slides_without_bags} slides without features", markup=False)


def _coverage_line(name: str, cov) -> str:  # type: ignore[no-untyped-def]
    batch = "" if cov.in_batch is None else f"this batch's tables: {cov.in_batch}, "
    lowest, present, size = cov.lowest
    return (f"gene groups {name!r}: {cov.genes} unique genes with features: {batch}"
            f"store total: {cov.in_store} ({cov.in_store / max(cov.genes, 1):.0%}); "
            f"lowest group in the store: {lowest} {present}/{size}")


def info_command(store: Path | None = STORE_OPTION) -> None:
    """Summarise a store: cohorts, patients, slides, modalities, censoring, gene groups."""
    from rich.console import Console

    from casegraph.ingest.info import store_summary
    from casegraph.ingest.store import Store

    with Store.open(store or default_store_path(), create=False, read_only=True) as s:
        summary = store_summary(s)
    Console().print(summary.render())


def doctor_command(
    store: Path | None = STORE_OPTION,
    full: bool = typer.Option(True, help="Re-hash every referenced bag file (slow on big stores)."),
    fix: bool = typer.Option(False, "--fix", help="First remove the files doctor proves unreferenced (interrupted ingests, files superseded by --update); lists each one. Needs the store not in use."),
    deep: bool = typer.Option(False, "--deep", help="Also recompute the vectors of MSRL's gsl indexes with the model and compare them (loads torch; slow). Without it their ids are compared with the version's reference patients."),
) -> None:
    """Check the store: referenced bag files changed or vanished, orphan files, index consistency."""
    from rich.console import Console

    from casegraph.ingest.doctor import run_checks
    from casegraph.ingest.store import Store

    root = store or default_store_path()
    if fix:
        _fix(root)
    with Store.open(root, create=False, read_only=True) as s:
        problems = run_checks(s, rehash=full)
        problems += _index_checks(s, deep)
    if not problems:
        Console().print("[green]ok[/green]: no problems found")
        return
    for problem in problems:
        typer.echo(f"problem: {problem}")
    raise typer.Exit(1)


def _fix(root: Path) -> None:
    from casegraph.errors import StoreError
    from casegraph.ingest.doctor import remove_leftovers
    from casegraph.ingest.store import Store

    try:
        opened = Store.open(root, create=False)
    except StoreError as exc:
        raise StoreError(f"{exc} (doctor --fix needs the store to itself: stop any ingest, "
                         "serve or query using it, then retry)") from None
    with opened as s:  # read-write: DuckDB's exclusive lock proves no ingest is in flight
        removed = remove_leftovers(s, uncommitted_only=False)
    for path in removed:
        typer.echo(f"removed: {path}")
    typer.echo(f"doctor --fix: removed {len(removed)} unreferenced file(s)")


def _index_checks(store, deep: bool) -> list[str]:  # type: ignore[no-untyped-def]
    try:
        from casegraph.retrieval.index import check_indexes
    except ImportError:
        return []
    return list(check_indexes(store, deep=deep))
