"""Preprocessing statistics come from the training fold only."""

from __future__ import annotations

import numpy as np
import pytest

from casegraph.models.preprocess import GenomicsPreprocessor


def test_statistics_from_training_fold_only() -> None:
    train = [np.array([[0.0, 1.0], [2.0, 1.0]], dtype=np.float32)]
    evaluation = [np.array([[100.0, 5.0]], dtype=np.float32)]
    pre = GenomicsPreprocessor(raw_clip=None, z_clip=None).fit(train)
    assert np.allclose(pre.mean_[0], [1.0, 1.0]) and np.allclose(pre.scale_[0], [1.0, 1.0])
    assert np.allclose(pre.transform(evaluation)[0], [[99.0, 4.0]])  # constant column: sd 1
    assert pre.n_fit_ == 2


def test_extreme_values_clipped_before_and_after_standardising() -> None:
    train = [np.array([[0.0], [2.0], [37000.0]], dtype=np.float32)]
    pre = GenomicsPreprocessor(raw_clip=10.0, z_clip=1.0).fit(train)
    assert pre.mean_[0][0] == pytest.approx(4.0)  # mean of 0, 2, 10
    out = pre.transform([np.array([[1e9], [-1e9]], dtype=np.float32)])[0]
    assert out.tolist() == [[1.0], [-1.0]]


def test_transform_before_fit() -> None:
    with pytest.raises(RuntimeError):
        GenomicsPreprocessor().transform([np.zeros((1, 1), dtype=np.float32)])
