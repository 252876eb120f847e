"""``casegraph train`` (cross-validate a model on a cohort) and ``casegraph evaluate``
(report stored results; export the markdown table, CSV tables and figures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from casegraph.config import default_store_path


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    from casegraph.errors import InputError

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InputError(f"bad --option {pair!r}", column="--option", fix="write KEY=VALUE")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def _check_options(model: str, options: dict[str, Any]) -> None:
    import inspect

    from casegraph.errors import InputError
    from casegraph.models.registry import MODELS

    params = inspect.signature(MODELS.get(model)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise InputError(f"model {model!r} has no option {unknown[0]!r}", column="--option",
                         fix=f"options of {model}: {', '.join(sorted(params))}")


def train(
    model: str = typer.Option(..., "--model", help="Model name (`casegraph models` lists them)."),
    cohort: str = typer.Option(..., "--cohort", help="Cohort name in the store, e.g. blca."),
    store_dir: Path = typer.Option(None, "--store", help="Store directory [CASEGRAPH_STORE]."),
    splits: str = typer.Option("mcat", "--splits", help="mcat (stored split set) | k-fold."),
    n_folds: int = typer.Option(5, "--n-folds", help="Folds for --splits k-fold."),
    epochs: int = typer.Option(None, "--epochs", help="Training epochs (model default if unset)."),
    seed: int = typer.Option(0, "--seed", help="Seed (fold k uses seed + k)."),
    out: Path = typer.Option(None, "--out", help="Folder for checkpoints and the KM figure."),
    bins: str = typer.Option("train", "--bins",
                             help="train: time bins from the training fold; paper: whole "
                             "cohort (MCAT's leak, for reproduction)."),
    select: str = typer.Option("last", "--select", help="last | inner (inner validation split)."),
    select_on_eval: bool = typer.Option(False, "--select-on-eval",
                                        help="Report the best epoch ON THE EVALUATION FOLD "
                                        "(optimistic; labelled as such)."),
    option: list[str] = typer.Option([], "--option", help="Model option KEY=VALUE (JSON value)."),
    folds: str = typer.Option(None, "--folds", help="Only these folds, e.g. 0,1."),
    group_set: str = typer.Option("mcat", "--group-set", help="Gene-group set for genomics."),
    endpoint: str = typer.Option("OS", "--endpoint",
                                 help="Outcome to model: OS | DSS | PFI | DFI (`casegraph info` "
                                 "lists each cohort's)."),
    task: str = typer.Option("survival", "--task",
                             help="survival | classification (of --label; snn or abmil)."),
    label: str = typer.Option(None, "--label",
                              help="Classification: the table column to predict, e.g. "
                              "oncotree_code or a mutation flag."),
    threads: int = typer.Option(None, "--threads", help="torch CPU threads."),
    save_version: bool = typer.Option(False, "--save-version",
                                      help="Also fit on the training patients of --version-fold "
                                      "and store a model version (weights, fitted patients, "
                                      "every cohort patient's risk and survival curve, "
                                      "embeddings; MSRL: also buffer and top-K neighbours)."),
    version_fold: str = typer.Option("0", "--version-fold",
                                     help="Fold whose training patients fit the saved version; "
                                     "'all' uses every patient (none is then held out)."),
    cv: bool = typer.Option(True, "--cv/--no-cv", help="Run the cross-validation."),
    stage: str = typer.Option("all", "--stage",
                              help="MSRL models: all | pretrain (Stage 1 only, per fold, "
                              "into the store's Stage-1 cache) | finetune (Stage 2 from "
                              "that cache; fails if a fold's Stage 1 is missing)."),
) -> None:
    """Cross-validate MODEL on COHORT; results go to the store (resumable: finished folds are
    skipped when the same configuration is run again)."""
    from casegraph.models.distributed import lead_or_follow

    if not lead_or_follow():  # under torchrun, ranks > 0 train rank 0's fits and end here
        return
    import torch

    from casegraph.ingest.outcomes import check_endpoint
    from casegraph.ingest.store import Store
    from casegraph.models.cv import CVConfig, kfold_folds, run_cv, stored_folds
    from casegraph.models.data import CohortData
    from casegraph.models.evaluate import METRICS
    from casegraph.models.plots import km_plot
    from casegraph.models.registry import MODELS, load_model_modules
    from casegraph.models.results import ResultStore

    if threads:
        torch.set_num_threads(threads)
    load_model_modules()
    factory = MODELS.get(model)
    options = _parse_options(option)
    if epochs is not None:
        options["epochs"] = epochs
    if task != "survival" or label is not None:
        if endpoint.upper() != "OS" or bins != "train":
            from casegraph.errors import InputError

            raise InputError("--endpoint and --bins apply to survival tasks",
                             column="--endpoint" if endpoint.upper() != "OS" else "--bins",
                             fix="drop them for --task classification")
        config = CVConfig(model=model, cohort=cohort, splits=splits, n_folds=n_folds, seed=seed,
                          select="eval" if select_on_eval else select, options=options,
                          folds=[int(f) for f in folds.split(",")] if folds else None,
                          group_set=group_set, task=task, label=label)
        _train_classification(config, store_dir, save_version or stage != "all")
        return
    _check_options(model, options)
    if select_on_eval:
        select = "eval"
    endpoint = check_endpoint(endpoint)
    config = CVConfig(model=model, cohort=cohort, splits=splits, n_folds=n_folds, seed=seed,
                      bins=bins, select=select, options=options,
                      folds=[int(f) for f in folds.split(",")] if folds else None,
                      group_set=group_set, endpoint=endpoint)
    config.validate()
    is_msrl = bool(getattr(factory, "uses_stage1_cache", False))
    if stage != "all" and not is_msrl:
        from casegraph.errors import InputError

        raise InputError(f"--stage applies to MSRL models; {model!r} trains in one stage",
                         column="--stage", fix="drop --stage, or use --model msrl")
    with Store.open(store_dir or default_store_path(), create=False) as store:
        if is_msrl:  # runtime options: not part of the run id
            options.update(stage1_cache=str(store.artifacts_dir / "msrl_stage1"), stage=stage)
        if cohort not in store.cohorts():
            from casegraph.errors import InputError

            raise InputError(f"cohort {cohort!r} has no patients in the store",
                             fix=f"cohorts in the store: {', '.join(store.cohorts()) or 'none'}")
        data = CohortData.from_store(store, cohort, group_set=group_set,
                                     require_slides=bool(getattr(factory, "uses_slides", False)),
                                     endpoint=endpoint)
        if len(data) == 0:
            from casegraph.errors import InputError

            raise InputError(f"cohort {cohort!r} has no patients in the store",
                             fix=f"cohorts in the store: {', '.join(store.cohorts()) or 'none'}")
        if splits == "mcat":
            fold_map = stored_folds(data, store, "mcat")
        elif splits == "k-fold":
            fold_map = kfold_folds(data, n_folds, seed)
        else:
            fold_map = stored_folds(data, store, splits)
        config = config.for_data(data, fold_map)
        if select == "eval":
            typer.echo("NOTE: --select-on-eval: epochs are chosen on the evaluation fold; the "
                       "metrics below are OPTIMISTIC (not an honest estimate).")
        typer.echo(f"run {config.run_id()}: {model} on {cohort} {endpoint} ({len(data)} patients, "
                   f"{len(fold_map)} folds, splits={splits}, bins={bins}, select={select})")
        if stage == "pretrain":
            from casegraph.models.msrl.api import pretrain_folds

            pretrain_folds(data, config, fold_map, log=typer.echo)
            return
        if save_version:
            _save_version(store, model, cohort, version_fold, options, group_set, seed,
                          endpoint)
        if not cv:
            return
        results = ResultStore(store)
        run_cv(data, config, fold_map, results=results,
               checkpoint_dir=out / "checkpoints" if out else None, log=typer.echo)
        folds_df = results.fold_results(config.run_id())
        for metric in METRICS:
            values = folds_df[metric].dropna()
            typer.echo(f"{metric}: {values.mean():.4f} ± {values.std(ddof=0):.4f} "
                       f"over {len(values)} folds")
        if out:
            png = out / f"{config.run_id()}_km.png"
            p = km_plot(results.predictions(config.run_id()), png,
                        f"{model} on {cohort} ({endpoint})")
            typer.echo(f"KM figure: {png} (log-rank p = {p:.2e})")


def _train_classification(config: Any, store_dir: Path | None, survival_only: bool) -> None:
    """``train --task classification --label COL``: the same folds and CV runner, scored by
    accuracy / ROC AUC / macro F1."""
    import numpy as np

    from casegraph.errors import InputError
    from casegraph.ingest.cv_results import CLASS_METRIC_COLUMNS
    from casegraph.ingest.store import Store
    from casegraph.models.classification import build_classifier
    from casegraph.models.cv import kfold_folds, run_cv, stored_folds
    from casegraph.models.data import CohortData
    from casegraph.models.results import ResultStore

    config.validate()
    if survival_only:
        raise InputError("--save-version and --stage apply to survival models",
                         column="--task", fix="drop them for --task classification")
    head = build_classifier(config.model, **config.options)  # refuses unknown options
    with Store.open(store_dir or default_store_path(), create=False) as store:
        if config.cohort not in store.cohorts():
            raise InputError(f"cohort {config.cohort!r} has no patients in the store",
                             fix=f"cohorts in the store: {', '.join(store.cohorts()) or 'none'}")
        data = CohortData.from_store(store, config.cohort, group_set=config.group_set,
                                     require_slides=head.uses_slides, label=config.label)
        fold_map = (kfold_folds(data, config.n_folds, config.seed) if config.splits == "k-fold"
                    else stored_folds(data, store, config.splits))
        config = config.for_data(data, fold_map)
        sizes = np.bincount(np.asarray(data.labels), minlength=len(data.label_classes))
        counts = ", ".join(f"{c} {int(n)}" for c, n in zip(data.label_classes, sizes,
                                                             strict=True))
        typer.echo(f"run {config.run_id()}: {config.model} classifies {config.label} on "
                   f"{config.cohort} ({len(data)} patients: {counts}; {len(fold_map)} folds, "
                   f"select={config.select})")
        results = ResultStore(store)
        run_cv(data, config, fold_map, results=results, log=typer.echo)
        folds_df = results.fold_results(config.run_id())
        for metric in CLASS_METRIC_COLUMNS:
            values = folds_df[metric].dropna()
            typer.echo(f"{metric}: {values.mean():.4f} ± {values.std(ddof=0):.4f} "
                       f"over {len(values)} folds")


def evaluate(
    store_dir: Path = typer.Option(None, "--store", help="Store directory [CASEGRAPH_STORE]."),
    run: str = typer.Option(None, "--run", help="One run id (default: every run)."),
    metric: str = typer.Option("c_index", "--metric",
                               help="c_index | c_index_uno | mean_auc | ibs; classification "
                               "runs: accuracy | roc_auc | macro_f1."),
    endpoint: str = typer.Option(None, "--endpoint",
                                 help="Only runs of this endpoint: OS | DSS | PFI | DFI "
                                 "(default: every run, each labelled with its endpoint)."),
    markdown: Path = typer.Option(None, "--markdown", help="Write the markdown table here."),
    km_dir: Path = typer.Option(None, "--km-dir", help="Write one KM figure per run here."),
    csv_dir: Path = typer.Option(None, "--csv", help="Write folds.csv (metrics per run and "
                                 "fold) and predictions.csv (out-of-fold predictions) here."),
    json_dir: Path = typer.Option(None, "--json", help="Write folds.json and predictions.json "
                                  "(the same tables as --csv, one JSON record per row) here."),
    figures: Path = typer.Option(None, "--figures", help="Write per run: KM by risk group, "
                                 "time-dependent AUC and calibration figures here."),
) -> None:
    """Report stored cross-validation results (mean ± std per run) and export them."""
    from casegraph.errors import InputError
    from casegraph.ingest.cv_results import CLASS_METRIC_COLUMNS
    from casegraph.ingest.store import Store
    from casegraph.models.evaluate import METRIC_LABELS, METRICS
    from casegraph.models.plots import km_plot
    from casegraph.models.results import ResultStore, markdown_table

    labels = {**METRIC_LABELS, **CLASS_METRIC_LABELS}
    if metric not in labels:
        raise InputError(f"unknown metric {metric!r}; choose among: {', '.join(labels)}",
                         column="--metric")
    with Store.open(store_dir or default_store_path(), create=False, read_only=True) as store:
        results = ResultStore(store)
        summary = results.summary()
        configs = _run_configs(results)
        endpoints = {r: str(c.get("endpoint", "OS")) for r, c in configs.items()}
        classifying = {r for r, c in configs.items() if c.get("task") == "classification"}
        if endpoint and not summary.empty:
            from casegraph.ingest.outcomes import check_endpoint

            wanted = check_endpoint(endpoint)
            summary = summary[[endpoints.get(str(r), "OS") == wanted for r in summary["run_id"]]]
        if run:
            summary = summary[summary["run_id"] == run]
            if summary.empty:
                raise InputError(f"no run {run!r} in the store",
                                 fix="run `casegraph evaluate` without --run to list runs")
        if summary.empty:
            typer.echo("no cross-validation results in this store; run `casegraph train`")
            return
        for r in summary.itertuples():
            label = " [SELECTED ON EVALUATION FOLD: optimistic]" if r.selection == "eval" else ""
            run_id = str(r.run_id)
            shown = CLASS_METRIC_COLUMNS if run_id in classifying else METRICS
            cells = ", ".join(f"{m}={getattr(r, m + '_mean'):.4f}±{getattr(r, m + '_std'):.4f}"
                              for m in shown)
            what = (f"label={configs[run_id].get('label')}" if run_id in classifying
                    else endpoints.get(run_id, "OS"))
            typer.echo(f"{run_id}: {r.model} {r.cohort} {what} folds={r.folds}{label}: {cells}")
        of_kind = [(str(r) in classifying) == (metric in CLASS_METRIC_COLUMNS)
                   for r in summary["run_id"]]
        table = markdown_table(summary[of_kind], metric)
        typer.echo(f"\n{labels[metric]} (mean ± std over folds):\n{table}")
        if markdown:
            markdown.parent.mkdir(parents=True, exist_ok=True)
            markdown.write_text(f"{labels[metric]} (mean ± std over folds)\n\n{table}",
                                encoding="utf-8")
        survival_runs = summary[[str(r) not in classifying for r in summary["run_id"]]]
        if km_dir:
            for r in survival_runs.itertuples():
                p = km_plot(results.predictions(str(r.run_id)), km_dir / f"{r.run_id}_km.png",
                            f"{r.model} on {r.cohort}")
                typer.echo(f"KM {r.run_id}: log-rank p = {p:.2e}")
        for directory, kind in ((csv_dir, "csv"), (json_dir, "json")):
            if directory:
                _write_tables(results, summary, directory, kind)
        if figures:
            _write_figures(results, survival_runs, figures)


CLASS_METRIC_LABELS = {"accuracy": "Accuracy", "roc_auc": "ROC AUC", "macro_f1": "Macro F1"}


def _run_configs(results: Any) -> dict[str, dict[str, Any]]:
    """Run id -> its stored configuration (empty for one that does not parse); runs
    stored before endpoints and tasks have neither key (OS, survival)."""
    out: dict[str, dict[str, Any]] = {}
    runs = results.runs()
    for run_id, config in zip(runs["run_id"], runs["config"], strict=True):
        try:
            parsed = json.loads(str(config))
        except json.JSONDecodeError:
            parsed = {}
        out[str(run_id)] = parsed if isinstance(parsed, dict) else {}
    return out


def _write_tables(results: Any, summary: Any, directory: Path, kind: str) -> None:
    """folds.<kind>: run_id, model, cohort, then every fold-result column; predictions.<kind>:
    run_id, fold, patient_id, risk, time, event, survival_1..K (S at each bin's end).
    ``kind`` is "csv" or "json" (a list of records; NaN becomes null)."""
    import pandas as pd

    folds, predictions = [], []
    for r in summary.itertuples():
        run_id = str(r.run_id)
        folds.append(results.fold_results(run_id).drop(columns="run_id", errors="ignore")
                     .assign(run_id=run_id, model=r.model, cohort=r.cohort))
        predictions.append(_survival_columns(results.predictions(run_id, with_survival=True))
                           .assign(run_id=run_id))
    directory.mkdir(parents=True, exist_ok=True)
    fold_table = pd.concat(folds, ignore_index=True)
    fold_table = fold_table[["run_id", "model", "cohort",
                             *[c for c in fold_table if c not in ("run_id", "model", "cohort")]]]
    pred_table = pd.concat(predictions, ignore_index=True)
    pred_table = pred_table[["run_id", *[c for c in pred_table if c != "run_id"]]]
    folds_path, preds_path = directory / f"folds.{kind}", directory / f"predictions.{kind}"
    for table, path in ((fold_table, folds_path), (pred_table, preds_path)):
        if kind == "csv":
            table.to_csv(path, index=False)
        else:
            table.to_json(path, orient="records", date_format="iso", date_unit="us")
    typer.echo(f"{kind.upper()}: {folds_path} ({len(fold_table)} folds), "
               f"{preds_path} ({len(pred_table)} predictions)")


def _survival_columns(predictions: Any) -> Any:
    """The survival list column spread into survival_1..K (empty for risk-only models)."""
    import pandas as pd

    curves = [[] if c is None else list(c) for c in predictions.pop("survival")]
    width = max((len(c) for c in curves), default=0)
    spread = pd.DataFrame([c + [None] * (width - len(c)) for c in curves],
                          columns=[f"survival_{k + 1}" for k in range(width)],
                          index=predictions.index, dtype=float)
    return pd.concat([predictions, spread], axis=1)


def _write_figures(results: Any, summary: Any, directory: Path) -> None:
    from casegraph.models.plots import calibration_plot, km_plot, td_auc_plot

    for r in summary.itertuples():
        run_id, title = str(r.run_id), f"{r.model} on {r.cohort}"
        predictions = results.predictions(run_id, with_survival=True)
        if predictions.empty:
            typer.echo(f"figures {run_id}: no predictions stored, skipped")
            continue
        p = km_plot(predictions, directory / f"{run_id}_km.png", title)
        auc = td_auc_plot(predictions, directory / f"{run_id}_td_auc.png", title)
        calibration = calibration_plot(predictions, directory / f"{run_id}_calibration.png",
                                       title, bins=str(r.bins))
        typer.echo(f"figures {run_id}: log-rank p = {p:.2e}, time-dependent AUC at "
                   f"{len(auc)} times, calibration in {len(calibration.points)} groups at "
                   f"{calibration.horizon:.1f} months -> {directory}")


def _save_version(store: Any, model: str, cohort: str, version_fold: str,
                  options: dict[str, Any], group_set: str, seed: int,
                  endpoint: str = "OS") -> None:
    from casegraph.errors import InputError
    from casegraph.models.versioning import train_version

    if version_fold != "all" and not version_fold.isdigit():
        raise InputError(f"bad --version-fold {version_fold!r}", column="--version-fold",
                         fix="give a fold number, or 'all'")
    fold = None if version_fold == "all" else int(version_fold)
    chosen = {"seed": seed, **options}
    groups = str(chosen.pop("group_set", group_set))
    if endpoint != "OS":  # only when asked: MSRL's own train_version takes no endpoint yet
        chosen["endpoint"] = endpoint
    version = train_version(store, cohort, model=model, fold=fold, group_set=groups, **chosen)
    counts = store.versions.get(version).counts
    shown = ", ".join(f"{k} {v}" for k, v in counts.items())
    typer.echo(f"stored model version {version} ({shown})")


def models() -> None:
    """List the registered models, one line each: name and what it is."""
    import inspect

    from casegraph.models.registry import MODELS, model_names

    names = model_names()
    width = max(len(n) for n in names)
    for name in names:
        doc = (inspect.getdoc(MODELS.get(name)) or "").replace("``", "")
        typer.echo(f"{name:<{width}}  {doc.splitlines()[0] if doc else ''}")


def register(app: typer.Typer) -> None:
    """Add ``train``, ``evaluate`` and ``models`` to ``app``."""
    app.command("models")(models)
    app.command("train")(train)
    app.command("evaluate")(evaluate)
