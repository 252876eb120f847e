"""Discrete-time labels: edges from uncensored quantiles, widened outer edges."""

from __future__ import annotations

import numpy as np
import pytest

from casegraph.errors import InputError
from casegraph.models.targets import bin_edges, discretize, survival_at
from casegraph.schema import SurvivalTarget


def test_edges_are_quartiles_of_uncensored_times() -> None:
    target = SurvivalTarget.from_arrays([1, 2, 3, 4, 5, 100], [1, 1, 1, 1, 1, 0])
    edges = bin_edges(target, n_bins=4)
    assert edges[0] == 0.0 and np.isinf(edges[-1])
    assert np.allclose(edges[1:-1], [2.0, 3.0, 4.0])  # quartiles of 1..5, 100 censored ignored


def test_discretize_left_closed_bins_cover_everything() -> None:
    edges = np.array([0.0, 2.0, 3.0, 4.0, np.inf])
    labels = discretize([0.0, 1.9, 2.0, 3.5, 4.0, 1e6], edges)
    assert labels.tolist() == [0, 0, 1, 2, 3, 3]
    assert labels.dtype == np.int64


def test_edges_without_events_fall_back_to_all_times() -> None:
    target = SurvivalTarget.from_arrays([1.0, 2.0, 3.0], [0, 0, 0])
    assert np.allclose(bin_edges(target, n_bins=2), [0.0, 2.0, np.inf])


def test_bad_bin_count() -> None:
    with pytest.raises(InputError):
        bin_edges(SurvivalTarget.from_arrays([1.0], [1]), n_bins=0)


def test_survival_at_is_a_step_function() -> None:
    edges = np.array([0.0, 2.0, 4.0, np.inf])
    surv = np.array([[0.9, 0.5, 0.2]])
    got = survival_at(surv, edges, [1.0, 2.0, 3.9, 4.0, 50.0])
    assert got.tolist() == [[1.0, 0.9, 0.9, 0.5, 0.5]]
