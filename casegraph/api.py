"""The Python API for notebooks: ``import casegraph as cg``.

Thin functions over the layers the CLI uses, so a notebook and the command line give the
same results::

    import casegraph as cg
    store = cg.open_store("my-store")
    cg.ingest_batch(store, tables=["tcga_blca_all_clean.csv.zip"], signatures=["mcat.csv"],
              splits=["splits/tcga_blca"], bags=["bags/blca"], encoder="uni")
    cv = cg.cross_validate(store, "snn", "blca", epochs=20)
    cv.folds; cv.predictions; cv.km_plot("km.png"); cv.to_csv("out/")
    version = cg.train_version(store, "msrl", "blca")
    cg.predict(store, version, patient="TCGA-..."); cg.query(store, slides=["new.h5"])
    cg.attach(store, version); graph = cg.case_graph(store)

(``ingest_batch``: ``cg.ingest`` is the storage subpackage.) Every function takes an open :class:`~casegraph.ingest.store.Store` (``open_store``);
errors are the same one-line :class:`~casegraph.errors.InputError` as on the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from casegraph.graph.base import GraphStore
    from casegraph.ingest.pipeline import IngestReport
    from casegraph.ingest.store import Store
    from casegraph.retrieval.attach import AttachReport
    from casegraph.retrieval.predictions import PredictionResult
    from casegraph.retrieval.results import QueryResult

PathLike = str | Path


def open_store(path: PathLike, *, create: bool = True, read_only: bool = False) -> Store:
    """The store directory at ``path`` (created when missing unless ``create=False``)."""
    from casegraph.ingest.store import Store

    return Store.open(path, create=create, read_only=read_only)


def ingest_batch(store: Store, *, tables: Sequence[PathLike] = (), cohort: str | None = None,
           signatures: Sequence[PathLike] = (), splits: Sequence[PathLike] = (),
           bags: Sequence[PathLike] = (), encoder: str = "unknown",
           update: bool = False, executor: str | None = None) -> IngestReport:
    """One all-or-nothing batch (as ``casegraph ingest``): MCAT/PORPOISE tables, gene-group
    files, split folders and folders of patch bags; ``executor`` as ``--executor``
    (``local`` by default, ``dask://HOST:PORT``)."""
    from casegraph.ingest.pipeline import IngestRequest
    from casegraph.ingest.pipeline import ingest as run_ingest
    from casegraph.ingest.signatures import read_gene_groups
    from casegraph.ingest.splits import read_split_dir
    from casegraph.ingest.tables import read_mcat_table

    request = IngestRequest(update=update, encoder=encoder, bag_dirs=[Path(b) for b in bags],
                            executor=executor)
    request.tables = [read_mcat_table(p, cohort if len(tables) == 1 else None) for p in tables]
    request.gene_groups = [read_gene_groups(p) for p in signatures]
    request.split_sets = [read_split_dir(p) for p in splits]
    return run_ingest(store, request)


@dataclass
class CVResult:
    """A cross-validation run: ``folds`` (one row per fold: metrics, sizes) and
    ``predictions`` (out-of-fold: run_id, fold, patient_id, risk, time, event, ...)."""

    run_id: str
    folds: pd.DataFrame
    predictions: pd.DataFrame
    title: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    def km_plot(self, path: PathLike) -> float:
        """Kaplan-Meier curves of the high / low risk halves (out-of-fold) to ``path``;
        the log-rank p."""
        from casegraph.models.plots import km_plot

        return float(km_plot(self.predictions, Path(path), self.title or self.run_id))

    def to_csv(self, folder: PathLike) -> list[Path]:
        """``folds.csv`` and ``predictions.csv`` in ``folder``; their paths."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "folds.csv", out / "predictions.csv"]
        self.folds.to_csv(written[0], index=False)
        self.predictions.to_csv(written[1], index=False)
        return written


def cross_validate(store: Store, model: str, cohort: str, *, splits: str = "mcat",
                   n_folds: int = 5, seed: int = 0, group_set: str = "mcat",
                   bins: str = "train", select: str = "last",
                   folds: Sequence[int] | None = None, **options: Any) -> CVResult:
    """Cross-validate ``model`` on ``cohort`` (as ``casegraph train``); results are kept in
    the store and a finished fold is not re-run."""
    from casegraph.errors import InputError
    from casegraph.models.cv import CVConfig, kfold_folds, run_cv, stored_folds
    from casegraph.models.data import CohortData
    from casegraph.models.registry import MODELS, load_model_modules
    from casegraph.models.results import ResultStore

    load_model_modules()
    factory = MODELS.get(model)
    data = CohortData.from_store(store, cohort, group_set=group_set,
                                 require_slides=bool(getattr(factory, "uses_slides", False)))
    if len(data) == 0:
        raise InputError(f"cohort {cohort!r} has no patients in the store",
                         fix=f"cohorts in the store: {', '.join(store.cohorts()) or 'none'}")
    fold_map = (kfold_folds(data, n_folds, seed) if splits == "k-fold"
                else stored_folds(data, store, splits))
    config = CVConfig(model=model, cohort=cohort, splits=splits, n_folds=n_folds, seed=seed,
                      bins=bins, select=select, options=dict(options),
                      folds=list(folds) if folds is not None else None, group_set=group_set)
    results = ResultStore(store)
    run_cv(data, config, fold_map, results=results)
    run_id = config.run_id()
    fold_rows = results.fold_results(run_id)
    metric_means = {m: float(fold_rows[m].mean()) for m in ("c_index", "c_index_uno",
                                                            "mean_auc", "ibs")
                    if m in fold_rows}
    return CVResult(run_id, fold_rows, results.predictions(run_id), f"{model} on {cohort}",
                    metric_means)


def train_version(store: Store, model: str, cohort: str | None, *, fold: int | None = 0,
                  group_set: str = "mcat", **options: Any) -> str:
    """Fit ``model`` on ``fold``'s training patients (None = all) and store it as a model
    version with predictions for the cohort's patients; its id."""
    from casegraph.models.versioning import train_version as fit_and_store

    return fit_and_store(store, cohort, model, fold=fold, group_set=group_set, **options)


def load_version(store: Store, version_id: str) -> Any:
    """The fitted model of a version (a derived version loads its root's weights)."""
    from casegraph.models.versioning import load_version as load

    return load(store, version_id)[0]


def predict(store: Store, version_id: str, *, patient: str | None = None,
            slides: Sequence[PathLike] = (), genomics: PathLike | dict[str, float] | None = None
            ) -> PredictionResult:
    """Risk and survival curve from a version for a stored ``patient`` or a new one given
    by its ``slides`` and, for versions that read them, ``genomics`` (a one-row CSV in the
    cohort table's format, a JSON file, or a dict feature -> value)."""
    from casegraph.models.versioning import read_genomics_row
    from casegraph.retrieval.predictions import predict_for

    values = (read_genomics_row(genomics) if isinstance(genomics, str | Path) else genomics)
    return predict_for(store, version_id, patient_id=patient,
                       bag_paths=[Path(s) for s in slides], genomics=values)


def query(store: Store, *, slides: Sequence[PathLike] = (), patient: str | None = None,
          **options: Any) -> QueryResult:
    """A WSI-only query (see :class:`casegraph.retrieval.options.QueryOptions` for
    ``options``: k, n_candidates, cohorts, require, method, model_version, exact)."""
    from casegraph.retrieval.query import QueryEngine, QueryOptions

    for key in ("cohorts", "require"):
        if key in options:
            options[key] = tuple(options[key])
    return QueryEngine(store).query([Path(s) for s in slides], patient, QueryOptions(**options))


def attach(store: Store, version_id: str, *, refresh_buffer: bool = False,
           skip_unfit: bool = False) -> AttachReport:
    """New store patients join ``version_id`` as a derived version (``casegraph attach``)."""
    from casegraph.retrieval.attach import attach_patients

    return attach_patients(store, version_id, refresh_buffer=refresh_buffer,
                           skip_unfit=skip_unfit)


def case_graph(store: Store, backend: str = "auto") -> GraphStore:
    """The configured case graph (Neo4j when CASEGRAPH_NEO4J_URI is set, else embedded);
    ``sync_graph(store, graph)`` brings it up to date, ``graph.to_networkx(...)`` exports."""
    from casegraph.graph import open_graph_store

    return open_graph_store(store, backend)


def sync_graph(store: Store, graph: GraphStore) -> Any:
    """Write what changed since the last sync into ``graph`` (the delta); the report."""
    from casegraph.graph.sync import sync_graph as run_sync

    return run_sync(store, graph)


__all__ = ["CVResult", "attach", "case_graph", "cross_validate", "ingest_batch", "load_version",
           "open_store", "predict", "query", "sync_graph", "train_version"]
