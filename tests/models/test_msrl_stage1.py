"""Stage-1 checkpoints: keyed by what Stage 1 depends on, reused exactly, required by
``stage="finetune"``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from casegraph.errors import InputError
from casegraph.models.data import CohortData
from casegraph.models.msrl import MSRLConfig, MSRLModel
from casegraph.models.msrl.stage1 import stage1_key
from casegraph.models.registry import build_model
from tests.models.fusion_data import planted_cohort

torch.set_num_threads(1)
FAST = {"dim": 16, "proj_dim": 8, "batch_size": 8, "pretrain_steps": 3, "epochs": 1}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> CohortData:
    return planted_cohort(tmp_path_factory.mktemp("stage1"), n=30, dim=8)


def test_key_ignores_stage2_options_and_follows_stage1_options_and_data() -> None:
    wsi, groups = torch.ones(3, 4), [torch.zeros(3, 2)]
    ids = ["a", "b", "c"]
    base = stage1_key(MSRLConfig(), ids, wsi, groups)
    assert stage1_key(MSRLConfig(epochs=3, buffer_fraction=0.5, buffer_source="online"),
                      ids, wsi, groups) == base
    assert stage1_key(MSRLConfig(pretrain_steps=7), ids, wsi, groups) != base
    assert stage1_key(MSRLConfig(), ["a", "c", "b"], wsi, groups) != base
    assert stage1_key(MSRLConfig(), ids, wsi * 2, groups) != base


def test_cached_stage1_gives_the_same_model(cohort: CohortData, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    train, test = cohort.subset(range(24)), cohort.subset(range(24, 30))
    first = build_model("msrl", **FAST, stage1_cache=str(tmp_path)).fit(train)
    assert len(list(tmp_path.glob("stage1-*.pt"))) == 1

    def no_pretraining(*_args: object) -> None:
        raise AssertionError("Stage 1 ran although a checkpoint exists")

    monkeypatch.setattr("casegraph.models.msrl.model.pretrain", no_pretraining)
    again = build_model("msrl", **FAST, stage1_cache=str(tmp_path), stage="finetune").fit(train)
    assert isinstance(first, MSRLModel) and isinstance(again, MSRLModel)
    assert again.pretrain_history_ == first.pretrain_history_
    np.testing.assert_allclose(again.predict(test).risk, first.predict(test).risk, atol=1e-6)
    # a Stage-2-only change reuses the checkpoint too
    build_model("msrl", **{**FAST, "epochs": 2}, stage1_cache=str(tmp_path)).fit(train)
    assert len(list(tmp_path.glob("stage1-*.pt"))) == 1


def test_stage_pretrain_only_and_finetune_needs_a_checkpoint(cohort: CohortData,
                                                              tmp_path: Path) -> None:
    train = cohort.subset(range(24))
    with pytest.raises(InputError, match="--stage pretrain first"):
        build_model("msrl", **FAST, stage1_cache=str(tmp_path), stage="finetune").fit(train)
    only = build_model("msrl", **FAST, stage1_cache=str(tmp_path), stage="pretrain").fit(train)
    assert len(only.pretrain_history_) == FAST["pretrain_steps"]
    assert not hasattr(only, "buffer_")
    assert len(list(tmp_path.glob("stage1-*.pt"))) == 1
    with pytest.raises(InputError, match="choose among"):
        build_model("msrl", stage="warmup")
