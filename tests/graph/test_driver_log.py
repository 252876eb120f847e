"""The driver's retry warnings reach the user as one short line each, nothing raw."""

from __future__ import annotations

import logging

import pytest

from casegraph.graph.driver_log import RetryLineHandler, quiet_driver_log


def test_retry_warnings_become_one_line_and_other_records_are_dropped(
        capsys: pytest.CaptureFixture[str]) -> None:
    quiet_driver_log()
    quiet_driver_log()  # idempotent: still one handler
    logger = logging.getLogger("neo4j.pool")
    owner = logging.getLogger("neo4j")
    assert sum(isinstance(h, RetryLineHandler) for h in owner.handlers) == 1
    logger.warning("Transaction failed and will be retried in %ss (%s)", 1.07,
                   "ServiceUnavailable: bolt://user:secret@10.0.0.1 long server text\nsecond")
    logger.warning("[#0000] _: <CONNECTION> error: raw socket text")
    logger.info("routing table details")
    err = capsys.readouterr().err.splitlines()
    assert err == ["neo4j: transient failure, retrying in 1.1 s"]
    logger.error("pool failure with raw details")
    assert capsys.readouterr().err.strip() == (
        "neo4j: the driver reported an error; retrying or failing with one message below")
