"""``casegraph versions`` (list stored model versions), ``casegraph versions track-record V``
(the CV runs that back a version: found, checked, run with ``--run-cv``, recorded) and
``casegraph predict`` (one patient's risk and survival curve from a version: a stored
patient, or a new one given by patch-feature files and genomics)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from casegraph.config import default_store_path

versions_app = typer.Typer(help="Model versions: list them (no subcommand), or show and "
                                "record a version's validated track record.")


@versions_app.callback(invoke_without_command=True)
def versions(
    ctx: typer.Context,
    store_dir: Path = typer.Option(None, "--store", help="Store directory [CASEGRAPH_STORE]."),
    model: str = typer.Option(None, "--model", help="Only versions of this model."),
    as_json: bool = typer.Option(False, "--json", help="One JSON array (machine output)."),
) -> None:
    """List model versions, oldest first: id, model, cohort, parent, created, counts."""
    from casegraph.ingest.store import Store

    if ctx.invoked_subcommand is not None:
        return
    with Store.open(store_dir or default_store_path(), create=False, read_only=True) as store:
        rows = store.versions.all(model)
    if as_json:
        typer.echo(json.dumps([{"version_id": v.version_id, "model": v.model,
                                "cohort": v.cohort, "parent_id": v.parent_id,
                                "created_at": v.created_at.isoformat(), "counts": v.counts}
                               for v in rows], indent=1))
        return
    if not rows:
        typer.echo("no model versions in this store; run `casegraph train ... --save-version`")
        return
    for v in rows:
        counts = ", ".join(f"{k} {n}" for k, n in v.counts.items())
        typer.echo(f"{v.version_id}  model={v.model}  cohort={v.cohort or 'all'}  "
                   f"parent={v.parent_id or '-'}  created={v.created_at:%Y-%m-%d %H:%M:%S}  "
                   f"{counts}")


def predict(
    version: str = typer.Option(..., "--model-version", "--version", help="Model version id (`casegraph versions`)."),
    patient: str = typer.Option(None, "--patient", help="A stored patient id."),
    slide: list[Path] = typer.Option([], "--slide",
                                     help="A new patient's patch-feature file (.h5/.pt); "
                                     "repeat for several slides."),
    genomics: Path = typer.Option(None, "--genomics",
                                  help="A new patient's genomics: one CSV row like the cohort "
                                  "table (<gene>_rnaseq/_cnv/_mut columns) or a JSON object."),
    store_dir: Path = typer.Option(None, "--store", help="Store directory [CASEGRAPH_STORE]."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Risk and survival curve of one patient from a model version."""
    from casegraph.ingest.store import Store
    from casegraph.models.versioning import read_genomics_row
    from casegraph.retrieval.predictions import predict_for

    values = None if genomics is None else read_genomics_row(genomics)
    with Store.open(store_dir or default_store_path(), create=False, read_only=True) as store:
        result = predict_for(store, version, patient_id=patient, bag_paths=list(slide),
                             genomics=values)
    if as_json:
        typer.echo(result.model_dump_json(indent=1))
        return
    who = result.patient_id if result.patient_id is not None else "new patient"
    source = " (stored)" if result.stored else ""
    typer.echo(f"{who}: risk {result.risk:.4f} by {result.version_id} "
               f"({result.model}, {result.endpoint}){source}")
    if result.inferred:
        typer.echo("genomics: inferred by the model from the slides")
    for point in result.survival:
        end = "end" if point.time is None else f"{point.time:.2f}"
        typer.echo(f"  S({end}) = {point.survival:.4f}")
    if result.coverage is not None:
        for group in result.coverage["groups"]:
            typer.echo(f"  genomics {group['group']}: {group['given']}/{group['expected']} "
                       "features given")
        missing = result.coverage["missing"]
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            typer.echo(f"  missing ({len(missing)}, set to the training mean): {shown}")
        if result.coverage["unknown"]:
            typer.echo(f"  unknown to this version (ignored): "
                       f"{', '.join(result.coverage['unknown'][:10])}")


@versions_app.command("track-record")
def track_record(
    version: str = typer.Argument(..., help="Model version id (`casegraph versions`)."),
    run_cv: bool = typer.Option(False, "--run-cv", help="Cross-validate what is missing: "
                                "the version's model with its options on its cohort, and the "
                                "mean-pooling ABMIL baseline under the same folds."),
    baseline_option: list[str] = typer.Option([], "--baseline-option",
                                              help="Baseline (abmil pooling=mean) option "
                                              "KEY=VALUE (JSON value), e.g. epochs=20."),
    store_dir: Path = typer.Option(None, "--store", help="Store directory [CASEGRAPH_STORE]."),
    as_json: bool = typer.Option(False, "--json", help="The track record as JSON."),
) -> None:
    """Show and record the version's validated performance beside the baseline's.

    The method's and the baseline's finished CV runs are found, checked against the
    cohort's data and recorded; answers then carry them (docs/retrieval.md)."""
    from casegraph.ingest.store import Store
    from casegraph.retrieval.track_record import link_version

    options = _key_values(baseline_option, "--baseline-option")
    log = (lambda _msg: None) if as_json else typer.echo
    with Store.open(store_dir or default_store_path(), create=False) as store:
        store.versions.get(version)  # an unknown id lists the known ones
        report = link_version(store, version, run_cv=run_cv, baseline_options=options, log=log)
    if as_json:
        typer.echo(report.record.model_dump_json(indent=1))
        return
    for line in report.lines:
        typer.echo(line)
    from casegraph.retrieval.report import track_record_lines

    for line in track_record_lines(report.record):
        typer.echo(line)


def _key_values(pairs: list[str], option: str) -> dict[str, object]:
    from casegraph.errors import InputError

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InputError(f"bad {option} {pair!r}", column=option, fix="write KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def register(app: typer.Typer) -> None:
    """Add ``versions`` (with ``track-record``) and ``predict`` to ``app``."""
    app.add_typer(versions_app, name="versions")
    app.command("predict")(predict)
