"""Retrieval evaluation: label metrics by hand, and a tiny end-to-end fold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from casegraph.ingest.store import Store
from casegraph.models.data import CohortData
from casegraph.retrieval.evaluation import evaluate_fold, label_metrics, summarise


def test_label_metrics_by_hand() -> None:
    query = ["a", "a", "b", None]
    neighbours = [["a", "b", "b"], ["b", "b", "c"], ["b", "a", "b"], ["a", "a", "a"]]
    m = label_metrics(query, neighbours, k=3)
    assert m["acc@3"] == pytest.approx(2 / 3)
    assert m["mv@3"] == pytest.approx(1 / 3)  # only the "b" query votes right
    assert m["mmv@3"] == pytest.approx((0 / 2 + 1 / 1) / 2)
    assert label_metrics([None], [["a"]], 1) == {}


@pytest.mark.slow
def test_tiny_fold_end_to_end(tiny_store: Store) -> None:
    torch.set_num_threads(1)
    data = CohortData.from_store(tiny_store, "alpha", require_slides=True)
    train, test = np.arange(0, 14), np.arange(14, 20)
    options = {"dim": 16, "proj_dim": 8, "batch_size": 8, "pretrain_steps": 3, "epochs": 1}
    fold = evaluate_fold(tiny_store, data, train, test, k=3, n_candidates=5,
                         msrl_options=options)
    assert set(fold.metrics) == {"knn", "msrl", "multimodal"}
    knn = fold.metrics["knn"]
    assert knn["harrell"] > 0.7 and knn["acc@3"] == 1.0  # histology carries the signal
    msrl = fold.metrics["msrl"]
    assert 0 <= msrl["recall@10"] <= 1 and msrl["risk_abs_diff"] >= 0
    assert "model_harrell" in msrl and "model_harrell" in fold.metrics["multimodal"]
    summary = summarise([fold, fold])
    assert summary["knn"]["harrell"] == (knn["harrell"], 0.0)
