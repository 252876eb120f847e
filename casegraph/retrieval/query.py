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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

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


class QueryEngine:
    """Answers queries against one open store; caches the catalog, indexes and models."""

    def __init__(self, store: Store, limits: BagLimits | None = None) -> None:
        self.store = store
        self.limits = limits or bag_limits()
        self.catalog = PatientCatalog.from_store(store)
        self._indexes: dict[IndexKey, LoadedIndex] = {}
        self._bins: npt.NDArray[np.float64] | None = None
        self._models: dict[str, Any] = {}

    # ------------------------------------------------------------------ public
    def query(
        self,
        files: Sequence[str | Path] = (),
        patient_id: str | None = None,
        options: QueryOptions | None = None,
    ) -> QueryResult:
        opts = (options or QueryOptions()).validated()
        q = self.load_input(files, patient_id)
        version, reason = msrl_adapter.choose_version(self.store, opts.method, opts.model_version)
        if version is not None:
            result = self._query_msrl(q, version, opts)
        else:
            result = self._query_knn(q, opts, reason)
        if opts.persist:
            result = self._persist(result, q)
        return result

    def similar(self, patient_id: str, options: QueryOptions | None = None) -> QueryResult:
        """The stored patient as a query (its own case excluded from the neighbours)."""
        return self.query((), patient_id, options)

    def model(self, version: str) -> Any:
        if version not in self._models:
            self._models[version] = msrl_adapter.load(self.store, version)
        return self._models[version]

    def index(self, key: IndexKey) -> LoadedIndex:
        if key not in self._indexes:
            self._indexes[key] = open_index(self.store, key)
        return self._indexes[key]

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
        slides = self.store.slides()
        by_slide = dict(zip(slides["slide_id"], slides["patient_id"], strict=True))
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
        return QueryInput(feats, feats.mean(axis=0), [str(p) for p in paths], int(feats.shape[0]),
                          patient_id, provenance)

    def _input_from_patient(self, patient_id: str) -> QueryInput:
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
        if q.features is None:
            paths = [Path(f) for f in q.files]
            q.features = self._input_from_files(paths, q.patient_id).features
        assert q.features is not None
        return q.features

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
        bins = self._bin_ends()
        risk, surv = neighbour_prediction([n.time for n in neighbours],
                                          [n.event for n in neighbours], weights, bins)
        return self._result(
            q, opts, method="embedding-knn", reason=reason, version=None, loaded=loaded,
            risk=risk, survival=SurvivalCurve(times=bins.tolist(), survival=surv.tolist()),
            neighbours=neighbours, n_candidates=len(hits),
            notes=["no trained MSRL model answered: neighbours are ranked by the cosine "
                   "similarity of mean patch features, and risk/survival come from their "
                   "weighted Kaplan-Meier curve"])

    def _query_msrl(self, q: QueryInput, version: str, opts: QueryOptions) -> QueryResult:
        model = self.model(version)
        feats = self.features_of(q)
        expected_dim = getattr(model, "bag_dim_", feats.shape[1])
        if feats.shape[1] != expected_dim:
            raise InputError(f"the query has {feats.shape[1]}-d patch features, model version "
                             f"{version} was trained on {expected_dim}-d",
                             file=q.files[0] if q.files else None, column="features",
                             fix="use features from the same patch encoder")
        loaded = self.index(IndexKey(version, msrl_adapter.GSL_KIND))
        allowed = self.catalog.allowed(opts.cohorts, opts.require)
        core = answer_wsi_only(model, loaded, feats, opts, allowed, self._exclusions(q))
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
            bins = self._bin_ends()
            risk_knn, surv_knn = neighbour_prediction([n.time for n in neighbours],
                                                      [n.event for n in neighbours], weights,
                                                      bins)
            survival = SurvivalCurve(times=bins.tolist(), survival=surv_knn.tolist())
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
        groups = genomic_group_summaries(self.store, [h.patient_id for h in hits], opts.group_set)
        out = []
        for rank, (hit, w) in enumerate(zip(hits, weights, strict=True), start=1):
            row = self.catalog.require(hit.patient_id)
            authentic = row["genomics"] == "authentic"
            out.append(Neighbour(
                rank=rank, patient_id=hit.patient_id, cohort=row["cohort"],
                similarity=_finite(hit.score), weight=float(w), time=float(row["time"]),
                event=bool(row["event"]), oncotree_code=row["oncotree_code"],
                genomics=row["genomics"], histology=row["histology"],
                genomic_groups=groups.get(hit.patient_id, {}) if authentic else {}))
        return out

    def _result(self, q: QueryInput, opts: QueryOptions, *, method: str, reason: str | None,
                version: str | None, loaded: LoadedIndex, risk: float, survival: SurvivalCurve,
                neighbours: list[Neighbour], n_candidates: int, notes: list[str]) -> QueryResult:
        times, surv, at_risk, deaths = kaplan_meier([n.time for n in neighbours],
                                                    [n.event for n in neighbours])
        km = KaplanMeier(times=times.tolist(), survival=surv.tolist(),
                         at_risk=[int(a) for a in at_risk], events=[int(d) for d in deaths],
                         median_survival=median_survival(times, surv))
        genomics_status: Provenance = "inferred" if method == "msrl-gsl" else "absent"
        inputs = [*q.provenance, InputProvenance(
            name="genomics", modality="genomics", status=genomics_status,
            detail="WSI-only query" + ("; the Inductor's prompt stands in" if
                                       method == "msrl-gsl" else ""))]
        if len(neighbours) < opts.k:
            notes = [*notes, f"only {len(neighbours)} patients pass the filters (k={opts.k})"]
        if q.patient_id:
            notes = [*notes, f"the query is stored patient {q.patient_id}: its case is "
                             "excluded from the neighbours"]
        idx = loaded.index
        return QueryResult(
            method=method,  # type: ignore[arg-type]
            fallback_reason=reason, model_version=version, query_patient_id=q.patient_id,
            query_files=q.files, n_patches=q.n_patches, risk=risk, survival=survival,
            neighbours=neighbours, neighbourhood_km=km, inputs=inputs,
            index=IndexInfo(version_id=loaded.key.version_id, kind=loaded.key.kind,
                            type=idx.kind, n=len(idx),
                            params={k: v for k, v in idx.params.items()
                                    if isinstance(v, int | float | str)}),
            n_candidates=n_candidates,
            filters={"cohorts": list(opts.cohorts), "require_authentic": list(opts.require),
                     "exact": opts.exact}, notes=notes)

    def _persist(self, result: QueryResult, q: QueryInput) -> QueryResult:
        from casegraph.retrieval.persist import persist_query

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
