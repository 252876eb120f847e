"""DDP training on two CPU ranks (gloo on loopback), against the same fit in one process.

The ranks are real processes started the way torchrun starts them (MASTER_ADDR/PORT,
RANK, WORLD_SIZE, LOCAL_RANK in the environment); rank 0 leads, rank 1 follows.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from sksurv.metrics import concordance_index_censored

from casegraph.errors import InputError
from casegraph.models import distributed
from casegraph.models.data import CohortData
from casegraph.models.distributed import Rank, rank_from_env, share
from casegraph.models.registry import MODELS, build_model
from tests.models.synthetic import planted_cohort

WORLD = 2


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """Tiny networks: one CPU thread per process (the test machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------- pure helpers
def test_rank_comes_from_the_torchrun_environment() -> None:
    assert rank_from_env({}) is None
    assert rank_from_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    assert rank_from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == Rank(2, 4, 0)
    assert rank_from_env({"WORLD_SIZE": "2", "RANK": "1"}) == Rank(1, 2, 1)
    with pytest.raises(InputError, match="RANK"):
        rank_from_env({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(InputError, match="not a number"):
        rank_from_env({"WORLD_SIZE": "two", "RANK": "0"})


@pytest.mark.parametrize("n", [1, 2, 5, 8])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shares_cover_the_step_once_and_average_to_its_sum(n: int, world: int) -> None:
    """Every row of the step is on exactly one rank with weight ``world``; padding has
    weight 0; every rank runs the same number of rows; mean over ranks of the weighted
    sums = the one-process sum (what DDP's gradient average then reproduces)."""
    step = np.arange(10, 10 + n, dtype=np.int64)
    losses = np.linspace(0.5, 2.0, 30)  # a per-row loss, indexed by row id
    shares = [share(step, Rank(r, world, r)) for r in range(world)]
    real = sorted(int(i) for rows, w in shares for i, wi in zip(rows, w, strict=True) if wi > 0)
    assert real == step.tolist()
    assert len({len(rows) for rows, _ in shares}) == 1
    averaged = np.mean([(losses[rows] * w).sum() for rows, w in shares])
    assert averaged == pytest.approx(losses[step].sum())
    rows, weights = share(step, None)
    assert rows.tolist() == step.tolist() and weights.tolist() == [1.0] * n


def test_a_lone_process_runs_the_command_itself() -> None:
    assert distributed.lead(lambda: 42, environ={}) == 42
    assert distributed.current() is None


# ---------------------------------------------------------------------- two ranks
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cohort(folder: Path, with_bags: bool) -> tuple[CohortData, CohortData]:
    data = planted_cohort(120, seed=1, bag_dir=folder / "bags" if with_bags else None)
    return data.subset(range(90)), data.subset(range(90, 120))


def _fit_and_save(model: str, options: dict[str, Any], folder: Path, with_bags: bool
                  ) -> np.ndarray:
    train, test = _cohort(folder, with_bags)
    fitted = build_model(model, **options).fit(train)
    fitted.save(folder / f"{model}.pt")  # type: ignore[attr-defined]
    risk = np.asarray(fitted.predict(test).risk)
    np.save(folder / f"{model}-risk.npy", risk)
    return risk


def _rank_main(rank: int, port: int, folder: str, model: str, options: dict[str, Any],
               with_bags: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.lead(lambda: _fit_and_save(model, options, Path(folder), with_bags))


def _two_ranks(tmp_path: Path, model: str, options: dict[str, Any], with_bags: bool
               ) -> np.ndarray:
    folder = tmp_path / "ranks"
    folder.mkdir()
    mp.spawn(_rank_main, args=(_free_port(), str(folder), model, options, with_bags),
             nprocs=WORLD, join=True)
    return np.load(folder / f"{model}-risk.npy")


def _c_index(data: CohortData, risk: np.ndarray) -> float:
    return float(concordance_index_censored(data.target.event, data.target.time, risk)[0])


FUSION_TINY = {"dim": 16, "heads": 2, "dropout": 0.0, "grad_accum": 4, "lr": 2e-3}


@pytest.mark.parametrize(("model", "options", "with_bags", "exact"), [
    ("snn", {"epochs": 25, "dropout": 0.0, "lr": 1e-3, "batch_size": 16}, False, True),
    ("snn", {"epochs": 25, "lr": 1e-3, "batch_size": 16, "select": "inner"}, False, False),
    ("murrenet", {**FUSION_TINY, "epochs": 4}, True, False),  # attention dropout 0.1
    ("ccl", {**FUSION_TINY, "epochs": 4, "k": 3}, True, False),
], ids=["snn", "snn-dropout-inner", "murrenet-accum4", "ccl-accum4"])
def test_two_cpu_ranks_match_one_process(tmp_path: Path, model: str, options: dict[str, Any],
                                         with_bags: bool, exact: bool) -> None:
    """Two ranks take the one-process optimiser steps (shares weighted to its gradient):
    without random masks (``exact``) the predictions agree up to rounding; with dropout (the
    MurreNet co-attention keeps 0.1) or CCL's cohort bank (rank 0's bank on every rank),
    the metrics agree within noise."""
    two = _two_ranks(tmp_path, model, options, with_bags)
    alone_dir = tmp_path / "alone"
    alone_dir.mkdir()
    one = _fit_and_save(model, options, alone_dir, with_bags)
    _, test = _cohort(alone_dir, with_bags)
    c_two, c_one = _c_index(test, two), _c_index(test, one)
    assert c_one > 0.65 and c_two > 0.65  # both learned the planted signal
    assert abs(c_two - c_one) < 0.05
    if exact:
        np.testing.assert_allclose(two, one, rtol=1e-3, atol=1e-3)
    loaded = MODELS.get(model).load(tmp_path / "ranks" / f"{model}.pt")  # type: ignore[attr-defined]
    np.testing.assert_allclose(loaded.predict(test).risk, two, rtol=1e-6)
    assert loaded.trained_on()["world_size"] == WORLD


# ---------------------------------------------------------------------- torchrun + CLI
def _train_command(store: Path) -> list[str]:
    return ["train", "--store", str(store), "--model", "snn", "--cohort", "synth",
            "--epochs", "15", "--option", "dropout=0.0", "--option", "lr=0.001",
            "--folds", "0", "--save-version", "--version-fold", "all"]


def _store_with_cohort(folder: Path) -> Path:
    from casegraph.ingest.store import Store
    from tests.models.synthetic import write_to_store

    with Store.open(folder) as store:
        write_to_store(store, planted_cohort(90, seed=2), n_folds=3)
    return folder


def _run(argv: list[str]) -> str:
    import subprocess

    env = {**os.environ, "CASEGRAPH_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_casegraph_train_under_torchrun_matches_one_process(tmp_path: Path) -> None:
    """``torchrun --nproc-per-node 2 --no-python casegraph train ...``: rank 0 alone writes
    the store (CV results, one version); the metrics and the version's stored risks match
    the same command in one process, and the version loads in this (single) process."""
    import sys

    from casegraph.ingest.store import Store
    from casegraph.models.versioning import load_version

    bin_dir = Path(sys.executable).parent
    two, one = _store_with_cohort(tmp_path / "two"), _store_with_cohort(tmp_path / "one")
    out_two = _run([str(bin_dir / "torchrun"), "--standalone", "--nproc-per-node", "2",
                    "--no-python", str(bin_dir / "casegraph"), *_train_command(two)])
    out_one = _run([str(bin_dir / "casegraph"), *_train_command(one)])
    c_two, c_one = (float(next(line for line in out.splitlines()
                               if line.startswith("c_index:")).split()[1])
                    for out in (out_two, out_one))
    assert c_one > 0.6 and abs(c_two - c_one) < 0.02
    assert out_two.count("stored model version") == 1  # rank 0 only
    risks = []
    for folder in (two, one):
        with Store.open(folder, create=False, read_only=True) as store:
            (version,) = store.versions.ids()
            risks.append(store.versions.predictions(version).sort_values("patient_id")
                         ["risk"].to_numpy())
            if folder == two:
                model, _spec = load_version(store, version)
                assert model.trained_on()["world_size"] == 2  # type: ignore[attr-defined]
    np.testing.assert_allclose(risks[0], risks[1], rtol=1e-3, atol=1e-3)
