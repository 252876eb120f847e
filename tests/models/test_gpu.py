"""GPU path: the same planted-signal training on CUDA (skipped without a GPU; CI has none)."""

from __future__ import annotations

import pytest
import torch
from sksurv.metrics import concordance_index_censored

from casegraph.models.registry import build_model
from tests.models.synthetic import planted_cohort

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.gpu
@needs_cuda
def test_snn_learns_on_cuda() -> None:
    data = planted_cohort(160, seed=1)
    train, test = data.subset(range(120)), data.subset(range(120, 160))
    model = build_model("snn", epochs=30, device="cuda", seed=0).fit(train)
    assert model.device_ == "cuda"
    pred = model.predict(test)
    c = concordance_index_censored(test.target.event, test.target.time, pred.risk)[0]
    assert c > 0.65
