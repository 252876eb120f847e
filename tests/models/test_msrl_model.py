"""MSRL end to end on tiny planted-signal data: training lowers the loss and ranks better than
chance, WSI-only inference never reads the query's genomics, buffers hold training cases
only, and a saved model version round-trips through the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sksurv.metrics import concordance_index_censored

from casegraph.errors import InputError
from casegraph.ingest.store import Store
from casegraph.models.data import CohortData
from casegraph.models.evaluate import evaluate_prediction
from casegraph.models.msrl import ABLATIONS, MSRLModel
from casegraph.models.msrl.artifacts import read_patient_embeddings
from casegraph.models.registry import build_model
from tests.models.fusion_data import planted_cohort
from tests.models.synthetic import ingested_sim_store

torch.set_num_threads(1)
FAST = {"dim": 32, "proj_dim": 16, "batch_size": 16, "pretrain_steps": 10, "epochs": 3}


def c_index(data: CohortData, risk: np.ndarray) -> float:
    return float(concordance_index_censored(data.target.event, data.target.time, risk)[0])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> CohortData:
    return planted_cohort(tmp_path_factory.mktemp("msrl"), n=80, dim=16)


@pytest.mark.slow
def test_training_on_planted_signal_beats_chance(cohort: CohortData) -> None:
    train, test = cohort.subset(range(60)), cohort.subset(range(60, 80))
    model = build_model("msrl", **{**FAST, "epochs": 30, "pretrain_steps": 30, "lr": 1e-3})
    model.fit(train, test)
    assert isinstance(model, MSRLModel)
    assert model.pretrain_history_[-1] < model.pretrain_history_[0]
    assert model.finetune_history_[-1] < model.finetune_history_[0]
    pred = model.predict(test)
    assert pred.survival is not None and np.all(np.diff(pred.survival, axis=1) <= 1e-9)
    assert c_index(test, pred.risk) > 0.65
    assert set(model.buffer_ids) <= set(train.patient_ids)


@pytest.mark.parametrize("variant", ["msrl", "msrl_h", "msrl_multi"])
def test_variants_fit_and_predict(cohort: CohortData, variant: str) -> None:
    train, test = cohort.subset(range(40)), cohort.subset(range(40, 50))
    model = build_model(variant, **FAST).fit(train, test)
    pred = model.predict(test)
    assert pred.risk.shape == (10,) and np.isfinite(pred.risk).all()
    assert pred.embedding is not None and pred.embedding.shape == (10, 32)
    assert not set(model.buffer_ids) & set(test.patient_ids)
    metrics = evaluate_prediction(pred, train.target, test.target)
    assert np.isfinite(metrics["ibs"]) and 0 < metrics["ibs"] < 1  # was NaN: no bin edges


def test_wsi_only_inference_never_reads_query_genomics(cohort: CohortData) -> None:
    train, test = cohort.subset(range(40)), cohort.subset(range(40, 48))
    model = build_model("msrl", **FAST).fit(train, test)
    clean = model.predict(test)
    poisoned = test.subset(range(len(test)))
    poisoned.genomics = [np.full_like(g, np.nan) for g in test.genomics]
    dirty = model.predict(poisoned)
    np.testing.assert_array_equal(clean.risk, dirty.risk)
    answer = model.query_wsi_only(test.load_bag(0), k=5)
    assert answer.risk == pytest.approx(float(clean.risk[0]), abs=1e-6)
    assert len(answer.neighbours) == 5
    assert all(p in model.buffer_ids for p, _ in answer.neighbours)
    assert answer.genomics_prompt.shape == (32,) and np.isfinite(answer.genomics_prompt).all()
    # the multimodal variant does read genomics: poisoning shows up
    multi = build_model("msrl_multi", **FAST).fit(train, test)
    assert np.isnan(multi.predict(poisoned).risk).all()
    with pytest.raises(InputError, match="msrl_multi"):
        multi.query_wsi_only(test.load_bag(0))


def test_buffer_fraction_and_candidates(cohort: CohortData) -> None:
    train, test = cohort.subset(range(40)), cohort.subset(range(40, 44))
    model = build_model("msrl", **{**FAST, "buffer_fraction": 0.25}).fit(train, test)
    assert len(model.buffer_ids) == 10
    candidates = train.patient_ids[:15]
    answer = model.query_wsi_only(test.load_bag(0), candidate_ids=candidates, k=3)
    assert {p for p, _ in answer.neighbours} <= set(candidates)
    with pytest.raises(InputError, match="unknown to this model version"):
        model.query_wsi_only(test.load_bag(0), candidate_ids=["nobody"])
    empty = build_model("msrl", **{**FAST, "buffer_fraction": 0.0}).fit(train, test)
    assert empty.buffer_ids == [] and np.isfinite(empty.predict(test).risk).all()


def test_classification_task(cohort: CohortData) -> None:
    data = cohort.subset(range(40))
    data.attributes = [{"grade": "high" if t < 5 else "low"} for t in data.target.time]
    model = build_model("msrl", **{**FAST, "task": "classification", "label": "grade"})
    pred = model.fit(data.subset(range(30)), data.subset(range(30, 40))).predict(
        data.subset(range(30, 40)))
    assert ((pred.risk >= 0) & (pred.risk <= 1)).all() and pred.survival is None
    with pytest.raises(InputError, match="label"):
        build_model("msrl", task="classification")


def test_unknown_option_and_overlap_are_input_errors(cohort: CohortData) -> None:
    with pytest.raises(InputError, match="unknown MSRL option"):
        build_model("msrl", nonsense=1)
    with pytest.raises(InputError, match="graph"):
        build_model("msrl", graph="bogus")
    data = cohort.subset(range(10))
    with pytest.raises(InputError, match="both training and evaluation"):
        build_model("msrl", **FAST).fit(data, data.subset([0]))
    no_groups = cohort.subset(range(10))
    no_groups.genomics, no_groups.groups = [], []
    with pytest.raises(InputError, match="no gene groups"):
        build_model("msrl", **FAST).fit(no_groups)


def _sim_store(tmp_path: Path) -> Store:
    return ingested_sim_store(tmp_path, 36, n_patches=40, dim=12, seed=3, multi_slide=0.2)


def test_save_and_load_version_round_trip(tmp_path: Path) -> None:
    store = _sim_store(tmp_path)
    data = CohortData.from_store(store, "sim", require_slides=True)
    train_ids, eval_ids = store.splits("mcat")[0]
    train, evaluation = data.select(train_ids), data.select(eval_ids)
    model = build_model("msrl", **FAST).fit(train, evaluation)
    version = model.save_version(store, "sim")
    # rows: version, buffer (FIFO positions 0..n-1, training patients only), neighbours
    assert store.latest_model_version("msrl") == version
    buffer = store.model_buffer(version)
    assert buffer == model.buffer_ids and not set(buffer) & set(eval_ids)
    neighbours = store.model_neighbours(version)
    assert set(neighbours["patient_id"]) == set(data.patient_ids)
    assert (neighbours.groupby("patient_id").size() == 12).all()
    assert (neighbours["weight"] >= 0).all()
    assert not (neighbours["patient_id"] == neighbours["neighbour_id"]).any()
    for kind, dim in (("wsi", 32), ("genomics", 32), ("fused", 64)):
        ids, vectors = read_patient_embeddings(store, version, kind)
        assert ids == data.patient_ids and vectors.shape == (len(ids), dim)
    loaded = MSRLModel.load_version(store, version)
    np.testing.assert_allclose(loaded.predict(evaluation).risk, model.predict(evaluation).risk,
                               rtol=1e-5, atol=1e-6)
    bag = evaluation.load_bag(0)
    np.testing.assert_allclose(loaded.embed_wsi([bag]), model.embed_wsi([bag]), rtol=1e-5)
    a, b = loaded.query_wsi_only(bag), model.query_wsi_only(bag)
    assert [p for p, _ in a.neighbours] == [p for p, _ in b.neighbours]
    assert [w for _, w in a.neighbours] == pytest.approx([w for _, w in b.neighbours], rel=1e-5)
    # after saving, every stored patient is a valid candidate
    answer = loaded.query_wsi_only(bag, candidate_ids=eval_ids[1:6], k=3)
    assert {p for p, _ in answer.neighbours} <= set(eval_ids[1:6])
    store.close()


def test_train_version_keeps_the_fold_out_of_the_buffer(tmp_path: Path) -> None:
    from casegraph.models.msrl.api import train_version

    store = _sim_store(tmp_path)
    version = train_version(store, "sim", "msrl_h", fold=1, **FAST)
    _, eval_ids = store.splits("mcat")[1]
    assert store.model_buffer(version) and not set(store.model_buffer(version)) & set(eval_ids)
    assert store.model_versions("msrl_h")["version_id"].tolist() == [version]
    with pytest.raises(InputError, match="no fold 9"):
        train_version(store, "sim", fold=9, **FAST)
    store.close()


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_presets_fit_with_their_setting(cohort: CohortData, name: str) -> None:
    train, test = cohort.subset(range(30)), cohort.subset(range(30, 36))
    options = {k: v for k, v in FAST.items() if k not in ABLATIONS[name]}
    model = build_model(name, **options).fit(train, test)
    assert isinstance(model, MSRLModel)
    for key, value in ABLATIONS[name].items():
        assert getattr(model.config, key) == value
    assert np.isfinite(model.predict(test).risk).all()


def test_ablation_preset_refuses_a_conflicting_option() -> None:
    with pytest.raises(InputError, match="fixes pretrain_steps=0"):
        build_model("msrl_random_gsl", pretrain_steps=5)
    assert build_model("msrl_random_gsl", pretrain_steps=0).config.pretrain_steps == 0


def test_cpu_device_trains_and_answers_on_cpu(cohort: CohortData) -> None:
    train, test = cohort.subset(range(40)), cohort.subset(range(40, 50))
    model = build_model("msrl", **{**FAST, "epochs": 1, "device": "cpu"}).fit(train, test)
    assert isinstance(model, MSRLModel) and model.device_ == "cpu"
    assert np.isfinite(model.predict(test).risk).all()
    with pytest.raises(InputError, match="device"):
        build_model("msrl", device="tpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("options", [{}, {"wsi_encoder": "abmil"}], ids=["mean_mlp", "abmil"])
def test_msrl_trains_on_cuda_and_answers_on_cpu(cohort: CohortData,
                                                options: dict[str, str]) -> None:
    """Both stages run on the GPU (the sparse Stage-2 path too); the fitted model, its
    buffer and reference features come back to the CPU, so predictions and queries run
    there and a saved version loads on a machine without a GPU."""
    train, test = cohort.subset(range(60)), cohort.subset(range(60, 80))
    model = build_model("msrl", **{**FAST, **options, "epochs": 2, "device": "cuda"})
    model.fit(train, test)
    assert isinstance(model, MSRLModel) and model.device_ == "cuda"
    assert model.finetune_history_ and np.isfinite(model.finetune_history_).all()
    assert all(p.device.type == "cpu" for p in model.net_.parameters())
    assert model.buffer_.features.device.type == "cpu"
    pred = model.predict(test)
    assert np.isfinite(pred.risk).all()
    bag = test.load_bag(0)
    assert np.isfinite(model.query_wsi_only(bag).risk)



@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_msrl_sparse_stage2_on_cuda(cohort: CohortData, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sparse Stage-2 graph (chunked top-K, COO adjacency, checkpointed BCE) on CUDA."""
    from casegraph.models.msrl import finetune

    monkeypatch.setattr(finetune, "SPARSE_FROM", 0)  # every graph sparse, however small
    train, test = cohort.subset(range(40)), cohort.subset(range(40, 50))
    model = build_model("msrl", **{**FAST, "epochs": 1, "device": "cuda"}).fit(train, test)
    assert isinstance(model, MSRLModel) and np.isfinite(model.finetune_history_).all()
    assert np.isfinite(model.predict(test).risk).all()
