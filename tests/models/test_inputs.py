"""Bag sources: seeded cached subsamples, bag means from stored summaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from casegraph.models.inputs import BagSource
from tests.models.synthetic import planted_cohort


def test_subsample_is_seeded_and_cached(tmp_path: Path) -> None:
    data = planted_cohort(4, bag_dir=tmp_path, n_patches=30)
    a = BagSource(data, max_patches=10, seed=1)
    b = BagSource(data, max_patches=10, seed=1)
    assert a.bag(0).shape == (10, 8)
    assert np.array_equal(a.bag(0), b.bag(0)) and a.bag(0) is a.bag(0)
    assert not np.array_equal(a.bag(0), BagSource(data, max_patches=10, seed=2).bag(0))
    assert BagSource(data, max_patches=None).bag(1).shape == (30, 8)


def test_mean_only_prefers_stored_summaries(tmp_path: Path) -> None:
    data = planted_cohort(3, bag_dir=tmp_path, n_patches=12)
    data.slide_ids = [[f"s{i}a", f"s{i}b"] for i in range(2)] + [[]]
    means = {f"s{i}{x}": (np.full(8, float(i) + (x == "b"), np.float32), np.zeros((6, 8)))
             for i in range(2) for x in "ab"}
    data.summaries = lambda ids, k, seed: {s: means[s] for s in ids if s in means}
    source = BagSource(data, mean_only=True)
    assert source.from_summaries_ == 2
    assert np.allclose(source.bag(1), 1.5)  # mean of the two slide means
    from_bag = data.load_bag(2).mean(axis=0)
    assert np.allclose(source.bag(2)[0], from_bag, atol=1e-6)  # no summaries: read the bag
