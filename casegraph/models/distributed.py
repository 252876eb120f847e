"""Training beyond one process: PyTorch DistributedDataParallel under ``torchrun``.

The store has one writer (DuckDB's lock), so a distributed command runs as a *leader*
and *followers* (docs/distributed-training.md):

- rank 0, the leader, runs the command exactly as one process does: it alone opens the
  store, reads the cohort, skips finished folds, predicts and writes every file;
- every other rank follows: it waits for the leader's next ``fit``, receives that fit's
  model class, options and training data (one broadcast), and trains beside it.

Inside a fit the DDP loops (:class:`~casegraph.models.training.DiscreteSurvivalModel`,
:class:`~casegraph.models.fusion_common.PatientFusionModel`) draw the same seeded order
on every rank, split each optimiser step's patients over the ranks (:func:`share`), and
let DDP average the gradients; the share weights make that average the one-process
step's gradient, so every rank holds the same weights after every step and N ranks take
the same steps as one process. Epoch selection is decided on rank 0 and broadcast.

Process groups: ``gloo`` for CPU tensors, ``nccl`` for CUDA tensors when a GPU is present
(``cpu:gloo,cuda:nccl``); the leader/follower messages always travel over a separate
gloo group whose timeout allows a long wait between fits.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist
from torch import nn

from casegraph.errors import InputError
from casegraph.models.data import CohortData

T = TypeVar("T")

# followers wait for the leader's next fit while it reads the store, predicts and writes
FOLLOWER_WAIT = timedelta(days=7)
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Rank:
    """This process's place in a distributed run."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_leader(self) -> bool:
        return self.rank == 0


def rank_from_env(environ: Mapping[str, str] | None = None) -> Rank | None:
    """The rank torchrun gave this process (RANK, WORLD_SIZE, LOCAL_RANK); None when the
    process runs alone (no WORLD_SIZE, or 1)."""
    env = os.environ if environ is None else environ
    world = _env_int(env, "WORLD_SIZE")
    if world is None or world <= 1:
        return None
    rank = _env_int(env, "RANK")
    if rank is None or not 0 <= rank < world:
        raise InputError(f"RANK={env.get('RANK')!r} with WORLD_SIZE={world}",
                         column="RANK", fix="start the ranks with torchrun")
    local = _env_int(env, "LOCAL_RANK")
    return Rank(rank, world, rank if local is None else local)


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise InputError(f"{name}={raw!r} is not a number", column=name,
                         fix="start the ranks with torchrun")
    return int(raw)


_control: Any = None  # the gloo group carrying leader/follower messages


def current() -> Rank | None:
    """This process's rank in the initialised process group; None when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    env = rank_from_env()
    local = env.local_rank if env is not None else dist.get_rank()
    return Rank(dist.get_rank(), dist.get_world_size(), local)


def _join(environ: Mapping[str, str] | None) -> tuple[Rank | None, bool]:
    """Join the process group torchrun describes: (this rank or None, whether this call
    created the group). A lone process, or a group that already exists, joins nothing."""
    global _control
    rank = rank_from_env(environ)
    created = rank is not None and not dist.is_initialized()
    if created and rank is not None:
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(rank.local_rank % torch.cuda.device_count())
        dist.init_process_group(backend=backend)
    if dist.is_initialized() and _control is None:
        _control = dist.new_group(backend="gloo", timeout=FOLLOWER_WAIT)
    return current(), created


def _leave() -> None:
    global _control
    _control = None
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def session(environ: Mapping[str, str] | None = None) -> Iterator[Rank | None]:
    """Join the ranks for the duration of the block (leave at the end if this joined)."""
    rank, created = _join(environ)
    try:
        yield rank
    finally:
        if created:
            _leave()


def lead(command: Callable[[], T], environ: Mapping[str, str] | None = None) -> T | None:
    """Run ``command`` as a distributed command: rank 0 runs it (and then releases the
    followers, also when it fails); every other rank trains the leader's fits until
    released and returns None. A lone process just runs it."""
    with session(environ) as rank:
        if rank is None:
            return command()
        if rank.is_leader:
            try:
                return command()
            finally:
                _broadcast(None)
        follow()
        return None


def lead_or_follow(environ: Mapping[str, str] | None = None) -> bool:
    """For a command line under torchrun (``casegraph train``): True where the command
    should run -- the leader, which releases the followers when the process exits, or a
    lone process; a follower trains the leader's fits, and False once it is released."""
    rank, created = _join(environ)
    if rank is None:
        return True
    if rank.is_leader:
        atexit.register(_release, created)
        return True
    follow()
    if created:
        _leave()
    return False


def _release(created: bool) -> None:
    _broadcast(None)
    if created:
        _leave()


def follow() -> int:
    """The follower's loop: fit each model the leader announces, until released; the
    number of fits."""
    fits = 0
    while (job := _broadcast(None)) is not None:
        factory, options, train, valid = job
        factory(**options).fit(train, valid)
        fits += 1
    return fits


def announce_fit(model: Any, train: CohortData, valid: CohortData | None,
                 rank: Rank | None) -> None:
    """On the leader: send this fit (the model's class and options, its data) to the
    followers so they train it too. A no-op when not distributed or on a follower."""
    if rank is None or not rank.is_leader:
        return
    _broadcast((type(model), model.get_options(), _portable(train),
                None if valid is None else _portable(valid)))


def _portable(data: CohortData) -> CohortData:
    """The data without its store-bound summary lookup (a follower has no store; CCL then
    computes centres from the bags, as the stored summaries were)."""
    return replace(data, summaries=None)


def _broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (over the control group)."""
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_control)
    return box[0]


# ---------------------------------------------------------------------- inside a fit
def rank_device(device: str, rank: Rank | None) -> str:
    """The device this rank trains on: its own GPU (LOCAL_RANK) when training on CUDA."""
    if rank is None or not device.startswith("cuda"):
        return device
    return f"cuda:{rank.local_rank % max(torch.cuda.device_count(), 1)}"


def wrap(module: nn.Module, rank: Rank | None, device: str) -> nn.Module:
    """``module`` under DDP when distributed (gradients all-reduced on backward), else
    itself. Unused parameters are looked for: ablations and MurreNet/CCL switches leave
    parts of a network out of some forwards."""
    if rank is None:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [torch.device(device).index] if device.startswith("cuda") else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


def share(rows: npt.NDArray[np.int64], rank: Rank | None, length: int | None = None
          ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """This rank's rows of one optimiser step and their weights.

    Rank r takes ``rows[r::world]`` (DistributedSampler's interleaving, on the order every
    rank drew with the same seed), padded to ``length`` (default ceil(len / world), equal
    on every rank so every rank runs the same number of backward passes) by repeating the
    step's first row with weight 0. A real row's weight is ``world``: DDP *averages*
    gradients over ranks, so the weights turn that average back into the one-process sum.
    Returns (rows (m,), weights (m,)).
    """
    if rank is None:
        return rows, np.ones(len(rows))
    mine = rows[rank.rank::rank.world_size]
    size = length if length is not None else -(-len(rows) // rank.world_size)
    pad = max(size - len(mine), 0)
    padded = np.concatenate([mine, np.full(pad, rows[0] if len(rows) else 0, np.int64)])
    weights = np.concatenate([np.full(len(mine), float(rank.world_size)), np.zeros(pad)])
    return padded.astype(np.int64), weights


def sum_over_ranks(values: npt.ArrayLike, rank: Rank | None) -> npt.NDArray[np.float64]:
    """Element-wise sum of ``values`` over all ranks (itself when not distributed)."""
    x = torch.as_tensor(np.asarray(values, dtype=np.float64))
    if rank is not None:
        dist.all_reduce(x, group=_control)
    return x.numpy()


def leader_value(value: float, rank: Rank | None) -> float:
    """Rank 0's ``value`` on every rank: a decision (the selected epoch) is taken once."""
    if rank is None:
        return value
    x = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(x, src=0, group=_control)
    return float(x.item())
