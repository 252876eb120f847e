"""Where the per-slide registration work runs: a local thread pool, or Dask workers.

The per-slide work is :func:`casegraph.ingest.summaries.register_bag` (read, hash,
validate, mean, k-means centres, coords, provenance); it returns a small
:class:`~casegraph.ingest.summaries.BagRecord` (a few KB, plus 8 bytes a patch of
coords). The driver keeps everything else, including the one all-or-nothing DuckDB
transaction: an executor only computes records, in the tasks' order, or raises.

- ``local`` (default), ``local:N``: N threads in this process (default: every core).
- ``dask://HOST:PORT``: the tasks of a batch go to the workers of a Dask distributed
  scheduler, which reads the bags from paths the workers see (a shared file system).
  A worker that dies has its slides re-run on another (the scheduler's
  ``allowed-failures``); when slides still fail, nothing is returned and the error
  names them. Why Dask and not Ray: docs/deploy.md.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from casegraph.errors import CasegraphError, InputError
from casegraph.ingest.summaries import (
    BagRecord,
    limit_blas_for_this_process,
    register_bag,
    register_bags,
)

EXECUTOR_FIX = "use local, local:N (threads) or dask://HOST:PORT (a Dask scheduler)"
DASK_CONNECT_TIMEOUT = 10.0  # seconds to reach the scheduler before giving up
FAILED_NAMES_SHOWN = 5


class ExecutorError(CasegraphError):
    """Slides whose registration failed on the executor (not because of their bytes)."""


@dataclass(frozen=True)
class SlideTask:
    """One slide's registration: its bag file (absolute, as the workers see it), the
    summary setting and the hash algorithms (the first is the one recorded)."""

    slide_id: str
    path: str
    k: int
    seed: int
    algorithms: tuple[str, ...]


class Executor(Protocol):
    name: str

    def register(self, tasks: Sequence[SlideTask]) -> Iterator[BagRecord]:
        """One record per task, in the tasks' order; raises before the first missing one."""
        ...


class LocalExecutor:
    """The tasks on ``threads`` threads of this process (default: every core it may use)."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self.name = "local" if threads is None else f"local:{threads}"

    def register(self, tasks: Sequence[SlideTask]) -> Iterator[BagRecord]:
        if not tasks:
            return
        k, seed = _one_setting(tasks)
        yield from register_bags([t.path for t in tasks], k, seed, threads=self.threads,
                                 algorithms=[t.algorithms for t in tasks])


_blas_limited = False


def run_task(task: SlideTask) -> BagRecord:
    """A task on a Dask worker: BLAS kept at one thread per process (the worker's threads
    are the parallelism; see summaries._SingleThreadedBlas), then :func:`register_bag`."""
    global _blas_limited
    if not _blas_limited:
        limit_blas_for_this_process()
        _blas_limited = True
    return register_bag(task.path, task.k, task.seed, task.algorithms)


class DaskExecutor:
    """The tasks on the workers of the Dask scheduler at ``address`` (``tcp://HOST:PORT``)."""

    def __init__(self, address: str, connect_timeout: float = DASK_CONNECT_TIMEOUT) -> None:
        self.address = address
        self.connect_timeout = connect_timeout
        self.name = address.replace("tcp://", "dask://", 1)

    def register(self, tasks: Sequence[SlideTask]) -> Iterator[BagRecord]:
        if not tasks:
            return
        client = self._connect()
        try:
            yield from self._run(client, list(tasks))
        finally:
            client.close()

    def _connect(self) -> Any:
        from distributed import Client

        try:
            return Client(self.address, timeout=self.connect_timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {self.name} within "
                             f"{self.connect_timeout:g} s ({exc.__class__.__name__})",
                             column="--executor",
                             fix="start `dask scheduler` there and its `dask worker`s, check "
                             "host and port, or leave --executor out for the local pool"
                             ) from None

    def _run(self, client: Any, tasks: list[SlideTask]) -> Iterator[BagRecord]:
        from distributed import as_completed

        batch = secrets.token_hex(4)
        futures = client.map(run_task, tasks, key=[f"register-{batch}-{i}"
                                                   for i in range(len(tasks))])
        position = {future.key: i for i, future in enumerate(futures)}
        done: dict[int, BagRecord] = {}
        failed: dict[int, BaseException] = {}
        next_out = 0
        # results are fetched as each finishes: one held only in a worker's memory is lost
        # (and recomputed) when that worker dies
        for future, result in as_completed(futures, loop=client.loop, with_results=True,
                                           raise_errors=False):
            i = position[future.key]
            if future.status == "finished":
                done[i] = result
            else:
                failed[i] = result if isinstance(result, BaseException) else future.exception()
            while not failed and next_out in done:  # stream the finished prefix
                yield done.pop(next_out)
                next_out += 1
        if failed:
            raise _batch_failure(tasks, failed, self.name)


def _batch_failure(tasks: list[SlideTask], failed: dict[int, BaseException],
                   where: str) -> CasegraphError:
    """The error of a batch with failed slides: a bad bag's own InputError (the first in
    the tasks' order, as the local pool raises it) unless some slides failed otherwise
    (a worker died too often, a bug); then one error naming every failed slide."""
    order = sorted(failed)
    other = [i for i in order if not isinstance(failed[i], InputError)]
    if not other:
        error = failed[order[0]]
        assert isinstance(error, InputError)
        return error
    names = ", ".join(tasks[i].slide_id for i in order[:FAILED_NAMES_SHOWN])
    more = f" and {len(order) - FAILED_NAMES_SHOWN} more" if len(order) > FAILED_NAMES_SHOWN else ""
    first = failed[other[0]]
    return ExecutorError(
        f"{len(order)} of {len(tasks)} slides failed on the workers of {where}: {names}{more} "
        f"({first.__class__.__name__}: {_one_line(first)}); nothing was written. Check the "
        "workers' logs and that they see the bag paths, then run the ingest again")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _one_setting(tasks: Sequence[SlideTask]) -> tuple[int, int]:
    settings = {(t.k, t.seed) for t in tasks}
    if len(settings) != 1:
        raise ValueError(f"one batch has one (k, seed), got {sorted(settings)}")
    return next(iter(settings))


DASK_SPEC = re.compile(r"dask://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})")


def executor_from_spec(spec: str | None) -> Executor:
    """``None``/``local``, ``local:N`` or ``dask://HOST:PORT`` -> an executor."""
    if spec is None or spec.strip() in ("", "local"):
        return LocalExecutor()
    text = spec.strip()
    if text.startswith("local:"):
        count = text.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise InputError(f"--executor {spec!r}: the thread count must be a whole number "
                             ">= 1", column="--executor", fix=EXECUTOR_FIX)
        return LocalExecutor(int(count))
    match = DASK_SPEC.fullmatch(text)
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise InputError(f"--executor {spec!r} is not an executor casegraph knows",
                         column="--executor", fix=EXECUTOR_FIX)
    return DaskExecutor(f"tcp://{match['host']}:{match['port']}")
