"""Named crash points, so kill tests can stop a real process at a precise moment.

A crash point is a call ``crash_point("ingest.in_transaction")`` at a place where a real
crash (power loss, OOM killer, SIGKILL) must leave the store or the graph consistent. It
does nothing unless the environment variable ``CASEGRAPH_CRASH_AT`` names that point:

    CASEGRAPH_CRASH_AT=ingest.in_transaction        # the first time it is reached
    CASEGRAPH_CRASH_AT=sync.after_batch@3           # the third time it is reached

and then the process kills itself with SIGKILL on the spot: no cleanup, no ``finally``, as a
real crash. It can never make a process wait or hang, and a name that is not in
``CRASH_POINTS`` is refused, so a typo cannot silently disable a test.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

from casegraph.errors import InputError

CRASH_ENV = "CASEGRAPH_CRASH_AT"
CRASH_POINTS = frozenset({
    "ingest.in_transaction",   # all rows written, before COMMIT
    "sync.after_batch",        # a graph-sync batch committed
    "attach.in_transaction",   # a derived version written, before COMMIT
    "version.in_transaction",  # a trained version's rows written, before COMMIT
    "attach.after_version",    # a derived version committed, before its index update
    "register.slide",          # a bag registration worker starts on a slide
})

_reached: Counter[str] = Counter()


def parse_crash_spec(spec: str) -> tuple[str, int]:
    """``"name"`` or ``"name@n"`` -> (name, n); an unknown name or a bad n is an error."""
    name, _, count = spec.partition("@")
    if name not in CRASH_POINTS:
        raise InputError(f"{CRASH_ENV}={spec!r}: unknown crash point; "
                         f"use one of {', '.join(sorted(CRASH_POINTS))}")
    if count and (not count.isdigit() or int(count) < 1):
        raise InputError(f"{CRASH_ENV}={spec!r}: the count after '@' must be a whole number >= 1")
    return name, int(count) if count else 1


def crash_point(name: str) -> None:
    """Kill this process here when ``CASEGRAPH_CRASH_AT`` names this point (see module doc)."""
    if name not in CRASH_POINTS:  # programming error: every call site uses a listed name
        raise ValueError(f"crash point {name!r} is not in CRASH_POINTS")
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    wanted, count = parse_crash_spec(spec)
    if wanted != name:
        return
    _reached[name] += 1
    if _reached[name] >= count:
        os.kill(os.getpid(), signal.SIGKILL)
