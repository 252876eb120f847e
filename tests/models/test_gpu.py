"""Devices: every family takes a ``device``; CUDA training where a GPU is present (``gpu``
tests skip without one, as in CI), and the device code paths that run on the CPU too:
an explicit ``cpu``, a GPU asked for where there is none, a model saved from a GPU
configuration loading on the CPU. (MSRL's CUDA test is in test_msrl_model.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sksurv.metrics import concordance_index_censored

from casegraph.errors import InputError
from casegraph.models.data import CohortData
from casegraph.models.registry import MODELS, build_model, model_names
from casegraph.runtime import loading_device, pick_device
from tests.models.synthetic import planted_cohort

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")

FUSION_TINY = {"dim": 16, "heads": 2, "dropout": 0.0}
# a few steps of every non-MSRL family (bags: whether the family reads slides)
FAMILIES: dict[str, tuple[dict[str, Any], bool]] = {
    "snn": ({"epochs": 2}, False),
    "abmil": ({"epochs": 2, "hidden": 16}, True),
    "late_fusion": ({"epochs": 2, "hidden": 16}, True),
    "murrenet": ({**FUSION_TINY, "epochs": 1}, True),
    "ccl": ({**FUSION_TINY, "epochs": 1, "k": 3}, True),
    "coxnet": ({"n_alphas": 5}, False),
    "neighbour_km": ({"k": 5}, True),
    "retrieval_impute": ({"k": 5, "genomics_options": {"n_alphas": 5}}, True),
}


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """Tiny networks: one CPU thread each (the test machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cohort(tmp_path: Path, bags: bool, n: int = 40) -> CohortData:
    return planted_cohort(n, seed=1, bag_dir=tmp_path / "bags" if bags else None)


def _device_of(model: Any) -> str:
    config = getattr(model, "config", None)  # MSRL keeps its options in a config
    return str(getattr(config, "device", None) or model.device)


# ---------------------------------------------------------------------- CPU paths
@pytest.mark.parametrize("name", model_names())
def test_every_family_takes_a_device(name: str) -> None:
    assert _device_of(build_model(name, device="cpu")) == "cpu"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_explicit_cpu_trains_and_is_recorded(tmp_path: Path, name: str) -> None:
    options, bags = FAMILIES[name]
    data = _cohort(tmp_path, bags)
    model = build_model(name, **options, device="cpu").fit(data)
    assert np.isfinite(model.predict(data).risk).all()
    assert model.get_options()["device"] == "cpu"  # type: ignore[attr-defined]


def test_device_names_are_checked() -> None:
    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "cuda:x", "gpu"):
        with pytest.raises(InputError, match="unknown device"):
            pick_device(bad)


@no_cuda
@pytest.mark.parametrize("name", ["snn", "murrenet"])
def test_a_gpu_that_is_not_there_is_one_clear_error(tmp_path: Path, name: str) -> None:
    options, bags = FAMILIES[name]
    with pytest.raises(InputError, match="no CUDA device"):
        build_model(name, **options, device="cuda").fit(_cohort(tmp_path, bags))
    assert loading_device("cuda") == "cpu" and loading_device("cuda:1") == "cpu"


@no_cuda
@pytest.mark.parametrize("name", ["snn", "abmil", "murrenet", "ccl"])
def test_a_model_saved_from_a_gpu_configuration_loads_on_the_cpu(tmp_path: Path,
                                                                  name: str) -> None:
    """The saved options say ``cuda`` (as a GPU run's do); here the model loads with its
    tensors mapped to the CPU and predicts what the original did."""
    options, bags = FAMILIES[name]
    data = _cohort(tmp_path, bags)
    model: Any = build_model(name, **options, device="cpu").fit(data)
    risk = model.predict(data).risk
    model.device = "cuda"  # what a GPU fit records
    model.save_files(tmp_path)
    loaded: Any = MODELS.get(name).load_files(tmp_path)  # type: ignore[attr-defined]
    assert getattr(loaded, "device_", loaded.device) == "cpu"
    assert all(p.device.type == "cpu" for p in _network(loaded).parameters())
    np.testing.assert_allclose(loaded.predict(data).risk, risk, rtol=1e-6)


def _network(model: Any) -> torch.nn.Module:
    return model.network_ if hasattr(model, "network_") else model.net_  # type: ignore[no-any-return]


# ---------------------------------------------------------------------- CUDA
@pytest.mark.gpu
@needs_cuda
def test_snn_learns_on_cuda() -> None:
    data = planted_cohort(160, seed=1)
    train, test = data.subset(range(120)), data.subset(range(120, 160))
    model = build_model("snn", epochs=30, device="cuda", seed=0).fit(train)
    assert model.device_ == "cuda"  # type: ignore[attr-defined]
    pred = model.predict(test)
    c = concordance_index_censored(test.target.event, test.target.time, pred.risk)[0]
    assert c > 0.65


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_trains_a_few_steps_on_cuda(tmp_path: Path, name: str) -> None:
    """Torch families train on the GPU; the NumPy ones accept the device and run on the
    CPU. Every saved model loads and answers on the CPU."""
    options, bags = FAMILIES[name]
    data = _cohort(tmp_path, bags)
    model: Any = build_model(name, **options, device="cuda").fit(data)
    pred = model.predict(data)
    assert np.isfinite(pred.risk).all()
    if hasattr(model, "network_") or hasattr(model, "net_"):
        assert all(p.device.type == "cuda" for p in _network(model).parameters())
    model.save_files(tmp_path)
    loaded: Any = MODELS.get(name).load_files(tmp_path)  # type: ignore[attr-defined]
    np.testing.assert_allclose(loaded.predict(data).risk, pred.risk, rtol=1e-4, atol=1e-5)
