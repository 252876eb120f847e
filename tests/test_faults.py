"""Named crash points: refused names, @n counting, a real SIGKILL, and nothing without the env var."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from casegraph.errors import InputError
from casegraph.faults import CRASH_ENV, CRASH_POINTS, crash_point, parse_crash_spec

# Reaches the point five times, printing the count after each pass that survived.
REACH_SCRIPT = """
import sys
from casegraph.faults import crash_point
for i in range(1, 6):
    crash_point(sys.argv[1])
    print(i, flush=True)
"""


def _run(point: str, spec: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if spec is not None:
        env[CRASH_ENV] = spec
    return subprocess.run([sys.executable, "-c", REACH_SCRIPT, point], env=env,
                          capture_output=True, text=True, check=False)


@pytest.mark.parametrize("spec", ["ingest.in_transactio", "INGEST.IN_TRANSACTION", "", "@2",
                                  "sync.after_batch@0", "sync.after_batch@x",
                                  "sync.after_batch@-1", "sync.after_batch@1.5"])
def test_bad_spec_is_refused(spec: str) -> None:
    with pytest.raises(InputError, match=CRASH_ENV):
        parse_crash_spec(spec)


def test_good_spec_parses() -> None:
    assert parse_crash_spec("ingest.in_transaction") == ("ingest.in_transaction", 1)
    assert parse_crash_spec("sync.after_batch@3") == ("sync.after_batch", 3)


def test_unlisted_call_site_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="not in CRASH_POINTS"):
        crash_point("no.such.point")


def test_nothing_happens_without_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CRASH_ENV, raising=False)
    for name in sorted(CRASH_POINTS):
        crash_point(name)  # returns; this test process is still alive


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
def test_subprocess_runs_through_without_the_env_var(point: str) -> None:
    proc = _run(point, None)
    assert proc.returncode == 0 and proc.stdout.split() == ["1", "2", "3", "4", "5"]


def test_other_point_named_does_not_fire() -> None:
    proc = _run("sync.after_batch", "ingest.in_transaction")
    assert proc.returncode == 0 and proc.stdout.split() == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize(("spec", "survived"), [("ingest.in_transaction", []),
                                               ("ingest.in_transaction@1", []),
                                               ("ingest.in_transaction@3", ["1", "2"]),
                                               ("ingest.in_transaction@5", ["1", "2", "3", "4"])])
def test_killed_by_sigkill_at_the_nth_reach(spec: str, survived: list[str]) -> None:
    proc = _run("ingest.in_transaction", spec)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout.split() == survived


def test_count_beyond_reaches_never_fires() -> None:
    proc = _run("ingest.in_transaction", "ingest.in_transaction@6")
    assert proc.returncode == 0 and proc.stdout.split() == ["1", "2", "3", "4", "5"]


def test_unknown_name_in_env_fails_loudly_in_a_real_process() -> None:
    proc = _run("ingest.in_transaction", "ingest.typo")
    assert proc.returncode not in (0, -signal.SIGKILL)
    assert "unknown crash point" in proc.stderr
