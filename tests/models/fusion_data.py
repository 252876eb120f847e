"""Tiny planted-signal cohorts with .h5 bags for the MurreNet and CCL tests (not a test)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from casegraph.models.data import CohortData
from casegraph.schema import SurvivalTarget


def planted_cohort(tmp_path: Path, n: int = 40, dim: int = 16, group_sizes: tuple[int, ...] = (4, 3, 5),
                   seed: int = 0, patches: tuple[int, int] = (30, 60)) -> CohortData:
    """n patients with risk z ~ N(0, 1) planted in gene group 0 and in the share of
    'tumour' patches (a fixed direction) of each bag; times exp(-z)-scaled, ~30% censored."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    genomics = [rng.normal(size=(n, g)).astype(np.float32) for g in group_sizes]
    genomics[0][:, 0] += 2.0 * z.astype(np.float32)
    tumour = rng.normal(size=dim).astype(np.float32) * 3.0
    bags: list[list[Path]] = []
    slide_ids: list[list[str]] = []
    for i in range(n):
        m = int(rng.integers(*patches))
        share = 1.0 / (1.0 + np.exp(-2.0 * z[i]))
        feats = rng.normal(size=(m, dim)).astype(np.float32)
        feats[rng.random(m) < share] += tumour
        path = tmp_path / f"slide{i}.h5"
        with h5py.File(path, "w") as handle:
            handle["features"] = feats
            handle["coords"] = np.stack([np.arange(m), np.zeros(m)], axis=1).astype(np.int64)
        bags.append([path])
        slide_ids.append([f"slide{i}"])
    time = 10.0 * np.exp(-z) * rng.exponential(size=n) + 0.1
    event = rng.random(n) < 0.7
    return CohortData(
        patient_ids=[f"p{i}" for i in range(n)],
        target=SurvivalTarget.from_arrays(time, event),
        groups=[f"g{j}" for j in range(len(group_sizes))],
        genomics=genomics,
        bags=bags,
        cohorts=["tiny"] * n,
        slide_ids=slide_ids,
    )


def harrell_c(risk: np.ndarray, target: SurvivalTarget) -> float:
    from sksurv.metrics import concordance_index_censored

    return float(concordance_index_censored(target.event, target.time, risk)[0])
