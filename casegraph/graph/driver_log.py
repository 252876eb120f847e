"""The Neo4j driver's own log lines, turned into one readable line each.

The driver logs "Transaction failed and will be retried in 1.1s (<server message>)" as a
warning while a managed transaction retries; with no handler configured Python prints such
records raw (and the server message may be long or repeat the URI). casegraph gives the
``neo4j`` logger one handler that prints a short line per retry and drops the rest below
ERROR, so a user sees that a sync is retrying and nothing else.
"""

from __future__ import annotations

import logging
import re
import sys

_RETRY = re.compile(r"retried in ([0-9.]+)s")


class RetryLineHandler(logging.Handler):
    """One line per driver retry on stderr: ``neo4j: transient failure, retrying in 1.1 s``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return
        match = _RETRY.search(message)
        if match:
            line = f"neo4j: transient failure, retrying in {float(match.group(1)):.1f} s"
        elif record.levelno >= logging.ERROR:
            line = "neo4j: the driver reported an error; retrying or failing with one message below"
        else:
            return
        print(line, file=sys.stderr, flush=True)


def quiet_driver_log() -> None:
    """Install :class:`RetryLineHandler` on the ``neo4j`` logger once (idempotent)."""
    logger = logging.getLogger("neo4j")
    if any(isinstance(h, RetryLineHandler) for h in logger.handlers):
        return
    logger.addHandler(RetryLineHandler())
    logger.propagate = False
