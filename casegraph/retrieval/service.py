"""The REST service (FastAPI): WSI-only queries and patient look-ups over one store.

- Every route but ``GET /health`` needs an API key in the ``X-API-Key`` header; keys come
  from ``CASEGRAPH_API_KEYS`` / ``CASEGRAPH_API_KEYS_FILE`` (:func:`casegraph.config.api_keys`).
  A key is never accepted in the URL, and the access log (:func:`log_config`) drops every
  URL's query string, so a key sent there by mistake is not written down either.
- The service reads the store's current *published snapshot* (:mod:`casegraph.ingest.publish`)
  and follows it: :class:`LiveState` polls ``published/CURRENT.json`` every
  ``CASEGRAPH_RELOAD_SECONDS`` (default 2) and switches to a newer snapshot without a
  restart, so ingest, attach and graph sync (writers) run beside it. A request uses the
  state it started with to the end. A store nobody published is opened read-only as is.
- Request bodies above ``max_body_bytes`` get 413 (checked on Content-Length and while
  streaming), bags over the patch or decompressed-size limit
  (:class:`~casegraph.config.BagLimits`) 413 naming the limit; user errors get 400 with one
  readable line, unknown patients 404, malformed parameters 422 (FastAPI's validation).
  Errors and results name an upload by its own file name, never the server's temp path.
- Model versions: ``GET /versions`` (newest first), ``GET /versions/{id}``, a stored
  patient's prediction ``GET /versions/{id}/predictions/{patient}`` (the stored row along
  the version's lineage, else computed) and a new patient's ``POST /versions/{id}/predict``
  (patch-feature uploads and/or a ``genomics`` upload: one CSV row or a JSON object).
- ``GET /`` is the web app (:mod:`casegraph.retrieval.web_routes`, docs/webapp.md): package
  files that hold no data; it calls these same routes with the key the user enters.
- :func:`app_from_environment` is the factory ``casegraph serve`` hands uvicorn (an import
  string, so several worker processes can each build their own app).
- Locking: a served state's lock (its query engine's re-entrant ``lock``) guards only its
  DuckDB connection and caches. Catalog look-ups (``GET /patients/{id}``), stored answers
  (``/similar`` for a stored patient of an MSRL version, from the version's stored case
  graph), bag reads, model forwards and FAISS searches run outside it, so concurrent
  requests use the threads (and ``--workers N`` the processes) they are given.
"""

from __future__ import annotations

import csv
import dataclasses
import hmac
import logging
import math
import os
import re
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel

from casegraph import __version__
from casegraph.config import (
    DEFAULT_MAX_BODY_BYTES,
    BagLimits,
    default_store_path,
    positive_int_env,
)
from casegraph.config import api_keys as configured_api_keys
from casegraph.errors import CasegraphError, InputError, StoreError
from casegraph.ingest.bags import BAG_SUFFIXES, BagTooLarge
from casegraph.ingest.publish import SnapshotInfo, published_dir, read_current, store_facts
from casegraph.ingest.store import Store
from casegraph.ingest.versions import ModelVersion
from casegraph.models.versioning import read_genomics_row
from casegraph.retrieval import msrl_adapter
from casegraph.retrieval.evidence import QueryWithEvidence, with_evidence
from casegraph.retrieval.index import SLIDE_MEAN, IndexKey, LoadedIndex, slide_mean_embeddings
from casegraph.retrieval.options import MAX_K, QueryOptions
from casegraph.retrieval.predictions import PredictionResult, predict_for
from casegraph.retrieval.query import QueryEngine, read_bags
from casegraph.retrieval.results import CohortRecord, PatientRecord, QueryResult
from casegraph.retrieval.track_record import TrackRecord
from casegraph.retrieval.web_routes import mount_web, web_router

MAX_FILES = 16
EXACT = ("MSRL: build the graph over the version's whole buffer (no FAISS pruning), "
         "so buffer members a refresh added are candidates")
GENOMICS_SUFFIXES = (".csv", ".tsv", ".txt", ".json")
# the CLI's option names in the errors the shared prediction code raises, as REST names them
_REST_NAMES = {"--patient": "patient_id", "--slide": "files", "--genomics": "genomics"}
DEFAULT_RELOAD_SECONDS = 2
REPLICA_ENV = "CASEGRAPH_REPLICA"  # "1": serve as a replica (``casegraph serve --replica``)
API_KEY_HEADER = "X-API-Key"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Health(BaseModel):
    status: str
    version: str
    patients: int
    cohorts: int
    method: str
    snapshot: str | None = None
    """The published snapshot served (None: the store itself, nobody published it)."""
    published_at: str | None = None
    batch: str | None = None
    """The newest ingest batch in the served state."""
    model_versions: dict[str, str] = {}
    """Model -> its newest version id in the served state (MSRL's is the one queried)."""


class VersionRecord(BaseModel):
    version_id: str
    model: str
    cohort: str | None
    parent_id: str | None
    """The version it was derived from (``casegraph attach``); null for a trained one."""
    created_at: datetime
    counts: dict[str, Any]


class VersionDetail(VersionRecord):
    batches: list[str]
    """Ingest batches whose patients this version's own rows cover."""
    lineage: list[str]
    """The version, its parent, ..., the trained root (whose weights it uses)."""
    children: list[str]


def _version_record(version: ModelVersion) -> VersionRecord:
    return VersionRecord(version_id=version.version_id, model=version.model,
                         cohort=version.cohort, parent_id=version.parent_id,
                         created_at=version.created_at, counts=version.counts)


log = logging.getLogger(__name__)


@dataclasses.dataclass
class ServedState:
    """One state of the store the service answers from: a snapshot (or the store itself,
    ``snapshot`` None), its query engine, the lock guarding its DuckDB connection and
    caches (the engine's), and its /health facts (fixed for its lifetime). ``users`` counts the requests
    running on it; a retired state is closed when the last of them finishes."""

    snapshot: str | None
    store: Store
    engine: QueryEngine
    health: Health
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)
    users: int = 0
    retired: bool = False

    def close(self) -> None:
        with self.lock:
            self.store.close()


def open_state(root: Path, limits: BagLimits | None, replica: bool = False) -> ServedState:
    """The store's current snapshot (or, when nothing was published, the store itself,
    read-only) with a warmed-up engine: its indexes loaded and in step with its rows.

    ``replica``: one of several services over a store it must not write (docs/retrieval.md,
    *Replicas*): only a published snapshot is served, and a missing saved index is not
    built (the queries that need it answer 503 naming ``casegraph index rebuild``)."""
    info = read_current(root)
    if info is None and replica:
        raise StoreError(never_published(root))
    store = (Store.open(root, create=False, read_only=True) if info is None
             else Store.open_snapshot(root, published_dir(root) / info.snapshot))
    try:
        engine = QueryEngine(store, limits, build_indexes=not replica)
        method = _warm_up(engine)
        return ServedState(info.snapshot_id if info else None, store, engine,
                           _health(engine, method, info), lock=engine.lock)
    except BaseException:
        store.close()
        raise


def never_published(root: Path) -> str:
    return (f"store {root} was never published; a replica serves only published snapshots: "
            "run a writer (ingest, attach, graph sync) or `casegraph serve` without "
            "--replica once, where the store is writable")


def _health(engine: QueryEngine, method: str, info: SnapshotInfo | None) -> Health:
    facts = store_facts(engine.store)
    return Health(status="ok", version=__version__, patients=len(engine.catalog.table),
                  cohorts=int(engine.catalog.table["cohort"].nunique()), method=method,
                  snapshot=info.snapshot_id if info else None,
                  published_at=info.published_at if info else None,
                  batch=facts.batch, model_versions=facts.model_versions)


def _warm_up(engine: QueryEngine) -> str:
    """Load what the first query would (model, indexes), so no request pays for it, and
    bring the model-free index up to the state's patients; the method ``auto`` uses."""
    store = engine.store
    if store.summary_setting() is not None:
        try:
            _catch_up(engine.index(IndexKey(SLIDE_MEAN, "wsi")), engine)
        except StoreError as exc:  # a replica does not build it: k-NN queries will say so
            if engine.build_indexes:
                raise
            log.warning("%s", exc)
    version, _ = msrl_adapter.choose_version(store, "auto", None)
    if version is None:
        return "embedding-knn"
    try:
        engine.model(version)
        engine.index(IndexKey(version, msrl_adapter.GSL_KIND))
        engine.stored_graph(version)  # the stored answers' rows, read once
    except CasegraphError as exc:  # the queries that need it will say so; the rest work
        log.warning("model version %s does not load: %s", version, exc)
    return "msrl-gsl"


def _catch_up(loaded: LoadedIndex, engine: QueryEngine) -> None:
    """Add the state's patients the saved slide-mean index lacks (ingested after it was
    saved) and drop those the state does not hold, in memory only: the saved index is
    shared by every state and process, and the service writes nothing."""
    wanted = {str(p) for p in engine.catalog.table.index}
    indexed = set(loaded.index.ids())
    loaded.index.remove(indexed - wanted)
    ids, vectors = slide_mean_embeddings(engine.store, sorted(wanted - indexed))
    if ids:
        loaded.index.add(ids, vectors - loaded.center if loaded.center is not None
                         else vectors)


class LiveState:
    """The state the service answers from, following the store's published snapshots.

    :meth:`use` hands a request the current state (counted); :meth:`reload` builds the
    state of a newer snapshot outside any request's lock and swaps it in; the old state is
    closed as soon as no request uses it (at once when idle). So a request in flight ends
    on the state it started with, and only states with requests running stay open.
    A failed reload (a corrupt or vanished snapshot) logs one line and keeps the old state.
    """

    def __init__(self, root: Path, limits: BagLimits | None,
                 reload_seconds: float = DEFAULT_RELOAD_SECONDS, replica: bool = False) -> None:
        self.replica = replica
        self.root = root
        self.reload_seconds = reload_seconds
        self._limits = limits
        self._guard = threading.Lock()  # guards _current and every state's users/retired
        self._current = open_state(root, limits, replica)
        self._failed: str | None = None  # the snapshot whose reload failed (logged once)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> ServedState:
        return self._current

    @contextmanager
    def use(self) -> Iterator[ServedState]:
        with self._guard:
            state = self._current
            state.users += 1
        try:
            yield state
        finally:
            with self._guard:
                state.users -= 1
                idle = state.retired and state.users == 0
            if idle:
                state.close()

    def reload(self) -> bool:
        """Switch to the current snapshot when it is newer than the state served; whether
        it switched."""
        try:
            info = read_current(self.root)
        except StoreError as exc:
            self._log_failure(str(exc), str(exc))
            return False
        if info is None or info.snapshot_id in (self._current.snapshot, self._failed):
            return False
        try:
            state = open_state(self.root, self._limits, self.replica)
        except Exception as exc:  # any failure keeps the old state
            self._log_failure(info.snapshot_id, f"cannot load snapshot {info.snapshot_id}: "
                                                f"{exc}")
            return False
        self._failed = None
        with self._guard:
            old, self._current = self._current, state
            old.retired = True
            idle = old.users == 0
        if idle:
            old.close()
        log.info("serving snapshot %s (batch %s, %d patients)", state.snapshot,
                 state.health.batch, state.health.patients)
        return True

    def _log_failure(self, key: str, line: str) -> None:
        if key != self._failed:
            self._failed = key
            log.warning("%s; still serving %s", line, self._current.snapshot or "the store")

    def start(self) -> None:
        """Poll for new snapshots in a daemon thread until :meth:`close`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="casegraph-reload",
                                            daemon=True)
            self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.reload_seconds):
            try:
                self.reload()
            except Exception as exc:  # the poller outlives any one failure
                self._log_failure(repr(exc), f"reload failed: {exc}")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._guard:
            state = self._current
            state.retired = True
            idle = state.users == 0
        if idle:
            state.close()


class ErrorDetail(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorDetail, "description": "bad input (names the field and the fix)"},
    401: {"model": ErrorDetail, "description": "missing or invalid API key"},
    413: {"model": ErrorDetail, "description": "request body, or a bag's patches or "
                                               "decompressed size, above the limit"},
}


class _TooLarge(HTTPException):
    """Raised from inside ``receive``: FastAPI re-raises HTTPExceptions from body parsing
    (anything else becomes a 400), so the client gets this 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body larger than {max_bytes} bytes")


class BodySizeLimit:
    """ASGI middleware: 413 for bodies above ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": f"request body larger than {self.max_bytes} bytes"},
                                status_code=413)
        await response(scope, receive, send)


def create_app(
    store_path: str | Path,
    *,
    keys: frozenset[str] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    bag_limits: BagLimits | None = None,
    reload_seconds: float | None = None,
    replica: bool = False,
) -> FastAPI:
    """The service for the store at ``store_path`` (its published snapshot, read-only);
    ``bag_limits`` bound each request's bags (default: the environment's,
    :func:`casegraph.config.bag_limits`). While the app runs (its lifespan), a thread
    looks for a newer snapshot every ``reload_seconds`` (default
    ``CASEGRAPH_RELOAD_SECONDS``, 2). ``replica``: write nothing (see :func:`open_state`)."""
    allowed_keys = configured_api_keys() if keys is None else keys
    if not allowed_keys:
        raise CasegraphError("no API keys configured: set CASEGRAPH_API_KEYS (comma separated) "
                             "or CASEGRAPH_API_KEYS_FILE")
    seconds = (positive_int_env("CASEGRAPH_RELOAD_SECONDS", DEFAULT_RELOAD_SECONDS)
               if reload_seconds is None else reload_seconds)
    import torch  # noqa: F401 - now, not in the first .pt upload's request (seconds)

    live = LiveState(Path(store_path), bag_limits, seconds, replica=replica)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        live.start()
        try:
            yield
        finally:
            live.close()

    app = FastAPI(title="casegraph", version=__version__, openapi_url=None, docs_url=None,
                  redoc_url=None, lifespan=lifespan,
                  description="WSI-only queries over a casegraph store: similar historical "
                              "patients, their outcomes, and the predicted survival.")
    app.state.live = live
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                          description="one of the keys in CASEGRAPH_API_KEYS")

    def require_key(key: str | None = Depends(header)) -> None:
        if not key or not any(hmac.compare_digest(key.encode(), k.encode())
                              for k in allowed_keys):
            raise HTTPException(401, "missing or invalid API key", {"WWW-Authenticate":
                                                                     API_KEY_HEADER})

    auth = [Depends(require_key)]

    @app.exception_handler(BagTooLarge)
    async def _too_large(request: Request, exc: BagTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(CasegraphError)
    async def _casegraph_error(request: Request, exc: CasegraphError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> Health:  # no lock: answers even while a long query runs
        return live.current.health

    @app.get("/openapi.json", include_in_schema=False, dependencies=auth)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/cohorts", response_model=list[CohortRecord], dependencies=auth,
             responses=ERRORS, tags=["patients"])
    def cohorts() -> list[CohortRecord]:
        with live.use() as state, state.lock:
            return state.engine.catalog.cohort_records()

    @app.get("/patients/{patient_id}", response_model=PatientRecord, dependencies=auth,
             responses={**ERRORS, 404: {"model": ErrorDetail}}, tags=["patients"])
    def patient(patient_id: str) -> PatientRecord:
        with live.use() as state:  # the catalog is read-only: no lock
            _known(state.engine, patient_id)
            return state.engine.catalog.record(patient_id)

    @app.get("/patients/{patient_id}/similar", response_model=QueryResult, dependencies=auth,
             responses={**ERRORS, 404: {"model": ErrorDetail}}, tags=["query"])
    def similar(
        patient_id: str,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        cohort: Annotated[list[str] | None, Query()] = None,
        require: Annotated[list[str] | None, Query()] = None,
        method: Annotated[str, Query(pattern="^(auto|knn|msrl)$")] = "auto",
        exact: Annotated[bool, Query(description=EXACT)] = False,
        model_version: Annotated[str | None, Query(
            max_length=200, description="an MSRL version (default: the newest)")] = None,
    ) -> QueryResult:
        with live.use() as state:  # the engine locks its connection and caches itself
            _known(state.engine, patient_id)
            opts = QueryOptions(k=k, n_candidates=max(100, k), cohorts=tuple(cohort or ()),
                                require=tuple(require or ()), method=method, exact=exact,
                                model_version=model_version)
            return state.engine.similar(patient_id, opts)

    @app.post("/query", response_model=QueryWithEvidence, dependencies=auth,
              responses={**ERRORS, 404: {"model": ErrorDetail}}, tags=["query"])
    def query(
        files: Annotated[list[UploadFile] | None, File(
            description="patch-feature files of one new patient (.h5 / .pt)")] = None,
        patient_id: Annotated[str | None, Form(description="a stored patient instead")] = None,
        k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
        n_candidates: Annotated[int, Form(ge=1, le=5_000)] = 100,
        cohort: Annotated[list[str] | None, Form()] = None,
        require: Annotated[list[str] | None, Form()] = None,
        method: Annotated[str, Form(pattern="^(auto|knn|msrl)$")] = "auto",
        exact: Annotated[bool, Form(description=EXACT)] = False,
        evidence: Annotated[bool, Form(description="patch scores and gene-group leans "
                                                   "(docs/evidence.md)")] = True,
    ) -> QueryWithEvidence:
        uploads = [f for f in files or [] if f.filename or f.size]
        if len(uploads) > MAX_FILES:
            raise InputError(f"at most {MAX_FILES} files per query, got {len(uploads)}",
                             column="files")
        opts = QueryOptions(k=k, n_candidates=max(n_candidates, k),
                            cohorts=tuple(cohort or ()), require=tuple(require or ()),
                            method=method, exact=exact)
        with live.use() as state, \
                tempfile.TemporaryDirectory(prefix="casegraph-query-") as tmp:
            paths = [_save_upload(u, Path(tmp), i) for i, u in enumerate(uploads)]
            names = {str(p): p.name for p in paths}
            try:  # no lock: the engine locks only its connection and caches
                if patient_id is not None:
                    _known(state.engine, patient_id)
                result = with_evidence(state.engine, state.engine.query(paths, patient_id, opts),
                                       paths if evidence else None, names)
            except InputError as exc:
                raise _without_temp_paths(exc, Path(tmp), names) from None
        return result.model_copy(update={"query_files": [names.get(f, f)
                                                         for f in result.query_files]})

    @app.get("/versions", response_model=list[VersionRecord], dependencies=auth,
             responses=ERRORS, tags=["versions"])
    def versions() -> list[VersionRecord]:
        with live.use() as state, state.lock:
            rows = state.store.versions.all()
        return [_version_record(v) for v in reversed(rows)]

    @app.get("/versions/{version_id}", response_model=VersionDetail, dependencies=auth,
             responses={**ERRORS, 404: {"model": ErrorDetail}}, tags=["versions"])
    def version(version_id: str) -> VersionDetail:
        with live.use() as state, state.lock:
            found = _known_version(state.store, version_id)
            lineage = state.store.versions.lineage(version_id)
            children = state.store.versions.children(version_id)
        return VersionDetail(**_version_record(found).model_dump(), batches=found.batches,
                             lineage=lineage, children=children)

    @app.get("/versions/{version_id}/track-record", response_model=TrackRecord,
             dependencies=auth, responses={**ERRORS, 404: {"model": ErrorDetail}},
             tags=["versions"])
    def version_track_record(version_id: str) -> TrackRecord:
        """The version's validated performance on its cohort and its baseline's
        (docs/retrieval.md, *Track record*); no calibration without an answer."""
        with live.use() as state:
            with state.lock:
                _known_version(state.store, version_id)
            return state.engine.version_track_record(version_id)

    @app.get("/versions/{version_id}/predictions/{patient_id}",
             response_model=PredictionResult, dependencies=auth,
             responses={**ERRORS, 404: {"model": ErrorDetail}}, tags=["versions"])
    def stored_prediction(version_id: str, patient_id: str) -> PredictionResult:
        with live.use() as state, state.lock:
            _known_version(state.store, version_id)
            _known(state.engine, patient_id)
            return _predicted(state.store, version_id, patient_id=patient_id)

    @app.post("/versions/{version_id}/predict", response_model=PredictionResult,
              dependencies=auth, responses={**ERRORS, 404: {"model": ErrorDetail}},
              tags=["versions"])
    def predict(
        version_id: str,
        files: Annotated[list[UploadFile] | None, File(
            description="patch-feature files of one new patient (.h5 / .pt)")] = None,
        genomics: Annotated[UploadFile | None, File(
            description="the new patient's genomics: one CSV row in the cohort table's "
                        "format (<gene>_rnaseq/_cnv/_mut columns) or a JSON object "
                        "{feature: value}")] = None,
        patient_id: Annotated[str | None, Form(description="a stored patient instead")] = None,
    ) -> PredictionResult:
        uploads = [f for f in files or [] if f.filename or f.size]
        if len(uploads) > MAX_FILES:
            raise InputError(f"at most {MAX_FILES} files per prediction, got {len(uploads)}",
                             column="files")
        with live.use() as state, \
                tempfile.TemporaryDirectory(prefix="casegraph-predict-") as tmp:
            paths = [_save_upload(u, Path(tmp), i) for i, u in enumerate(uploads)]
            names = {str(p): p.name for p in paths}
            try:
                values = (None if genomics is None
                          else _genomics_values(genomics, Path(tmp), names))
                with state.lock:
                    _known_version(state.store, version_id)
                    if patient_id is not None:
                        _known(state.engine, patient_id)
                    read_bags(paths, state.engine.limits)  # the service's limits: 413
                    return _predicted(state.store, version_id, patient_id=patient_id,
                                      bag_paths=paths, genomics=values)
            except InputError as exc:
                raise _without_temp_paths(exc, Path(tmp), names) from None

    app.include_router(web_router(live, auth), responses={**ERRORS, 404: {"model": ErrorDetail}})
    mount_web(app)
    app.openapi_schema = None
    app.state.max_body_bytes = max_body_bytes
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)  # type: ignore[arg-type]
    return app


def _known(engine: QueryEngine, patient_id: str) -> None:
    if patient_id not in engine.catalog:
        raise HTTPException(404, f"unknown patient {patient_id!r}")


def _known_version(store: Store, version_id: str) -> ModelVersion:
    if not store.versions.exists(version_id):
        raise HTTPException(404, f"unknown model version {version_id!r}")
    return store.versions.get(version_id)


def _predicted(store: Store, version_id: str, **inputs: Any) -> PredictionResult:
    """:func:`predict_for`, its errors naming the REST fields; a non-finite answer is
    refused (JSON has no NaN)."""
    try:
        result = predict_for(store, version_id, **inputs)
    except InputError as exc:
        raise _rest_names(exc) from None
    values = [result.risk, *(p.survival for p in result.survival)]
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"model version {version_id} gave a non-finite prediction for these "
                         "inputs", fix="check the patient's inputs")
    return result


def _rest_names(exc: InputError) -> InputError:
    def rest(text: str | None) -> str | None:
        if text is None:
            return None
        for cli, field in _REST_NAMES.items():
            text = text.replace(cli, field)
        return text

    return dataclasses.replace(exc, column=rest(exc.column), problem=rest(exc.problem) or "",
                               fix=rest(exc.fix))


def _genomics_values(upload: UploadFile, folder: Path, names: dict[str, str]
                     ) -> dict[str, float]:
    """The genomics upload's feature -> value, read by :func:`read_genomics_row` from a
    file whose suffix says its format: the upload's own (.csv/.tsv/.txt/.json), else JSON
    when it starts with ``{``, else CSV. ``names`` learns the file's upload name."""
    name = Path(upload.filename or "").name or "genomics"
    suffix = Path(name).suffix.lower()
    data = upload.file.read()
    if suffix not in GENOMICS_SUFFIXES:
        suffix = ".json" if data.lstrip()[:1] == b"{" else ".csv"
    own = folder / "genomics"
    own.mkdir()
    path = own / f"genomics{suffix}"
    path.write_bytes(data)
    names[str(path)] = name
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("the genomics upload is not UTF-8 text", file=name, column="genomics",
                         fix="upload one CSV row like the cohort table, or a JSON object"
                         ) from None
    try:
        return read_genomics_row(path)
    except (csv.Error, RecursionError) as exc:  # a cell over csv's limit, JSON nested deep
        raise InputError(f"the genomics upload cannot be read ({str(exc)[:80]})", file=name,
                         column="genomics", fix="upload one CSV row like the cohort table, "
                         "or a flat JSON object") from None


def _save_upload(upload: UploadFile, folder: Path, position: int) -> Path:
    """Write upload ``position`` into its own sub-folder, under its own (sanitised) name:
    two uploads with one name are two files, and the name still identifies a stored slide."""
    name = Path(upload.filename or "").name
    suffix = Path(name).suffix.lower()
    if suffix not in BAG_SUFFIXES:
        raise InputError(f"file {position + 1} ({name or 'unnamed'!r}) is not a patch-feature "
                         "file", column="files", fix="upload CLAM/TRIDENT .h5 or .pt files")
    stem = _SAFE_NAME.sub("_", Path(name).stem)[:200] or f"upload{position}"
    own = folder / str(position)
    own.mkdir()
    path = own / f"{stem}{suffix}"
    with open(path, "xb") as out:
        _copy_upload(upload, out)
    return path


def _copy_upload(upload: UploadFile, out: BinaryIO) -> None:
    """The spooled upload into ``out``: by ``os.sendfile`` from the spool's file (kernel to
    kernel, 33 vs 45 ms for 41 MB on the shared box at load 10), else in 1 MB chunks."""
    try:
        source, size = upload.file.fileno(), os.fstat(upload.file.fileno()).st_size
        sent = 0
        while sent < size:
            step = os.sendfile(out.fileno(), source, sent, size - sent)
            if step == 0:
                break
            sent += step
        if sent == size:
            return
    except (AttributeError, OSError, ValueError):  # no fd (io.UnsupportedOperation), no sendfile
        pass
    out.seek(0)
    out.truncate()
    upload.file.seek(0)
    while chunk := upload.file.read(1 << 20):
        out.write(chunk)


def _without_temp_paths(exc: InputError, tmp: Path, names: dict[str, str]) -> InputError:
    """``exc`` naming each upload by its file name instead of its path under ``tmp``."""
    file = names.get(str(exc.file), exc.file) if exc.file is not None else None
    problem = exc.problem
    for path, name in names.items():
        problem = problem.replace(path, name)
    problem = problem.replace(str(tmp), "<upload>")
    return dataclasses.replace(exc, file=file, problem=problem)


class DropQueryString(logging.Filter):
    """Access-log filter: the request path without its ``?query`` (which may hold secrets)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], args[3], args[4])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration with :class:`DropQueryString` on the access log."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["no_query"] = {"()": f"{__name__}.DropQueryString"}
    config["handlers"]["access"]["filters"] = ["no_query"]
    return config


def app_from_environment() -> FastAPI:
    """The app for uvicorn's factory mode (each worker process calls it): the store from
    ``CASEGRAPH_STORE``, the body limit from ``CASEGRAPH_MAX_BODY_BYTES``, bag limits from
    ``CASEGRAPH_MAX_BAG_PATCHES`` / ``_BYTES``, threads from ``CASEGRAPH_THREADS``, replica
    mode from ``CASEGRAPH_REPLICA``."""
    import faiss
    import torch

    threads = positive_int_env("CASEGRAPH_THREADS", 1)
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    return create_app(default_store_path().resolve(),
                      replica=os.environ.get(REPLICA_ENV) == "1",
                      max_body_bytes=positive_int_env("CASEGRAPH_MAX_BODY_BYTES",
                                                      DEFAULT_MAX_BODY_BYTES))


APP_FACTORY = f"{__name__}:app_from_environment"
