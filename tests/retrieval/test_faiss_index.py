"""One contract for every VectorIndex implementation (exact and approximate)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from casegraph.errors import InputError
from casegraph.retrieval.faiss_index import (
    FaissIndex,
    FlatIndex,
    IVFIndex,
    VectorIndex,
    gpu_available,
    make_index,
    normalise,
)

DIM = 8
N = 400

IMPLEMENTATIONS: dict[str, Callable[[], FaissIndex]] = {
    "flat": lambda: FlatIndex(DIM, use_gpu=False),
    "ivf": lambda: IVFIndex(DIM, nlist=16, nprobe=4, seed=0, use_gpu=False),
    # the CUDA FAISS build (casegraph[gpu]): the same contract, searches on a GPU copy
    "flat-gpu": lambda: FlatIndex(DIM, use_gpu=True),
    "ivf-gpu": lambda: IVFIndex(DIM, nlist=16, nprobe=4, seed=0, use_gpu=True),
}
NEEDS_GPU = [pytest.mark.gpu, pytest.mark.skipif(
    not gpu_available(), reason="no GPU FAISS build or no GPU (pip install casegraph[gpu])")]


@pytest.fixture(params=[pytest.param(name, marks=NEEDS_GPU if name.endswith("-gpu") else ())
                        for name in sorted(IMPLEMENTATIONS)])
def empty_index(request: pytest.FixtureRequest) -> FaissIndex:
    return IMPLEMENTATIONS[request.param]()


def _data(n: int = N, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, DIM)) * 3
    x = centres[rng.integers(0, 8, size=n)] + rng.normal(size=(n, DIM))
    return [f"p{i:03d}" for i in range(n)], x.astype(np.float32)


@pytest.fixture
def filled(empty_index: FaissIndex) -> tuple[FaissIndex, list[str], np.ndarray]:
    ids, x = _data()
    empty_index.add(ids, x)
    return empty_index, ids, x


def _exact(x: np.ndarray, q: np.ndarray, k: int, keep: np.ndarray) -> list[int]:
    scores = normalise(x) @ normalise(q)[0]
    scores[~keep] = -np.inf
    return list(np.argsort(-scores, kind="stable")[:k])


def test_is_a_vector_index(empty_index: FaissIndex) -> None:
    assert isinstance(empty_index, VectorIndex)
    assert len(empty_index) == 0 and empty_index.ids() == []


def test_self_is_the_nearest_and_scores_are_cosines(filled: tuple) -> None:
    index, ids, x = filled
    hits = index.search(x[:3], 5)
    assert [h[0].patient_id for h in hits] == ids[:3]
    assert all(abs(h[0].score - 1.0) < 1e-5 for h in hits)
    assert all(h[i].score >= h[i + 1].score for h in hits for i in range(4))


def test_recall_against_brute_force(filled: tuple) -> None:
    index, ids, x = filled
    q = x[7:8] + 0.1
    got = {h.patient_id for h in index.search(q, 10)[0]}
    want = {ids[i] for i in _exact(x, q, 10, np.ones(N, bool))}
    assert len(got & want) >= 8  # approximate indexes may miss a few


def test_exclusions_always_return_k(filled: tuple) -> None:
    index, _ids, x = filled
    nearest = [h.patient_id for h in index.search(x[:1], 50)[0]]
    hits = index.search(x[:1], 10, exclude=nearest[:45])[0]
    assert len(hits) == 10
    assert not {h.patient_id for h in hits} & set(nearest[:45])


def test_inclusion_filter_returns_k_even_when_the_allowed_are_far(filled: tuple) -> None:
    index, _ids, x = filled
    far = [h.patient_id for h in index.search(-x[:1], 12)[0]]  # the least similar patients
    hits = index.search(x[:1], 10, allowed=far)[0]
    assert len(hits) == 10
    assert {h.patient_id for h in hits} <= set(far)


def test_fewer_eligible_than_k_returns_all_of_them(filled: tuple) -> None:
    index, ids, x = filled
    hits = index.search(x[:1], 10, allowed=ids[:5], exclude=[ids[0]])[0]
    assert sorted(h.patient_id for h in hits) == ids[1:5]
    assert index.search(x[:1], 3, allowed=["nobody"])[0] == []


def test_incremental_add_and_remove(filled: tuple) -> None:
    index, ids, x = filled
    index.add(["new"], x[3:4] * 2)
    assert len(index) == N + 1 and "new" in index
    assert {h.patient_id for h in index.search(x[3:4], 2)[0]} == {"new", ids[3]}
    assert index.remove([ids[3], "unknown"]) == 1
    assert ids[3] not in index and len(index) == N
    assert ids[3] not in {h.patient_id for h in index.search(x[3:4], 20)[0]}
    index.add([ids[3]], x[3:4])  # a removed id may come back
    assert index.search(x[3:4], 1)[0][0].score == pytest.approx(1.0, abs=1e-5)


def test_duplicate_and_bad_input_is_an_input_error(filled: tuple) -> None:
    index, ids, x = filled
    with pytest.raises(InputError, match="already in the index"):
        index.add([ids[0]], x[:1])
    with pytest.raises(InputError, match="already in the index"):
        index.add(["a", "a"], x[:2])
    with pytest.raises(InputError, match="dim"):
        index.add(["b"], np.zeros((1, DIM + 1), np.float32))
    with pytest.raises(InputError, match="dim"):
        index.search(np.zeros((1, DIM + 1)), 3)
    with pytest.raises(InputError, match="k must be"):
        index.search(x[:1], 0)


def test_save_load_round_trip_keeps_the_id_map(filled: tuple, tmp_path: Path) -> None:
    index, ids, x = filled
    index.remove(ids[:10])
    before = index.search(x[10:12], 5, exclude=[ids[11]])
    index.save(tmp_path / "idx", extra_meta={"note": "x"})
    again = FaissIndex.load(tmp_path / "idx")
    assert type(again) is type(index) and again.params == index.params
    assert again.ids() == index.ids()
    assert again.search(x[10:12], 5, exclude=[ids[11]]) == before
    again.add(["later"], x[:1])  # ids continue after a reload
    assert "later" in again and len(again) == len(index) + 1
    np.testing.assert_allclose(again.vectors([ids[20]]), normalise(x[20:21]), atol=1e-6)


def test_make_index_switches_to_ivf_at_the_threshold() -> None:
    assert isinstance(make_index(DIM, 99, exact_threshold=100), FlatIndex)
    ivf = make_index(DIM, 100, exact_threshold=100)
    assert isinstance(ivf, IVFIndex)
    assert ivf.params["nlist"] >= 16 and ivf.params["nprobe"] >= 1


def test_ivf_needs_enough_vectors_to_train() -> None:
    with pytest.raises(InputError, match="needs at least"):
        IVFIndex(DIM, nlist=64).add(["a"], np.ones((1, DIM), np.float32))


@pytest.mark.skipif(gpu_available(), reason="this machine has a GPU FAISS build")
def test_asking_for_a_gpu_index_without_gpu_faiss_is_a_clear_error() -> None:
    for make in (lambda: FlatIndex(DIM, use_gpu=True), lambda: IVFIndex(DIM, use_gpu=True)):
        with pytest.raises(InputError, match=r"use_gpu=True.*casegraph\[gpu\]"):
            make()
    assert FlatIndex(DIM).use_gpu is False and IVFIndex(DIM).use_gpu is False


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="no GPU FAISS build or no GPU")
def test_gpu_search_agrees_with_cpu_also_past_the_gpu_k_limit(tmp_path: Path) -> None:
    """Past FAISS's GPU k limit the CPU index answers; a saved GPU index loads and answers
    like the CPU one."""
    from casegraph.retrieval.faiss_index import GPU_MAX_K

    ids, x = _data(GPU_MAX_K + 300, seed=3)
    cpu, gpu = FlatIndex(DIM, use_gpu=False), FlatIndex(DIM, use_gpu=True)
    cpu.add(ids, x)
    gpu.add(ids, x)
    for k in (10, GPU_MAX_K + 100):
        want = [h.patient_id for h in cpu.search(x[:3], k)[0][:10]]
        assert [h.patient_id for h in gpu.search(x[:3], k)[0][:10]] == want
    gpu.save(tmp_path / "idx")
    loaded = FaissIndex.load(tmp_path / "idx")
    assert [h.patient_id for h in loaded.search(x[:1], 5)[0]] == [
        h.patient_id for h in cpu.search(x[:1], 5)[0]]
