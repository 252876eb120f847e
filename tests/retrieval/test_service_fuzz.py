"""Fuzz the running service: never a 5xx.

From its own OpenAPI schema (schemathesis) against the tiny store and against a store with
patients whose slides have no feature file; then stored-patient queries over every patient
of that store, and compressed (gzip / lzf / shuffle) HDF5 uploads of random shapes on both
sides of the server's bag limits.
"""

from __future__ import annotations

import io

import h5py
import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.retrieval.conftest import (
    DIM,
    GAPPY_MAX_BYTES,
    GAPPY_MAX_PATCHES,
    NO_FEATURE_PATIENTS,
    LiveServer,
)

EXAMPLES_PER_OPERATION = 12
FUZZ = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


@pytest.mark.slow
@pytest.mark.parametrize("server", ["live_server", "gappy_server"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["positive", "negative"])
def test_no_server_errors_from_schema_driven_requests(request: pytest.FixtureRequest,
                                                      server: str,
                                                      mode: GenerationMode) -> None:
    live_server: LiveServer = request.getfixturevalue(server)
    schema = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json",
                                           headers=live_server.headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/query", "/patients/{patient_id}/similar"}
    failures: list[str] = []
    for operation in operations:

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  derandomize=True, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(mode))
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=live_server.url, headers=live_server.headers,
                                 timeout=60)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> "
                                f"{response.status_code}: {response.text[:200]}")

        try:
            check()
        except Unsatisfiable:  # nothing to make invalid (e.g. GET /cohorts has no inputs)
            assert mode == GenerationMode.NEGATIVE
    assert not failures, "\n".join(failures[:5])


@pytest.mark.slow
def test_stored_patient_queries_over_a_store_with_featureless_patients(
        gappy_server: LiveServer) -> None:
    patients = [*NO_FEATURE_PATIENTS, "A00", "A01", "B02", "B19"]
    failures: list[str] = []

    @FUZZ
    @given(patient=st.sampled_from(patients), k=st.integers(1, 45),
           method=st.sampled_from(["auto", "knn", "msrl"]), post=st.booleans(),
           require=st.lists(st.sampled_from(["histology", "genomics"]), max_size=2))
    def check(patient: str, k: int, method: str, post: bool, require: list[str]) -> None:
        url, headers = gappy_server.url, gappy_server.headers
        if post:
            r = httpx.post(f"{url}/query", headers=headers, timeout=60, data={
                "patient_id": patient, "k": str(k), "method": method, "require": require})
        else:
            r = httpx.get(f"{url}/patients/{patient}/similar", headers=headers, timeout=60,
                          params={"k": k, "method": method, "require": require})
        expected = 400 if patient in NO_FEATURE_PATIENTS or method == "msrl" else 200
        if r.status_code != expected:
            failures.append(f"{patient} k={k} {method} post={post} -> {r.status_code}: "
                            f"{r.text[:200]}")

    check()
    assert not failures, "\n".join(failures[:5])


def _compressed_h5(n: int, dim: int, compression: str, shuffle: bool, zeros: bool) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(n)
    data = np.zeros((n, dim), np.float32) if zeros else rng.normal(size=(n, dim)).astype("f4")
    with h5py.File(buffer, "w") as handle:
        handle.create_dataset("features", data=data, compression=compression, shuffle=shuffle,
                              chunks=(min(n, 64), dim))
    return buffer.getvalue()


@pytest.mark.slow
def test_compressed_uploads_are_answered_or_refused_by_the_limits(
        gappy_server: LiveServer) -> None:
    failures: list[str] = []

    @FUZZ
    @given(sizes=st.lists(st.integers(1, 3 * GAPPY_MAX_PATCHES), min_size=1, max_size=3),
           dim=st.sampled_from([DIM, 8, 64]), compression=st.sampled_from(["gzip", "lzf"]),
           shuffle=st.booleans(), zeros=st.booleans())
    def check(sizes: list[int], dim: int, compression: str, shuffle: bool,
              zeros: bool) -> None:
        files = [("files", (f"c{i}.h5", _compressed_h5(n, dim, compression, shuffle, zeros)))
                 for i, n in enumerate(sizes)]
        r = httpx.post(f"{gappy_server.url}/query", headers=gappy_server.headers, files=files,
                       data={"k": "3"}, timeout=60)
        too_many = sum(sizes) > GAPPY_MAX_PATCHES or sum(sizes) * dim * 4 > GAPPY_MAX_BYTES
        expected = 413 if too_many else (200 if dim == DIM else 400)
        if r.status_code != expected or (too_many and "limit" not in r.json()["detail"]):
            failures.append(f"{sizes} x {dim} {compression} -> {r.status_code}: {r.text[:200]}")

    check()
    assert not failures, "\n".join(failures[:5])
