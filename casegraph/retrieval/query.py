"""WSI-only queries: who are the similar historical patients, what happened to them, and
what does that predict?

Two methods, chosen per query and named in the result:

- ``msrl-gsl`` (a trained MSRL model version exists): encode the bag with the version's
  WSI encoder, take the top-M FAISS candidates among the version's patients (filters
  applied), and let MSRL's Inductor + graph structure learner + GCN predict over them.
- ``embedding-knn`` (fallback, said so in ``fallback_reason``): the bag's mean patch
  feature against each stored patient's mean patch feature (the :data:`SLIDE_MEAN`
  index), softmax edge weights, and the weighted Kaplan-Meier curve of the k neighbours
  evaluated at the time bins gives survival and risk.

A *stored* patient of an MSRL version (no uploads, no filters, not ``exact``, k at most
its stored rows) is answered from the version's stored case graph instead
(:meth:`QueryEngine.stored_answer`): its ``model_neighbours`` rows in rank order and its
stored prediction, the same neighbours the graph backends and Cypher return, without
running the model. Everything else is computed as above.

Every answer carries ``track_record`` (casegraph.retrieval.track_record: the answering
method's validated C and IBS on its cohort, the mean-pooling ABMIL baseline's under the
same folds, and a calibration note); with ``method="auto"`` (and no version named) the
method is chosen per cohort by validated Harrell C, said in ``method_choice``.

Thread safety: ``QueryEngine.lock`` (re-entrant) guards the store's DuckDB connection and
the engine's caches; the model forward, FAISS searches and bag reads run outside it, so
one engine serves concurrent requests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from casegraph.config import BagLimits, bag_limits
from casegraph.errors import InputError
from casegraph.ingest.bags import LIMIT_FIX, Bag, BagTooLarge, read_bag, slide_key
from casegraph.ingest.store import Store
from casegraph.models.neighbourhood import (
    bin_end_times,
    kaplan_meier,
    median_survival,
    neighbour_prediction,
    softmax_weights,
)
from casegraph.retrieval import msrl_adapter
from casegraph.retrieval import track_record as records
from casegraph.retrieval.catalog import PatientCatalog, genomic_group_summaries
from casegraph.retrieval.index import (
    SLIDE_MEAN,
    Hit,
    IndexKey,
    LoadedIndex,
    open_index,
    slide_mean_embeddings,
)
from casegraph.retrieval.msrl_query import CoreAnswer, answer_wsi_only, candidate_ids
from casegraph.retrieval.options import MAX_K, QueryOptions
from casegraph.retrieval.results import (
    GroupSummary,
    IndexInfo,
    InputProvenance,
    KaplanMeier,
    Neighbour,
    Provenance,
    QueryResult,
    SurvivalCurve,
)

__all__ = ["MAX_K", "CoreAnswer", "QueryEngine", "QueryOptions", "answer_wsi_only",
           "candidate_ids", "query"]

FloatArray = npt.NDArray[np.float32]


@dataclass
class QueryInput:
    """The query case: its patches (N, D), files, and the stored patient it is (if any)."""

    features: FloatArray | None
    mean: FloatArray
    files: list[str]
    n_patches: int
    patient_id: str | None
    provenance: list[InputProvenance] = field(default_factory=list)


@dataclass(frozen=True)
class StoredGraph:
    """One version's stored case graph, read once: every patient's top-K rows along the
    lineage (the nearest member with rows for a patient wins) as flat arrays, and its
    stored predictions. ``spans``: patient -> (start, end) into ``neighbour_ids`` /
    ``weights`` (rank order); ``predictions``: patient -> (risk, survival or None)."""

    version_id: str
    spans: dict[str, tuple[int, int]]
    neighbour_ids: npt.NDArray[np.object_]
    weights: npt.NDArray[np.float64]
    predictions: dict[str, tuple[float, list[float] | None]]
    bin_ends: list[float] | None
    k: int

    @classmethod
    def read(cls, store: Store, version_id: str) -> StoredGraph:
        lineage = store.versions.lineage(version_id)
        frames = [store.versions.neighbours(v, own_only=True) for v in lineage]
        seen: set[str] = set()
        kept = []
        for frame in frames:  # nearest member first: its patients hide the older rows
            mine = frame[~frame["patient_id"].isin(seen)]
            seen.update(mine["patient_id"].unique())
            kept.append(mine)
        rows = pd.concat(kept, ignore_index=True).sort_values(["patient_id", "rank"],
                                                              kind="stable")
        patients = rows["patient_id"].to_numpy(dtype=object)
        starts = np.flatnonzero(np.r_[True, patients[1:] != patients[:-1]]) if len(rows) \
            else np.zeros(0, dtype=np.int64)
        ends = np.r_[starts[1:], len(rows)]
        spans = dict(zip(patients[starts].tolist(),
                         zip(starts.tolist(), ends.tolist(), strict=True), strict=True))
        predictions = store.versions.predictions(version_id)
        newest = {str(v): i for i, v in enumerate(lineage)}
        predictions = predictions.assign(depth=predictions["version_id"].map(newest)) \
            .sort_values("depth", kind="stable").drop_duplicates("patient_id")
        by_patient = dict(zip(predictions["patient_id"].astype(str),
                              zip(predictions["risk"].astype(float), predictions["survival"],
                                  strict=True), strict=True))
        return cls(version_id, spans, rows["neighbour_id"].to_numpy(dtype=object),
                   rows["weight"].to_numpy(dtype=np.float64), by_patient,
                   _stored_bin_ends(store, version_id), int((ends - starts).max(initial=0)))

    def rows(self, patient_id: str) -> tuple[list[str], npt.NDArray[np.float64]]:
        """The patient's stored (neighbour ids, weights), rank order; empty when none."""
        start, end = self.spans.get(patient_id, (0, 0))
        return [str(p) for p in self.neighbour_ids[start:end]], self.weights[start:end]


class QueryEngine:
    """Answers queries against one open store; caches the catalog, indexes, models and
    the stored case graphs. ``lock`` guards the store connection and the caches."""

    def __init__(self, store: Store, limits: BagLimits | None = None, *,
                 build_indexes: bool = True) -> None:
        self.store = store
        self.build_indexes = build_indexes  # False: a missing saved index is an error
        self.limits = limits or bag_limits()
        self.lock = threading.RLock()
        self.catalog = PatientCatalog.from_store(store)
        self._indexes: dict[IndexKey, LoadedIndex] = {}
        self._bins: npt.NDArray[np.float64] | None = None
        self._models: dict[str, Any] = {}
        self._stored: dict[str, StoredGraph] = {}
        self._versions: dict[tuple[str, str | None], tuple[str | None, str]] = {}
        self._choices: dict[tuple[Any, ...], tuple[str | None, str,
                                                   records.MethodChoice | None]] = {}
        self._records: dict[tuple[Any, ...], records.TrackRecord] = {}
        self._lookup: records.RunLookup | None = None
        self._groups: dict[tuple[str, str | None], dict[str, GroupSummary]] = {}
        self._slide_owners: dict[str, str] | None = None
        self._fields: dict[str, dict[str, Any]] | None = None
        self._cases: dict[str, set[str]] | None = None

    # ------------------------------------------------------------------ public
    def query(
        self,
        files: Sequence[str | Path] = (),
        patient_id: str | None = None,
        options: QueryOptions | None = None,
    ) -> QueryResult:
        opts = (options or QueryOptions()).validated()
        if not files and patient_id is not None:
            stored = self.stored_answer(patient_id, opts)
            if stored is not None:
                stored = self.with_track_record(stored, opts)
                return self._persist(stored, patient_id) if opts.persist else stored
        q = self.load_input(files, patient_id)
        version, reason, choice = self.choose(opts, self.query_cohort(q.patient_id, opts))
        if choice is not None and choice.method == records.WSI_MODEL_METHOD:
            result = self._query_wsi_model(q, str(choice.version), opts)
        elif version is not None:
            result = self._query_msrl(q, version, opts)
        else:
            result = self._query_knn(q, opts, reason)
        result = self.with_track_record(result, opts)
        if opts.persist:
            result = self._persist(result, q.patient_id)
        return result

    def similar(self, patient_id: str, options: QueryOptions | None = None) -> QueryResult:
        """The stored patient as a query (its own case excluded from the neighbours)."""
        return self.query((), patient_id, options)

    def _cached(self, cache: dict[Any, Any], key: Any, make: Callable[[], Any]) -> Any:
        """``cache[key]``, made once under the engine's lock."""
        with self.lock:
            if key not in cache:
                cache[key] = make()
            return cache[key]

    def choose_version(self, opts: QueryOptions) -> tuple[str | None, str]:
        """:func:`msrl_adapter.choose_version`, remembered per (method, version)."""
        return self._cached(self._versions, (opts.method, opts.model_version),
                            lambda: msrl_adapter.choose_version(self.store, opts.method,
                                                                opts.model_version))

    def choose(self, opts: QueryOptions, cohort: str | None
               ) -> tuple[str | None, str, records.MethodChoice | None]:
        """(MSRL version or None, the fallback's reason, what ``auto`` chose and why):
        ``auto`` without a named version picks, per cohort, the method with the best
        validated Harrell C (:func:`records.choose_method`); any other request is
        :meth:`choose_version`'s, with no choice to report."""
        if opts.method != "auto" or opts.model_version is not None:
            return (*self.choose_version(opts), None)
        return self._cached(self._choices, (cohort, opts.k, opts.temperature),
                            lambda: self._auto_choice(opts, cohort))

    def _auto_choice(self, opts: QueryOptions, cohort: str | None
                     ) -> tuple[str | None, str, records.MethodChoice | None]:
        default, reason = self.choose_version(opts)
        versions = msrl_adapter.msrl_versions(self.store) if default is not None else []
        choice = records.choose_method(self.run_lookup(), cohort, versions, opts.k,
                                       opts.temperature, default,
                                       records.wsi_model_versions(self.store))
        if choice.method == records.KNN_METHOD:
            return None, reason if default is None else choice.reason, choice
        return choice.version, "", choice

    def query_cohort(self, patient_id: str | None, opts: QueryOptions) -> str | None:
        """The cohort a query belongs to: the stored patient's, else the one ``--cohort``
        filter, else the store's only cohort; None when it cannot be told."""
        if patient_id is not None:
            return str(self._patient_fields(patient_id)["cohort"])
        if len(opts.cohorts) == 1:
            return opts.cohorts[0]
        cohorts = self.catalog.table["cohort"].unique()
        return str(cohorts[0]) if len(cohorts) == 1 else None

    def run_lookup(self) -> records.RunLookup:
        """The store's CV runs, read once (the store a served state reads is a snapshot)."""
        with self.lock:
            if self._lookup is None:
                self._lookup = records.RunLookup(self.store)
            return self._lookup

    def version_track_record(self, version_id: str) -> records.TrackRecord:
        """A version's track record without an answer (no calibration), cached."""
        return self._cached(self._records, (version_id,),
                            lambda: records.version_record(self.run_lookup(), version_id))

    def with_track_record(self, result: QueryResult, opts: QueryOptions) -> QueryResult:
        """``result`` with its method's track record, the calibration of this answer and,
        for ``auto``, the method choice."""
        cohort = self.query_cohort(result.query_patient_id, opts)
        _, _, choice = self.choose(opts, cohort)
        version = result.model_version

        record = self.version_track_record(version) if version is not None else \
            self._cached(self._records, (None, cohort, opts.k, opts.temperature),
                         lambda: records.knn_record(self.run_lookup(), cohort, opts.k,
                                                    opts.temperature))
        update: dict[str, Any] = {"calibration": records.calibration(
            result.survival.times, result.survival.survival,
            [n.time for n in result.neighbours], [n.event for n in result.neighbours])}
        if version is None and record.run_id is not None and opts.cohorts != (cohort,):
            update["note"] = (f"validated with neighbours from cohort {cohort}'s training "
                              "folds; this answer searched every cohort (--cohort "
                              f"{cohort} answers as validated)")
        record = record.model_copy(update=update)
        return result.model_copy(update={"track_record": record, "method_choice": choice})

    def model(self, version: str) -> Any:
        return self._cached(self._models, version,
                            lambda: msrl_adapter.load(self.store, version))

    def index(self, key: IndexKey) -> LoadedIndex:
        return self._cached(self._indexes, key,
                            lambda: open_index(self.store, key, build=self.build_indexes))

    def stored_graph(self, version: str) -> StoredGraph:
        """The version's stored case graph, read on first use (one pass over its rows)."""
        return self._cached(self._stored, version,
                            lambda: StoredGraph.read(self.store, version))

    # ------------------------------------------------------------------ stored answers
    def stored_answer(self, patient_id: str, options: QueryOptions | None = None
                      ) -> QueryResult | None:
        """The stored patient's answer from its MSRL version's stored case graph, or None
        when it must be computed: filters, ``exact`` or search options (``n_candidates``,
        ``expand``, ``pool`` other than their defaults) given, no MSRL version, no stored
        neighbour rows or prediction for the patient, or k above its stored rows.

        neighbours: the stored rows in rank order (the version's learned top-K: for a
        trained version the learned GSL similarity over authentic fused features, the
        patient's own case excluded; for a patient ``attach`` added, the query path's
        answer); ``similarity`` = the stored weight, ``weight`` = it rescaled to sum to 1
        over the reported neighbours; risk and survival: the stored prediction."""
        opts = (options or QueryOptions()).validated()
        if opts.cohorts or opts.require or opts.exact or _searches(opts):
            return None
        cohort = self.query_cohort(patient_id, opts)  # an unknown patient is an InputError
        version, _, choice = self.choose(opts, cohort)
        if version is None or (choice is not None and choice.method != records.MSRL_METHOD):
            return None
        graph = self.stored_graph(version)
        ids, stored_weights = graph.rows(patient_id)
        n_stored = len(ids)
        same_case = self._same_case(patient_id)
        if any(p in same_case for p in ids):  # rows written before the case rule
            keep = [p not in same_case for p in ids]
            ids, stored_weights = [p for p, k in zip(ids, keep, strict=True) if k], \
                stored_weights[np.asarray(keep, dtype=bool)]
        prediction = graph.predictions.get(patient_id)
        if not ids or opts.k > len(ids) or prediction is None:
            return None
        ids, stored_weights = ids[: opts.k], stored_weights[: opts.k]
        total = float(stored_weights.sum())
        weights = stored_weights / total if total > 0 else stored_weights
        neighbours = self._neighbours([Hit(p, float(s)) for p, s in zip(ids, stored_weights,
                                                                       strict=True)],
                                      weights, opts)
        risk, surv = prediction
        if surv is None:
            risk_knn, survival = self._neighbourhood_prediction(neighbours, weights)
            risk = risk if np.isfinite(risk) else risk_knn
        else:
            times = graph.bin_ends if graph.bin_ends and len(graph.bin_ends) == len(surv) \
                else self._bin_ends().tolist()
            survival = SurvivalCurve(times=list(times), survival=[float(v) for v in surv])
        info = IndexInfo(version_id=version, kind="stored-neighbours", type="model_neighbours",
                         n=len(graph.spans), params={"k": graph.k})
        return self._assemble(
            patient_id, [], 0, list(self._stored_provenance(patient_id)), opts,
            method="msrl-gsl", reason=None, version=version, index=info,
            risk=risk if np.isfinite(risk) else 0.0, survival=survival, neighbours=neighbours,
            n_candidates=n_stored,
            notes=["answered from the version's stored case graph: its stored top-K "
                   "neighbours (the same rows the case graph and Cypher return) and its "
                   "stored prediction; similarity is the stored edge weight, weight that "
                   "rescaled to sum to 1 over the reported neighbours"])

    def _stored_provenance(self, patient_id: str) -> list[InputProvenance]:
        row = self._patient_fields(patient_id)
        return [InputProvenance(name="stored patient", modality="histology",
                                status=row["histology"],
                                detail=f"stored slides of patient {patient_id}")]

    # ------------------------------------------------------------------ inputs
    def load_input(self, files: Sequence[str | Path], patient_id: str | None) -> QueryInput:
        if not files and patient_id is None:
            raise InputError("nothing to query", fix="give patch-feature files (--slide) or a "
                             "stored patient id (--patient)")
        if patient_id is not None:
            self.catalog.require(patient_id)
        if files:
            return self._input_from_files([Path(f) for f in files], patient_id)
        assert patient_id is not None
        return self._input_from_patient(patient_id)

    def _input_from_files(self, paths: list[Path], patient_id: str | None) -> QueryInput:
        if not paths:
            raise InputError("no patch-feature files to query with", column="files",
                             fix="give at least one .h5/.pt file")
        bags = read_bags(paths, self.limits)
        dims = {b.dim for b in bags}
        if len(dims) > 1:
            raise InputError(f"the query files have different feature dims {sorted(dims)}",
                             file=paths[0], column="features", fix="query one encoder's features")
        feats = bags[0].features if len(bags) == 1 else np.concatenate([b.features for b in bags])
        sums = bags[0].column_sums if len(bags) == 1 else None
        # the validation pass's column sums give the same float32 mean without another pass
        mean = feats.mean(axis=0) if sums is None else np.true_divide(sums, feats.shape[0],
                                                                         dtype=np.float32)
        by_slide = self._slide_owner_map()
        provenance = []
        for path in paths:
            owner = by_slide.get(slide_key(path.name))
            if owner is not None and patient_id is None:
                patient_id = str(owner)
            status: Provenance = "unknown"
            detail = "uploaded file; its provenance is not recorded"
            if owner is not None:
                status = self.catalog.table.at[str(owner), "histology"]
                detail = f"stored slide of patient {owner}"
            elif _h5_marks_simulation(path):
                status, detail = "simulated", "file attributes name the simulator"
            provenance.append(InputProvenance(name=path.name, modality="histology",
                                              status=status, detail=detail))
        return QueryInput(feats, mean, [str(p) for p in paths], int(feats.shape[0]),
                          patient_id, provenance)

    def _slide_owner_map(self) -> dict[str, str]:
        """slide id -> patient id of every stored slide, read once."""
        with self.lock:
            if self._slide_owners is None:
                slides = self.store.slides()
                self._slide_owners = dict(zip(slides["slide_id"].astype(str),
                                              slides["patient_id"].astype(str), strict=True))
            return self._slide_owners

    def _input_from_patient(self, patient_id: str) -> QueryInput:
        with self.lock:
            return self._input_from_patient_locked(patient_id)

    def _input_from_patient_locked(self, patient_id: str) -> QueryInput:
        row = self.catalog.require(patient_id)
        slides = self.store.slides()
        mine = slides[(slides["patient_id"] == patient_id) & slides["feature_path"].notna()]
        if mine.empty:
            raise InputError(_no_features_problem(patient_id, int(row["n_slides"])),
                             column="patient_id",
                             fix="ingest its bags (casegraph ingest --bags DIR)")
        status = row["histology"]
        prov = [InputProvenance(name=str(s), modality="histology", status=status,
                                detail=f"stored slide of patient {patient_id}")
                for s in mine["slide_id"]]
        ids, means = slide_mean_embeddings(self.store, [patient_id])
        n_patches = int(mine["n_patches"].fillna(0).sum())
        if ids:
            return QueryInput(None, means[0], list(mine["feature_path"].dropna()), n_patches,
                              patient_id, prov)
        q = self._input_from_files([Path(p) for p in mine["feature_path"].dropna()], patient_id)
        return replace(q, provenance=prov)

    def features_of(self, q: QueryInput) -> FloatArray:
        return self._features_and_mean(q)[0]

    def _features_and_mean(self, q: QueryInput) -> tuple[FloatArray, FloatArray]:
        """The query's patches (N, D), read now for a stored patient, and their patch mean
        (D,) (a stored patient's ``q.mean`` is its slide summaries', not these patches')."""
        if q.features is not None:
            return q.features, q.mean
        read = self._input_from_files([Path(f) for f in q.files], q.patient_id)
        assert read.features is not None
        q.features = read.features
        return read.features, read.mean

    # ------------------------------------------------------------------ methods
    def _exclusions(self, q: QueryInput) -> set[str]:
        return self.catalog.same_case(q.patient_id) if q.patient_id else set()

    def _query_knn(self, q: QueryInput, opts: QueryOptions, reason: str) -> QueryResult:
        loaded = self.index(IndexKey(SLIDE_MEAN, "wsi"))
        if q.mean.shape[0] != loaded.index.dim:
            raise InputError(
                f"the query has {q.mean.shape[0]}-d patch features, the stored slides "
                f"{loaded.index.dim}-d", file=q.files[0] if q.files else None,
                column="features", fix="use features from the same patch encoder")
        allowed = self.catalog.allowed(opts.cohorts, opts.require)
        hits = loaded.index.search(loaded.prepare_query(q.mean), opts.k, allowed=allowed,
                                   exclude=self._exclusions(q))[0]
        weights = softmax_weights([h.score for h in hits], opts.temperature)
        neighbours = self._neighbours(hits, weights, opts)
        risk, survival = self._neighbourhood_prediction(neighbours, weights)
        return self._result(
            q, opts, method="embedding-knn", reason=reason, version=None, loaded=loaded,
            risk=risk, survival=survival,
            neighbours=neighbours, n_candidates=len(hits),
            notes=["no trained MSRL model answered: neighbours are ranked by the cosine "
                   "similarity of mean patch features, and risk/survival come from their "
                   "weighted Kaplan-Meier curve"])

    def _query_wsi_model(self, q: QueryInput, version: str, opts: QueryOptions) -> QueryResult:
        """A WSI-only version that is not MSRL (abmil, ...) answers: its risk and survival
        for the query's slides (a stored patient: its stored row), beside the embedding-knn
        neighbours (the model has no neighbours of its own)."""
        from casegraph.retrieval.predictions import predict_for

        knn = self._query_knn(q, opts, "")
        with self.lock:
            predicted = (predict_for(self.store, version, bag_paths=q.files) if q.files
                         else predict_for(self.store, version, patient_id=q.patient_id))
        follow_up = float(self.catalog.table["time"].max())
        times, previous = [], 0.0
        for point in predicted.survival:
            end = max(follow_up, previous) if point.time is None else float(point.time)
            times.append(end)
            previous = end
        survival = SurvivalCurve(times=times, survival=[p.survival for p in predicted.survival])
        note = (f"risk and survival from model version {version} ({predicted.model}, "
                "WSI-only); neighbours are ranked by the cosine similarity of mean patch "
                "features (the embedding-knn neighbours: the model has none of its own)")
        return knn.model_copy(update={
            "method": records.WSI_MODEL_METHOD, "fallback_reason": None,
            "model_version": version, "risk": float(predicted.risk), "survival": survival,
            "notes": [note, *knn.notes[1:]]})

    def _query_msrl(self, q: QueryInput, version: str, opts: QueryOptions) -> QueryResult:
        model = self.model(version)
        feats, mean = self._features_and_mean(q)
        expected_dim = getattr(model, "bag_dim_", feats.shape[1])
        if feats.shape[1] != expected_dim:
            raise InputError(f"the query has {feats.shape[1]}-d patch features, model version "
                             f"{version} was trained on {expected_dim}-d",
                             file=q.files[0] if q.files else None, column="features",
                             fix="use features from the same patch encoder")
        loaded = self.index(IndexKey(version, msrl_adapter.GSL_KIND))
        allowed = self.catalog.allowed(opts.cohorts, opts.require)
        core = answer_wsi_only(model, loaded, feats, opts, allowed, self._exclusions(q),
                               mean=mean)
        answer_pairs, risk, surv_values = core.neighbours, core.risk, core.survival
        n_candidates, vector = core.n_candidates, core.vector
        ids = [p for p, _ in answer_pairs]
        hits = [Hit(p, s) for p, s in zip(ids, self._similarities(loaded, vector, ids),
                                          strict=True)]
        w = np.asarray([wt for _, wt in answer_pairs], dtype=np.float64)
        weights = w / w.sum() if w.size and w.sum() > 0 else w
        neighbours = self._neighbours(hits, weights, opts)
        notes = ["genomics of the query are absent: MSRL's Inductor inferred a genomics "
                 "prompt from the WSI embedding",
                 "edge weights are the GCN graph's normalised weights of the query's edges, "
                 "rescaled to sum to 1 over the reported neighbours"]
        if surv_values is None:
            risk_knn, survival = self._neighbourhood_prediction(neighbours, weights)
            if not np.isfinite(risk):
                risk = risk_knn
            notes.append("survival is the neighbours' weighted Kaplan-Meier curve")
        else:
            times = (msrl_adapter.bin_ends(model, len(surv_values), self._max_follow_up(model))
                     or self._bin_ends().tolist())
            survival = SurvivalCurve(times=list(times),
                                     survival=[float(v) for v in surv_values])
        return self._result(
            q, opts, method="msrl-gsl", reason=None, version=version, loaded=loaded,
            risk=risk if np.isfinite(risk) else 0.0, survival=survival, neighbours=neighbours,
            n_candidates=n_candidates, notes=notes)

    def _similarities(self, loaded: LoadedIndex, vector: FloatArray,
                      ids: list[str]) -> list[float]:
        """Cosine similarity of the prepared query ``vector`` (1, d) to indexed patients."""
        present = [p for p in ids if p in loaded.index]
        if not present:
            return [float("nan")] * len(ids)
        scores = dict(zip(present, loaded.index.vectors(present) @ vector[0], strict=True))
        return [float(scores.get(p, float("nan"))) for p in ids]

    # ------------------------------------------------------------------ assembly
    def _neighbourhood_prediction(self, neighbours: list[Neighbour],
                                  weights: npt.NDArray[np.float64]
                                  ) -> tuple[float, SurvivalCurve]:
        """The neighbours' weighted Kaplan-Meier risk and curve at the store's bin ends."""
        bins = self._bin_ends()
        risk, surv = neighbour_prediction([n.time for n in neighbours],
                                          [n.event for n in neighbours], weights, bins)
        return float(risk), SurvivalCurve(times=bins.tolist(), survival=surv.tolist())

    def _bin_ends(self) -> npt.NDArray[np.float64]:
        if self._bins is None:
            t = self.catalog.table
            self._bins = bin_end_times(t["time"].to_numpy(), t["event"].to_numpy())
        return self._bins

    def _max_follow_up(self, model: Any) -> float:
        """The largest follow-up time among ``model``'s reference patients (all stored
        patients when it names none): the last time point of every answer."""
        times = self.catalog.table["time"]
        ids = getattr(model, "reference_ids_", None)
        refs = [] if ids is None else [str(p) for p in ids]
        known = times[times.index.isin(refs)]
        return float((known if len(known) else times).max())

    def _neighbours(self, hits: list[Hit], weights: npt.NDArray[np.float64],
                    opts: QueryOptions) -> list[Neighbour]:
        groups = self._group_summaries([h.patient_id for h in hits], opts.group_set)
        out = []
        for rank, (hit, w) in enumerate(zip(hits, weights, strict=True), start=1):
            row = self._patient_fields(hit.patient_id)
            authentic = row["genomics"] == "authentic"
            out.append(Neighbour(
                rank=rank, patient_id=hit.patient_id, cohort=row["cohort"],
                similarity=_finite(hit.score), weight=float(w), time=float(row["time"]),
                event=bool(row["event"]), oncotree_code=row["oncotree_code"],
                genomics=row["genomics"], histology=row["histology"],
                genomic_groups=groups.get(hit.patient_id, {}) if authentic else {}))
        return out

    def _patient_fields(self, patient_id: str) -> dict[str, Any]:
        """The catalog row of ``patient_id`` as a plain dict (a pandas row look-up per
        neighbour was most of a stored answer's time); an unknown id is the catalog's
        error."""
        with self.lock:
            if self._fields is None:
                table = self.catalog.table
                columns = list(_NEIGHBOUR_FIELDS)
                self._fields = {str(p): dict(zip(columns, values, strict=True))
                                for p, *values in zip(table.index,
                                                      *(table[c].tolist() for c in columns),
                                                      strict=True)}
        found = self._fields.get(patient_id)
        if found is None:
            self.catalog.require(patient_id)
            raise AssertionError(patient_id)  # require raised: the catalog lacks it
        return found

    def _same_case(self, patient_id: str) -> set[str]:
        """:meth:`PatientCatalog.same_case` from a case -> patients map built once."""
        with self.lock:
            if self._cases is None:
                table = self.catalog.table
                cases: dict[str, set[str]] = {}
                for pid, case in zip(table.index, table["case_id"], strict=True):
                    cases.setdefault(str(case), set()).add(str(pid))
                self._cases = cases
        fields = self._fields.get(patient_id) if self._fields is not None else None
        case = fields["case_id"] if fields is not None else \
            self._patient_fields(patient_id)["case_id"]
        return self._cases.get(str(case), set()) | {patient_id}

    def _group_summaries(self, patient_ids: list[str], group_set: str | None
                         ) -> dict[str, dict[str, GroupSummary]]:
        """:func:`genomic_group_summaries`, each patient's read once per group set."""
        with self.lock:
            missing = [p for p in dict.fromkeys(patient_ids)
                       if (p, group_set) not in self._groups]
            if missing:
                found = genomic_group_summaries(self.store, missing, group_set)
                for p in missing:
                    self._groups[(p, group_set)] = found.get(p, {})
            return {p: self._groups[(p, group_set)] for p in patient_ids}

    def _result(self, q: QueryInput, opts: QueryOptions, *, method: str, reason: str | None,
                version: str | None, loaded: LoadedIndex, risk: float, survival: SurvivalCurve,
                neighbours: list[Neighbour], n_candidates: int, notes: list[str]) -> QueryResult:
        idx = loaded.index
        info = IndexInfo(version_id=loaded.key.version_id, kind=loaded.key.kind, type=idx.kind,
                         n=len(idx), params={k: v for k, v in idx.params.items()
                                             if isinstance(v, int | float | str)})
        return self._assemble(q.patient_id, q.files, q.n_patches, q.provenance, opts,
                              method=method, reason=reason, version=version, index=info,
                              risk=risk, survival=survival, neighbours=neighbours,
                              n_candidates=n_candidates, notes=notes)

    def _assemble(self, patient_id: str | None, files: list[str], n_patches: int,
                  provenance: list[InputProvenance], opts: QueryOptions, *, method: str,
                  reason: str | None, version: str | None, index: IndexInfo, risk: float,
                  survival: SurvivalCurve, neighbours: list[Neighbour], n_candidates: int,
                  notes: list[str]) -> QueryResult:
        times, surv, at_risk, deaths = kaplan_meier([n.time for n in neighbours],
                                                    [n.event for n in neighbours])
        km = KaplanMeier(times=times.tolist(), survival=surv.tolist(),
                         at_risk=[int(a) for a in at_risk], events=[int(d) for d in deaths],
                         median_survival=median_survival(times, surv))
        genomics_status: Provenance = "inferred" if method == "msrl-gsl" else "absent"
        inputs = [*provenance, InputProvenance(
            name="genomics", modality="genomics", status=genomics_status,
            detail="WSI-only query" + ("; the Inductor's prompt stands in" if
                                       method == "msrl-gsl" else ""))]
        if len(neighbours) < opts.k:
            notes = [*notes, f"only {len(neighbours)} patients pass the filters (k={opts.k})"]
        if patient_id:
            notes = [*notes, f"the query is stored patient {patient_id}: its case is "
                             "excluded from the neighbours"]
        return QueryResult(
            method=method,  # type: ignore[arg-type]
            fallback_reason=reason, model_version=version, query_patient_id=patient_id,
            query_files=files, n_patches=n_patches, risk=risk, survival=survival,
            neighbours=neighbours, neighbourhood_km=km, inputs=inputs, index=index,
            n_candidates=n_candidates,
            filters={"cohorts": list(opts.cohorts), "require_authentic": list(opts.require),
                     "exact": opts.exact}, notes=notes)

    def _persist(self, result: QueryResult, patient_id: str | None) -> QueryResult:
        from casegraph.retrieval.persist import persist_query

        with self.lock:
            done, note = persist_query(self.store, result)
        return result.model_copy(update={"persisted_to_graph": done,
                                         "notes": [*result.notes, note]})


def query(
    store: Store,
    files: Sequence[str | Path] = (),
    patient_id: str | None = None,
    **options: Any,
) -> QueryResult:
    """One WSI-only query (see :class:`QueryOptions` for ``options``)."""
    return QueryEngine(store).query(files, patient_id, QueryOptions(**options))


_DEFAULT_SEARCH = QueryOptions()
_NEIGHBOUR_FIELDS = ("cohort", "case_id", "time", "event", "oncotree_code", "genomics",
                     "histology")


def _searches(opts: QueryOptions) -> bool:
    """Whether ``opts`` set the candidate search (asking for the computed answer)."""
    return ((opts.n_candidates, opts.expand, opts.pool) !=
            (_DEFAULT_SEARCH.n_candidates, _DEFAULT_SEARCH.expand, _DEFAULT_SEARCH.pool))


def _stored_bin_ends(store: Store, version: str) -> list[float] | None:
    """End time of each survival bin of ``version`` (its stored edges; an open last bin
    ends at its reference patients' largest follow-up), without loading the model."""
    edges = store.versions.get(version).bin_edges
    if edges is None:
        return None
    patients = store.patients().set_index("patient_id")["time"].astype(float)
    known = patients[patients.index.isin(msrl_adapter.reference_ids(store, version))]
    follow_up = float((known if len(known) else patients).max())
    return msrl_adapter.bin_ends(SimpleNamespace(bin_edges_=list(edges)), len(edges) - 1,
                                 follow_up)


def read_bags(paths: Sequence[Path], limits: BagLimits) -> list[Bag]:
    """The bags of one query, ``limits`` bounding them together: each file is read with what
    the files before it left of the budget, so no file is decompressed past it."""
    bags: list[Bag] = []
    patches = nbytes = 0
    for path in paths:
        left = BagLimits(max_patches=max(limits.max_patches - patches, 0),
                         max_bytes=max(limits.max_bytes - nbytes, 0))
        try:
            bag = read_bag(path, left)
        except BagTooLarge:
            if not bags:
                raise
            raise BagTooLarge(
                f"the query's {len(paths)} files together hold more than the limit of "
                f"{limits.max_patches:,} patches or {limits.max_bytes:,} bytes of features",
                file=path, column="files",
                fix=LIMIT_FIX.format(env="CASEGRAPH_MAX_BAG_PATCHES / _BYTES")) from None
        bags.append(bag)
        patches += bag.n_patches
        nbytes += bag.n_patches * bag.dim * 4
    return bags


def _no_features_problem(patient_id: str, n_slides: int) -> str:
    if not n_slides:
        return f"patient {patient_id!r} has no slides, so no patch features"
    return (f"patient {patient_id!r} has no patch features (its {n_slides} slide"
            f"{'s have' if n_slides > 1 else ' has'} no feature file)")


def _finite(x: float) -> float:
    return float(x) if np.isfinite(x) else 0.0


def _h5_marks_simulation(path: Path) -> bool:
    if path.suffix != ".h5":
        return False
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            attrs = {**handle.attrs, **(handle["features"].attrs if "features" in handle else {})}
    except (OSError, KeyError):
        return False
    from casegraph.retrieval.catalog import is_simulated_marker

    return any(is_simulated_marker(k) or is_simulated_marker(v) for k, v in attrs.items())
