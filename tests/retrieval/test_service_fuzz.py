"""Fuzz the running service from its own OpenAPI schema (schemathesis): never a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.retrieval.conftest import LiveServer

EXAMPLES_PER_OPERATION = 12


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["positive", "negative"])
def test_no_server_errors_from_schema_driven_requests(live_server: LiveServer,
                                                      mode: GenerationMode) -> None:
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
