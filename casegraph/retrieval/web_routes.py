"""The web app's pages and the JSON routes only its figures need.

- ``GET /`` is the app (``web/index.html``) and ``/app/*`` its files (plain HTML, CSS and
  ES modules shipped in the package: nothing is fetched from elsewhere, and the page's
  Content-Security-Policy says so). The page holds no data: it asks for an API key, keeps
  it in the browser's sessionStorage and sends it as ``X-API-Key`` on every JSON call,
  like any other client.
- ``GET /cohorts/{name}/km``: the cohort's Kaplan-Meier steps with a pointwise log-log
  (exponential Greenwood) band, censor counts and numbers at risk.
- ``GET /cohorts/{name}/patients``: the cohort's patients with outcome and provenance.
- ``GET /patients/{id}/km``: the KM of the patient's similar patients (the same answer as
  ``GET /patients/{id}/similar`` with the same parameters) beside its cohort's.
- ``GET /patients/{id}/evidence``: the stored patient's patch scores on its patch grid
  and the gene groups its answer leans on (:mod:`casegraph.retrieval.evidence`).
- ``GET /patients/{id}/graph?version=&hops=1|2&k=``: the patient's 1-2 hop ``SIMILAR_TO``
  neighbourhood read from the graph backend (:func:`casegraph.graph.open_graph_store`:
  Neo4j when ``CASEGRAPH_NEO4J_URI`` is set, else the store's embedded tables) through
  ``GraphStore.to_networkx``: nodes with outcome and cohort, edges with weight.
- ``GET /versions/{v}/inputs``: whether the version reads slides and genomics (the Query
  page's genomics row goes to ``POST /versions/{v}/predict`` with only what it reads).
- ``GET /cv-runs``: the store's cross-validation runs, oldest first, with each metric's
  mean and standard deviation over the run's folds.
- ``GET /cypher`` (is a Neo4j configured; the cookbook queries of docs/cypher.md when the
  installation has them) and ``POST /cypher`` (a query and its parameters, run in a read
  transaction by :func:`casegraph.graph.cypher.run_cypher`, so the database itself refuses
  a write, as for ``casegraph cypher``). Without ``CASEGRAPH_NEO4J_URI``: 400, one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from fastapi import APIRouter, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

import casegraph
from casegraph.config import neo4j_settings
from casegraph.errors import InputError
from casegraph.ingest.cv_results import METRIC_COLUMNS
from casegraph.models.neighbourhood import kaplan_meier, km_confidence_band, median_survival
from casegraph.retrieval.evidence import Evidence
from casegraph.retrieval.evidence import patient_evidence as evidence_for_patient
from casegraph.retrieval.options import MAX_K, QueryOptions

if TYPE_CHECKING:
    from casegraph.ingest.store import Store
    from casegraph.retrieval.service import LiveState

WEB_DIR = Path(__file__).with_name("web")
COOKBOOK = Path(casegraph.__file__).resolve().parent.parent / "docs" / "cypher.md"
NO_NEO4J = ("this service has no Neo4j configured (set CASEGRAPH_NEO4J_URI and "
            "CASEGRAPH_NEO4J_PASSWORD[_FILE] before `casegraph serve`)")
MAX_CYPHER_ROWS = 1000
MAX_GRAPH_HOPS = 2  # a third hop of k=10 is up to 1,000 nodes: no longer a readable picture
ALPHA = 0.05
# the page may load only its own files (the JS draws with SVG attributes and classes)
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
                           "script-src 'self'; connect-src 'self'; object-src 'none'; "
                           "base-uri 'none'; frame-ancestors 'none'")


class KMCurve(BaseModel):
    """A Kaplan-Meier curve as steps: S just after each distinct time (m,), its band,
    the numbers at risk just before it, deaths and censored patients at it."""

    label: str
    n: int = Field(description="patients in the curve")
    times: list[float]
    survival: list[float]
    lower: list[float] = Field(description="lower bound of the pointwise band")
    upper: list[float] = Field(description="upper bound of the pointwise band")
    at_risk: list[int]
    events: list[int]
    censored: list[int]
    median_survival: float | None = None
    confidence: float = Field(default=1 - ALPHA, description="coverage of the band")


class PatientRow(BaseModel):
    """One patient of a cohort's list (the Cohorts page links each to its Patient page)."""

    patient_id: str
    time: float
    event: bool
    n_slides: int
    genomics: str
    histology: str


class PatientKM(BaseModel):
    patient_id: str
    cohort: str
    neighbourhood: KMCurve
    cohort_curve: KMCurve


class GraphNode(BaseModel):
    id: str
    cohort: str
    time: float
    event: bool
    hop: int = Field(description="0 for the patient asked about, else its hop distance")


class GraphEdge(BaseModel):
    source: str
    target: str
    rank: int
    weight: float


class CaseNeighbourhood(BaseModel):
    """A patient's case-graph neighbourhood as the graph backend holds it."""

    patient_id: str
    version: str
    backend: str = Field(description="embedded or neo4j")
    hops: int
    nodes: list[GraphNode]
    edges: list[GraphEdge]


class VersionInputs(BaseModel):
    """What a version reads from a new patient (the Query page sends only those)."""

    version_id: str
    uses_slides: bool
    reads_genomics: bool


def version_inputs(store: Store, version_id: str) -> VersionInputs:
    from casegraph.models.versioning import InputSpec

    if not store.versions.exists(version_id):
        raise HTTPException(404, f"unknown model version {version_id!r}")
    config = store.versions.root(version_id).config
    if "inputs" in config:
        spec = InputSpec.from_dict(config["inputs"])
        return VersionInputs(version_id=version_id, uses_slides=spec.uses_slides,
                             reads_genomics=spec.reads_genomics)
    # an MSRL version recording no inputs: slides, and genomics only in authentic mode
    return VersionInputs(version_id=version_id, uses_slides=True,
                         reads_genomics=config.get("genomics_mode") == "authentic")


class MetricSummary(BaseModel):
    mean: float | None
    std: float | None
    n: int = Field(description="folds with a value")


class CVRunSummary(BaseModel):
    """One cross-validation run and its metrics over its finished folds."""

    run_id: str
    model: str
    cohort: str
    split_set: str
    created_at: str
    n_folds: int
    metrics: dict[str, MetricSummary]


def _metric(values: Any) -> MetricSummary:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return MetricSummary(mean=None, std=None, n=0)
    return MetricSummary(mean=float(v.mean()), std=float(v.std(ddof=1)) if v.size > 1 else None,
                         n=int(v.size))


class CookbookQuery(BaseModel):
    name: str
    query: str
    params: list[str] = Field(description="the $parameters the query names")


class CypherStatus(BaseModel):
    available: bool
    message: str
    cookbook: list[CookbookQuery]


class CypherRequest(BaseModel):
    query: str = Field(min_length=1, max_length=20_000)
    params: dict[str, Any] = Field(default_factory=dict)


class CypherAnswer(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = Field(description=f"more than {MAX_CYPHER_ROWS} rows: the rest left off")


def cookbook() -> list[CookbookQuery]:
    """docs/cypher.md's named queries (an installation without the docs has none)."""
    import re

    from casegraph.graph.cypher import cookbook_queries

    if not COOKBOOK.is_file():
        return []
    queries = cookbook_queries(COOKBOOK.read_text(encoding="utf-8"))
    return [CookbookQuery(name=name, query=query,
                          params=sorted(set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", query))))
            for name, query in queries.items()]


def run_read_only(request: CypherRequest) -> CypherAnswer:
    """``request`` in a read transaction against the configured Neo4j (400 without one)."""
    from casegraph.graph.cypher import run_cypher
    from casegraph.graph.neo4j_store import Neo4jGraphStore

    settings = neo4j_settings()
    if settings is None:
        raise HTTPException(400, NO_NEO4J)  # the request cannot be served here: not a 5xx
    with Neo4jGraphStore.connect(settings) as graph:
        result = run_cypher(graph.driver, request.query, request.params, write=False)  # type: ignore[attr-defined]
    return CypherAnswer(columns=result.columns, rows=result.rows[:MAX_CYPHER_ROWS],
                        truncated=len(result.rows) > MAX_CYPHER_ROWS)


def case_neighbourhood(store: Store, patient_id: str, version: str | None, hops: int,
                       k: int) -> CaseNeighbourhood:
    """``patient_id``'s ``hops``-hop neighbourhood under ``version`` (default: the newest
    synced version with edges, trained before static) from the configured graph backend."""
    from casegraph.graph import open_graph_store

    if not 1 <= hops <= MAX_GRAPH_HOPS:
        raise HTTPException(400, f"hops must be 1..{MAX_GRAPH_HOPS}, got {hops}")
    with open_graph_store(store) as graph:
        chosen = version or _default_version(graph.synced_versions())
        if chosen is None:
            raise HTTPException(400, "the case graph has no synced version with edges: run "
                                     "`casegraph graph sync` first")
        try:
            nx_graph = graph.to_networkx(chosen, [patient_id], hops=hops, k=k)
        except InputError as exc:  # its fields name the CLI's options: say it for REST
            raise HTTPException(400, exc.problem + (f"; {exc.fix}" if exc.fix else "")) \
                from None
        backend = graph.backend
    hop = _hop_distances(nx_graph, patient_id)
    nodes = [GraphNode(id=str(n), cohort=str(d["cohort"]), time=float(d["time"]),
                       event=bool(d["event"]), hop=hop.get(str(n), hops))
             for n, d in nx_graph.nodes(data=True)]
    edges = [GraphEdge(source=str(a), target=str(b), rank=int(d["rank"]),
                       weight=float(d["weight"])) for a, b, d in nx_graph.edges(data=True)]
    return CaseNeighbourhood(patient_id=patient_id, version=chosen, backend=backend,
                             hops=hops, nodes=nodes, edges=edges)


def _default_version(synced: dict[str, int]) -> str | None:
    """The newest synced version with edges, a trained one before the static k-NN (a
    risk-only version such as snn has no edges to draw)."""
    from casegraph.graph.static_knn import MODEL_NAME

    with_edges = sorted(v for v, n in synced.items() if n > 0)
    trained = [v for v in with_edges if not v.startswith(MODEL_NAME)]
    pool = trained or with_edges
    return pool[-1] if pool else None


def _hop_distances(nx_graph: Any, start: str) -> dict[str, int]:
    import networkx as nx

    return {str(n): int(d) for n, d in
            nx.single_source_shortest_path_length(nx_graph, start).items()}


def km_curve(label: str, time: Sequence[float], event: Sequence[bool]) -> KMCurve:
    """The unweighted KM of (time (n,), event (n,)) with its log-log band."""
    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event, dtype=bool)
    times, surv, at_risk, deaths = kaplan_meier(t, e)
    lower, upper = km_confidence_band(surv, at_risk, deaths, alpha=ALPHA)
    censored = [int(((t == u) & ~e).sum()) for u in times]
    return KMCurve(label=label, n=int(t.size), times=times.tolist(), survival=surv.tolist(),
                   lower=lower.tolist(), upper=upper.tolist(),
                   at_risk=[int(a) for a in at_risk], events=[int(d) for d in deaths],
                   censored=censored, median_survival=median_survival(times, surv))


def web_router(live: LiveState, auth: list[Any]) -> APIRouter:
    """The JSON routes of the app's figures, each behind ``auth`` (the service's key)."""
    router = APIRouter(dependencies=auth, tags=["web"])

    @router.get("/cohorts/{name}/km", response_model=KMCurve)
    def cohort_km(name: str) -> KMCurve:
        with live.use() as state, state.lock:
            table = state.engine.catalog.table
            rows = table[table["cohort"] == name]
            if not len(rows):
                raise HTTPException(404, f"unknown cohort {name!r}")
            return km_curve(name, rows["time"].tolist(), rows["event"].tolist())

    @router.get("/cohorts/{name}/patients", response_model=list[PatientRow])
    def cohort_patients(name: str) -> list[PatientRow]:
        with live.use() as state, state.lock:
            table = state.engine.catalog.table
            rows = table[table["cohort"] == name].sort_index()
        if not len(rows):
            raise HTTPException(404, f"unknown cohort {name!r}")
        return [PatientRow(patient_id=str(p), time=float(r["time"]), event=bool(r["event"]),
                           n_slides=int(r["n_slides"]), genomics=str(r["genomics"]),
                           histology=str(r["histology"])) for p, r in rows.iterrows()]

    @router.get("/patients/{patient_id}/km", response_model=PatientKM)
    def patient_km(
        patient_id: str,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        method: Annotated[str, Query(pattern="^(auto|knn|msrl)$")] = "auto",
        model_version: Annotated[str | None, Query(max_length=200)] = None,
    ) -> PatientKM:
        with live.use() as state, state.lock:
            catalog = state.engine.catalog
            if patient_id not in catalog:
                raise HTTPException(404, f"unknown patient {patient_id!r}")
            opts = QueryOptions(k=k, n_candidates=max(100, k), method=method,
                                model_version=model_version)
            answer = state.engine.similar(patient_id, opts)
            cohort = str(catalog.table.at[patient_id, "cohort"])
            rows = catalog.table[catalog.table["cohort"] == cohort]
            cohort_curve = km_curve(cohort, rows["time"].tolist(), rows["event"].tolist())
        neighbourhood = km_curve(f"{len(answer.neighbours)} similar patients",
                                 [n.time for n in answer.neighbours],
                                 [n.event for n in answer.neighbours])
        return PatientKM(patient_id=patient_id, cohort=cohort, neighbourhood=neighbourhood,
                         cohort_curve=cohort_curve)

    @router.get("/patients/{patient_id}/evidence", response_model=Evidence)
    def patient_evidence(
        patient_id: str,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        method: Annotated[str, Query(pattern="^(auto|knn|msrl)$")] = "auto",
        model_version: Annotated[str | None, Query(
            max_length=200, description="an MSRL version (its answer's evidence) or a "
            "version of a family with patch structure (abmil, late_fusion, murrenet, "
            "ccl: its scores)")] = None,
    ) -> Evidence:
        with live.use() as state:  # the engine locks its connection and caches itself
            if patient_id not in state.engine.catalog:
                raise HTTPException(404, f"unknown patient {patient_id!r}")
            opts = QueryOptions(k=k, n_candidates=max(100, k), method=method,
                                model_version=model_version)
            return evidence_for_patient(state.engine, patient_id, opts)

    @router.get("/patients/{patient_id}/graph", response_model=CaseNeighbourhood)
    def patient_graph(
        patient_id: str,
        version: Annotated[str | None, Query(max_length=200, description="a synced model "
                                             "version (default: the newest)")] = None,
        hops: int = 1,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    ) -> CaseNeighbourhood:
        with live.use() as state, state.lock:  # the embedded backend reads its connection
            if patient_id not in state.engine.catalog:
                raise HTTPException(404, f"unknown patient {patient_id!r}")
            return case_neighbourhood(state.store, patient_id, version, hops, k)

    @router.get("/versions/{version_id}/inputs", response_model=VersionInputs)
    def inputs_of(version_id: str) -> VersionInputs:
        with live.use() as state, state.lock:
            return version_inputs(state.store, version_id)

    @router.get("/cv-runs", response_model=list[CVRunSummary])
    def cv_runs() -> list[CVRunSummary]:
        with live.use() as state, state.lock:
            tables = state.store.cv_results
            runs = tables.runs()
            folds = {str(r): tables.fold_results(str(r)) for r in runs["run_id"]}
        out = []
        for run in runs.itertuples(index=False):
            rows = folds[str(run.run_id)]
            out.append(CVRunSummary(
                run_id=str(run.run_id), model=str(run.model), cohort=str(run.cohort),
                split_set=str(run.split_set), created_at=str(run.created_at),
                n_folds=len(rows),
                metrics={m: _metric(rows.get(m, [])) for m in METRIC_COLUMNS}))
        return out

    @router.get("/cypher", response_model=CypherStatus)
    def cypher_status() -> CypherStatus:
        available = neo4j_settings() is not None
        return CypherStatus(available=available, cookbook=cookbook(),
                            message="read-only queries against the case graph in Neo4j"
                            if available else NO_NEO4J)

    @router.post("/cypher", response_model=CypherAnswer)
    def cypher(request: CypherRequest) -> CypherAnswer:
        return run_read_only(request)

    return router


def mount_web(app: FastAPI) -> None:
    """``GET /`` (the app, no key needed: it holds no data) and its files under ``/app``."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html",
                            headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY,
                                     "Cache-Control": "no-cache"})

    app.mount("/app", StaticFiles(directory=WEB_DIR), name="web")
