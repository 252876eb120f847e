"""Patch scores of fitted models: ABMIL attention sums to 1 and finds a planted patch after
training on a planted-signal cohort; MurreNet/CCL shares; MSRL's neighbour-similarity
contributions match the leave-one-out change they linearise."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from casegraph.errors import InputError
from casegraph.models.attribution import ccl_clusters, explain, patch_scores
from casegraph.models.data import CohortData
from casegraph.models.registry import build_model
from casegraph.schema import SurvivalTarget
from tests.models.fusion_data import planted_cohort

torch.set_num_threads(1)
DIM, N_PATCHES, PLANTED = 8, 16, 5


def _tumour() -> np.ndarray:
    direction = np.zeros(DIM, dtype=np.float32)
    direction[0] = 4.0
    return direction


def _bag(rng: np.random.Generator, planted_at: int | None) -> np.ndarray:
    feats = rng.normal(size=(N_PATCHES, DIM)).astype(np.float32)
    if planted_at is not None:
        feats[planted_at] += _tumour()
    return feats


def one_patch_cohort(folder: Path, n: int, seed: int = 0) -> CohortData:
    """Half the patients carry one 'tumour' patch (at a random place) and die early; the
    rest are noise and live long, a quarter of them censored."""
    rng = np.random.default_rng(seed)
    high = np.arange(n) % 2 == 1
    bags = []
    for i in range(n):
        path = folder / f"s{i}.h5"
        with h5py.File(path, "w") as handle:
            handle["features"] = _bag(rng, int(rng.integers(N_PATCHES)) if high[i] else None)
        bags.append([path])
    time = np.where(high, 5.0, 40.0) + rng.uniform(0, 5, size=n)
    event = rng.random(n) < 0.75
    return CohortData(patient_ids=[f"p{i}" for i in range(n)],
                      target=SurvivalTarget.from_arrays(time, event), groups=[], genomics=[],
                      bags=bags, cohorts=["toy"] * n)


@pytest.fixture(scope="module")
def abmil(tmp_path_factory: pytest.TempPathFactory) -> object:
    data = one_patch_cohort(tmp_path_factory.mktemp("attention"), n=160)
    return build_model("abmil", hidden=16, dropout=0.0, epochs=30, lr=3e-3, batch_size=8,
                       seed=0, device="cpu").fit(data)


def test_abmil_attention_sums_to_one_and_finds_the_planted_patch(abmil: object,
                                                                 tmp_path: Path) -> None:
    rng = np.random.default_rng(99)
    bags = [_bag(rng, PLANTED) for _ in range(5)]
    for bag in bags:
        result = explain(abmil, bag)
        assert result.kind == "attention" and not result.signed
        assert result.scores.shape == (N_PATCHES,) and (result.scores >= 0).all()
        assert result.scores.sum() == pytest.approx(1.0, abs=1e-6)
        assert int(np.argmax(result.scores)) == PLANTED
    # learned, not built in: the untrained network does not single the patch out
    untrained = build_model("abmil", hidden=16, dropout=0.0, epochs=0, seed=0, device="cpu")
    untrained.fit(one_patch_cohort(tmp_path, n=8))
    trained_share = np.mean([explain(abmil, b).scores[PLANTED] for b in bags])
    untrained_share = np.mean([patch_scores(untrained, b)[PLANTED] for b in bags])
    assert trained_share > 0.5 and untrained_share < 0.5 * trained_share


def test_mean_pooling_weighs_every_patch_alike(tmp_path: Path) -> None:
    model = build_model("abmil", pooling="mean", hidden=8, epochs=1, device="cpu")
    model.fit(one_patch_cohort(tmp_path, n=8))
    result = explain(model, np.ones((4, DIM), dtype=np.float32))
    assert result.kind == "mean-pool" and result.scores.tolist() == [0.25] * 4


def test_bad_bags_and_models_are_one_line_input_errors(abmil: object) -> None:
    with pytest.raises(InputError, match="non-empty"):
        explain(abmil, np.zeros((0, DIM), dtype=np.float32))
    with pytest.raises(InputError, match="no patch-level structure"):
        explain(build_model("coxnet"), np.zeros((2, DIM), dtype=np.float32))


@pytest.fixture(scope="module")
def fusion_cohort(tmp_path_factory: pytest.TempPathFactory) -> CohortData:
    return planted_cohort(tmp_path_factory.mktemp("fusion"), n=16, dim=16, patches=(12, 20))


def _genomics(data: CohortData, i: int) -> list[np.ndarray]:
    return [g[i] for g in data.genomics]


def test_murrenet_shares_are_a_distribution_over_patches(fusion_cohort: CohortData) -> None:
    model = build_model("murrenet", dim=16, heads=2, epochs=1, ablation="F")
    model.fit(fusion_cohort)
    bag = fusion_cohort.load_bag(0)
    result = explain(model, bag, _genomics(fusion_cohort, 0))
    assert result.kind == "gradient-share" and result.scores.shape == (len(bag),)
    assert (result.scores >= 0).all() and result.scores.sum() == pytest.approx(1.0)
    with pytest.raises(InputError, match="genomics"):
        explain(model, bag)
    with pytest.raises(InputError, match="sizes"):
        explain(model, bag, [np.zeros(2)])


def test_ccl_scores_follow_the_cluster_assignment(fusion_cohort: CohortData) -> None:
    model = build_model("ccl", k=3, dim=16, heads=2, epochs=1)
    model.fit(fusion_cohort)
    bag = fusion_cohort.load_bag(1)
    slots, centres = ccl_clusters(model, bag)
    assert slots.shape == (len(bag),) and centres.shape == (3, bag.shape[1])
    scores = explain(model, bag, _genomics(fusion_cohort, 1)).scores
    assert scores.sum() == pytest.approx(1.0) and (scores >= 0).all()
    for slot in np.unique(slots):  # one value per cluster, split evenly
        assert np.ptp(scores[slots == slot]) == pytest.approx(0.0, abs=1e-12)


def test_msrl_contributions_linearise_the_leave_one_out_change(
        fusion_cohort: CohortData) -> None:
    from casegraph.models.msrl import MSRLModel
    from casegraph.models.msrl.attribution import neighbour_similarity_scores

    model = MSRLModel("msrl", dim=16, proj_dim=8, batch_size=8, pretrain_steps=3, epochs=2,
                      k=3)
    model.fit(fusion_cohort.subset(range(12)))
    bag = fusion_cohort.load_bag(13).astype(np.float64)
    answer = model.query_wsi_only(bag.astype(np.float32), k=4)
    ids = [p for p, _ in answer.neighbours]
    weights = [w for _, w in answer.neighbours]
    scores = neighbour_similarity_scores(model, bag, ids, weights)
    assert scores.shape == (len(bag),) and abs(scores.sum()) < 1e-4 * np.abs(scores).sum() + 1e-9

    def similarity(patches: np.ndarray) -> float:
        net = model.net_
        with torch.no_grad():
            h = net.encode_wsi([torch.as_tensor(patches, dtype=torch.float32)])
            q = net.gsl_f.keys(net.online_fused(h, None))
            keys = net.gsl_f.keys(model.reference_features(ids))
            return float((net.gsl_f.key_similarity(q, keys)[0]
                          * torch.tensor(weights)).sum())

    full = similarity(bag)
    loo = np.array([similarity(np.delete(bag, i, axis=0)) - full for i in range(len(bag))])
    assert np.corrcoef(scores, -loo)[0, 1] > 0.95
    default = explain(model, bag)  # the model's own answer's neighbours
    assert default.kind == "neighbour-similarity" and default.signed


def test_late_fusion_attention_is_its_wsi_branch(fusion_cohort: CohortData) -> None:
    model = build_model("late_fusion", hidden=8, epochs=1, device="cpu").fit(fusion_cohort)
    bag = fusion_cohort.load_bag(2)
    result = explain(model, bag)
    assert result.kind == "attention" and result.scores.sum() == pytest.approx(1.0)
    assert np.allclose(result.scores, model.patch_attention(bag))  # type: ignore[attr-defined]
