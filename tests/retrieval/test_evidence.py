"""Patch-level evidence: the grid keeps a planted patch hottest, the JSON stays bounded for
50,000 patches, the model-free attribution is the leave-one-out change it linearises, the
service and the CLI carry it (JSON, PNG, over an openslide thumbnail), gene-group leans
match their definition, and a bad slide image is one line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import h5py
import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from casegraph.errors import InputError
from casegraph.ingest.store import Store
from casegraph.models.attribution import PatchScores
from casegraph.retrieval.evidence import (
    JSON_CELLS,
    TOP_N,
    SlideBag,
    evidence_of,
    heatmap_raster,
    knn_scores,
    patch_size,
    score_grid,
    with_evidence,
    write_heatmap,
)
from casegraph.retrieval.query import QueryEngine, QueryOptions
from tests.retrieval.conftest import DIM, LiveServer, copy_store, prototypes

PS = 256
PLANTED_RC = (3, 7)


def _grid_coords(rows: int, cols: int, size: int = PS) -> np.ndarray:
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return np.stack([c.ravel() * size, r.ravel() * size], axis=1).astype(np.int64)


def _planted_scores(coords: np.ndarray, seed: int = 0) -> tuple[np.ndarray, int]:
    scores = np.random.default_rng(seed).uniform(0, 0.1, size=len(coords))
    planted = int(np.flatnonzero((coords[:, 0] == PLANTED_RC[1] * PS)
                                 & (coords[:, 1] == PLANTED_RC[0] * PS))[0])
    scores[planted] = 1.0
    return scores, planted


def test_the_planted_patch_is_the_hottest_pixel_of_the_raster() -> None:
    coords = _grid_coords(10, 12)
    scores, _ = _planted_scores(coords)
    grid = score_grid(coords, scores, PS, max_cells=64)
    assert grid.values.shape == (10, 12) and grid.cell == PS
    raster = heatmap_raster(grid, signed=False)
    r, c = PLANTED_RC
    from matplotlib import colormaps

    hottest = np.array(colormaps["inferno"](1.0, bytes=True), dtype=np.uint8)
    assert (raster[r, c] == hottest).all()
    luminance = raster[..., :3].astype(float) @ [0.299, 0.587, 0.114]
    assert np.unravel_index(np.argmax(luminance), luminance.shape) == PLANTED_RC
    # coarsened (4 x 4 patches a cell): the planted patch's cell keeps its score
    coarse = score_grid(coords, scores, PS, max_cells=3)
    assert coarse.cell == 4 * PS and coarse.values.shape == (3, 3)
    assert coarse.values[r // 4, c // 4] == 1.0 and np.nanmax(coarse.values) == 1.0


def test_signed_scores_keep_their_largest_magnitude_per_cell() -> None:
    coords = np.array([[0, 0], [PS, 0], [0, PS]], dtype=np.int64)
    grid = score_grid(coords, np.array([0.2, -0.9, 0.5]), PS, max_cells=1)
    assert grid.values.shape == (1, 1) and grid.values[0, 0] == -0.9


def test_patch_size_from_the_coordinates_when_undeclared() -> None:
    coords = _grid_coords(2, 3, size=512)
    bag = SlideBag("s", np.zeros((6, 2), np.float32), coords, None)
    assert patch_size(bag) == 512
    assert patch_size(SlideBag("s", bag.features, coords, 224)) == 224


def test_json_is_bounded_for_50000_patches() -> None:
    coords = _grid_coords(200, 250)
    scores, planted = _planted_scores(coords, seed=1)
    bag = SlideBag("big", np.zeros((len(coords), 1), np.float32), coords, PS)
    evidence = evidence_of([bag], PatchScores(scores, "attention", False, "test"))
    assert evidence.n_patches == 50_000 and len(evidence.top) == TOP_N
    assert evidence.top[0].index == planted and evidence.top[0].x == PLANTED_RC[1] * PS
    grid = evidence.slides[0]
    assert grid.rows <= JSON_CELLS and grid.cols <= JSON_CELLS
    assert max(v for row in grid.values for v in row if v is not None) == 1.0
    assert len(evidence.model_dump_json()) < 200_000


def test_knn_scores_linearise_the_leave_one_out_change() -> None:
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(40, DIM)).astype(np.float32)
    center = rng.normal(size=DIM).astype(np.float32) * 0.1
    neighbours = rng.normal(size=(3, DIM))
    neighbours /= np.linalg.norm(neighbours, axis=1, keepdims=True)
    weights = np.array([0.5, 0.3, 0.2])

    def similarity(x: np.ndarray) -> float:
        u = x.mean(axis=0) - center
        return float(weights @ (neighbours @ (u / np.linalg.norm(u))))

    scores = knn_scores(feats, center, neighbours.astype(np.float32), weights.tolist())
    loo = np.array([similarity(np.delete(feats, i, 0)) for i in range(40)]) - similarity(feats)
    assert abs(scores.sum()) < 1e-5 * np.abs(scores).sum()  # float32 products
    assert np.corrcoef(scores, -loo)[0, 1] > 0.99


def test_knn_scores_find_the_patch_that_looks_like_the_neighbours() -> None:
    """The slide points along e1 (every patch), the neighbours along e0; the one patch with
    an e0 component is what makes the slide resemble them."""
    rng = np.random.default_rng(4)
    feats = rng.normal(scale=0.1, size=(30, DIM)).astype(np.float32)
    feats[:, 1] += 1.0
    feats[PLANTED_RC[0], 0] += 3.0
    neighbours = np.zeros((2, DIM), dtype=np.float32)
    neighbours[:, 0] = 1.0
    scores = knn_scores(feats, None, neighbours, [0.5, 0.5])
    assert int(np.argmax(scores)) == PLANTED_RC[0]


def _query_bag(path: Path) -> Path:
    """12 x 12 patches on a 256-px grid (declared patch size), around prototype 1 (the
    short survivors' histology)."""
    rng = np.random.default_rng(5)
    coords = _grid_coords(12, 12)
    feats = (prototypes()[1] + rng.normal(size=(len(coords), DIM))).astype(np.float32)
    with h5py.File(path, "w") as handle:
        handle["features"] = feats
        handle["coords"] = coords
        handle["coords"].attrs["patch_size_level0"] = PS
    return path


def test_a_model_free_answer_is_explained_on_its_own_metric(tiny_store: Store,
                                                            tmp_path: Path) -> None:
    from casegraph.retrieval.index import SLIDE_MEAN, IndexKey

    bag = _query_bag(tmp_path / "new.h5")
    engine = QueryEngine(tiny_store)
    result = with_evidence(engine, engine.query([bag], None, QueryOptions(k=6)), [bag])
    evidence = result.evidence
    assert evidence is not None and result.method == "embedding-knn" and evidence.signed
    assert evidence.n_patches == 144 and len(evidence.top) == TOP_N
    # the top patch is the one whose removal lowers the answer's similarity the most
    with h5py.File(bag) as handle:
        feats = handle["features"][()].astype(np.float64)
    loaded = engine.index(IndexKey(SLIDE_MEAN, "wsi"))
    vectors = loaded.index.vectors([n.patient_id for n in result.neighbours])
    weights = np.array([n.weight for n in result.neighbours])

    def similarity(x: np.ndarray) -> float:
        u = x.mean(axis=0) - loaded.center
        return float(weights @ (vectors @ (u / np.linalg.norm(u))))

    drop = np.array([similarity(feats) - similarity(np.delete(feats, i, 0))
                     for i in range(144)])
    top = evidence.top[0]
    assert top.index in np.argsort(-drop)[:3]  # first order: the exact order may swap
    scores = np.zeros(144)
    scores[[t.index for t in evidence.top]] = [t.score for t in evidence.top]
    best = np.argsort(-drop)[:TOP_N]
    assert np.corrcoef(scores[best], drop[best])[0, 1] > 0.9
    grid = evidence.slides[0]
    assert grid.patch_size == PS and (grid.rows, grid.cols) == (12, 12)
    values = np.array([[np.nan if v is None else v for v in row] for row in grid.values])
    assert top.x is not None and top.y is not None
    assert np.unravel_index(np.nanargmax(values), values.shape) == (top.y // PS, top.x // PS)
    # the neighbours are authentic alpha patients: their gene groups against the cohort
    assert evidence.gene_groups, evidence
    lean = evidence.gene_groups[0]
    assert lean.shift == pytest.approx((lean.neighbours_mean - lean.cohort_mean)
                                       / lean.cohort_sd)
    assert abs(lean.shift) >= max(abs(g.shift) for g in evidence.gene_groups)


def test_write_heatmap_over_a_pyramidal_tiff(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    try:
        import openslide
    except (ImportError, OSError) as exc:
        pytest.skip(f"openslide cannot load here: {exc}")
    coords = _grid_coords(8, 8)
    scores, _ = _planted_scores(coords)
    bag = SlideBag("slide", np.zeros((len(coords), 2), np.float32), coords, PS)
    image = np.full((8 * PS, 8 * PS, 3), 230, dtype=np.uint8)
    tiff = tmp_path / "slide.tiff"
    with tifffile.TiffWriter(tiff) as writer:
        writer.write(image, tile=(256, 256), photometric="rgb", compression="zlib")
        writer.write(image[::4, ::4], tile=(256, 256), photometric="rgb", subfiletype=1,
                     compression="zlib")
    assert openslide.OpenSlide(str(tiff)).level_count == 2
    scored = PatchScores(scores, "attention", False, "test")
    plain = write_heatmap([bag], scored, tmp_path / "plain.png")
    over = write_heatmap([bag], scored, tmp_path / "over.png", slide_image=tiff)
    from PIL import Image

    def colours(png: Path) -> set[tuple[int, ...]]:
        with Image.open(png) as picture:
            return {tuple(int(v) for v in rgb) for rgb in
                    np.asarray(picture.convert("RGB")).reshape(-1, 3)}

    assert len(colours(plain)) > 20
    # the heatmap blended over the thumbnail: colours the plain heatmap does not have
    assert len(colours(over) - colours(plain)) > 20
    bad = tmp_path / "not-a-slide.tiff"
    bad.write_bytes(b"this is no image")
    with pytest.raises(InputError) as info:
        write_heatmap([bag], scored, tmp_path / "bad.png", slide_image=bad)
    assert "not-a-slide.tiff" in str(info.value) and "\n" not in str(info.value)


def test_post_query_carries_the_evidence(live_server: LiveServer, tmp_path: Path) -> None:
    bag = _query_bag(tmp_path / "upload.h5")
    with bag.open("rb") as handle:
        r = httpx.post(f"{live_server.url}/query", headers=live_server.headers,
                       files={"files": ("upload.h5", handle)}, data={"k": "6"}, timeout=120)
    assert r.status_code == 200, r.text
    evidence = r.json()["evidence"]
    assert len(evidence["top"]) == TOP_N and evidence["slides"][0]["slide"] == "upload"
    assert evidence["slides"][0]["cell"] == PS and evidence["n_patches"] == 144
    with bag.open("rb") as handle:
        off = httpx.post(f"{live_server.url}/query", headers=live_server.headers,
                         files={"files": ("upload.h5", handle)},
                         data={"k": "6", "evidence": "false"}, timeout=120)
    assert off.status_code == 200 and off.json()["evidence"] is None


def test_get_patient_evidence(live_server: LiveServer) -> None:
    url = f"{live_server.url}/patients/A01/evidence"
    assert httpx.get(url).status_code == 401
    r = httpx.get(url, headers=live_server.headers, params={"k": 5}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n_patches"] == 24 and body["slides"][0]["slide"] == "A01-S1"
    assert body["gene_groups"] and len(body["top"]) == 24
    assert httpx.get(f"{live_server.url}/patients/zz/evidence",
                     headers=live_server.headers).status_code == 404
    unknown = httpx.get(url, headers=live_server.headers, params={"model_version": "nope"})
    assert unknown.status_code == 400 and "nope" in unknown.json()["detail"]


def test_query_heatmap_from_the_cli(tiny_store_dir: Path, tmp_path: Path) -> None:
    from casegraph.cli import app

    # a private copy: a query builds the slide-mean index, which other tests expect absent
    tiny_store_dir = copy_store(tiny_store_dir, tmp_path / "store")
    bag = _query_bag(tmp_path / "cli.h5")
    runner = CliRunner()
    out = tmp_path / "heat.png"
    done = runner.invoke(app, ["query", "--slide", str(bag), "--heatmap", str(out), "--json",
                               "--store", str(tiny_store_dir)])
    assert done.exit_code == 0, done.output
    assert out.stat().st_size > 1000 and json.loads(done.stdout)["method"] == "embedding-knn"
    stored = tmp_path / "stored.png"  # a stored patient: its registered coordinates
    patient = runner.invoke(app, ["query", "--patient", "A01", "--heatmap", str(stored),
                                  "--store", str(tiny_store_dir)])
    assert patient.exit_code == 0, patient.output
    assert "patch heatmap written" in patient.output and stored.stat().st_size > 1000
    bad = tmp_path / "bad.svs"
    bad.write_text("no slide")
    failed = runner.invoke(app, ["query", "--slide", str(bag), "--heatmap", str(out),
                                 "--slide-image", str(bad), "--store", str(tiny_store_dir)])
    # the CLI's main() prints an InputError as its one line (tests/cli cover main)
    assert isinstance(failed.exception, InputError)
    assert "bad.svs" in str(failed.exception) and "\n" not in str(failed.exception)
    alone = runner.invoke(app, ["query", "--slide", str(bag), "--slide-image", str(bad),
                                "--store", str(tiny_store_dir)])
    assert isinstance(alone.exception, InputError) and "--heatmap" in str(alone.exception)


@pytest.fixture(scope="module")
def versioned_store(tiny_store_dir: Path, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[tuple[Store, str, str]]:
    """A copy of the tiny store with an MSRL version and an ABMIL version of alpha."""
    import torch

    from casegraph.models.data import CohortData
    from casegraph.models.msrl import MSRLModel
    from casegraph.models.versioning import train_version
    from tests.retrieval.conftest import copy_store

    torch.set_num_threads(1)
    root = copy_store(tiny_store_dir, tmp_path_factory.mktemp("evidence-versions") / "store")
    store = Store.open(root)
    data = CohortData.from_store(store, "alpha", require_slides=True)
    msrl = MSRLModel("msrl", dim=16, proj_dim=8, batch_size=8, pretrain_steps=3, epochs=2, k=3)
    msrl_version = msrl.fit(data.subset(range(14)), data.subset(range(14, 20))) \
        .save_version(store, "alpha")
    abmil_version = train_version(store, "alpha", "abmil", fold=None, epochs=2, hidden=8)
    yield store, msrl_version, abmil_version
    store.close()


def test_an_msrl_answer_is_explained_by_its_wsi_encoder(versioned_store: tuple,
                                                        tmp_path: Path) -> None:
    from casegraph.models.msrl.attribution import neighbour_similarity_scores
    from casegraph.retrieval.evidence import patient_evidence

    store, version, _ = versioned_store
    engine = QueryEngine(store)
    bag = _query_bag(tmp_path / "q.h5")
    result = with_evidence(engine, engine.query([bag], None, QueryOptions(
        k=4, method="msrl", model_version=version)), [bag])
    assert result.method == "msrl-gsl" and result.evidence is not None
    evidence = result.evidence
    assert evidence.attribution == "neighbour-similarity" and evidence.model_version == version
    with h5py.File(bag) as handle:
        feats = handle["features"][()]
    direct = neighbour_similarity_scores(engine.model(version), feats,
                                         [n.patient_id for n in result.neighbours],
                                         [n.weight for n in result.neighbours])
    assert evidence.top[0].index == int(np.argmax(direct))
    assert evidence.top[0].score == pytest.approx(float(direct.max()))
    stored = patient_evidence(engine, "A16", QueryOptions(k=3, model_version=version))
    assert stored.attribution == "neighbour-similarity" and stored.n_patches == 24
    # the stored slide's coordinates are the ones registered at ingest
    coords = store.slide_coords("A16-S1")
    assert coords is not None
    top = stored.top[0]
    assert (top.x, top.y) == tuple(int(v) for v in coords[top.index])


def test_a_patch_scoring_version_gives_its_own_attention(versioned_store: tuple) -> None:
    from casegraph.retrieval.evidence import patient_evidence

    store, _, abmil = versioned_store
    evidence = patient_evidence(QueryEngine(store), "A02", QueryOptions(model_version=abmil))
    assert evidence.attribution == "attention" and not evidence.signed
    assert len(evidence.top) == 24 and sum(t.score for t in evidence.top) == pytest.approx(1.0)
    assert evidence.model_version == abmil and evidence.gene_groups == []


def test_a_wsi_model_answer_is_explained_by_its_versions_attention(versioned_store: tuple,
                                                                   tmp_path: Path) -> None:
    from casegraph.retrieval.evidence import answer_scores

    store, _, abmil = versioned_store
    engine = QueryEngine(store)
    bag = _query_bag(tmp_path / "q.h5")
    knn = engine.query([bag], None, QueryOptions(k=4, method="knn"))
    as_model = knn.model_copy(update={"method": "wsi-model", "model_version": abmil})
    with h5py.File(bag) as handle:
        feats = handle["features"][()]
    scored = answer_scores(engine, as_model, feats)
    assert scored.kind == "attention" and scored.scores.sum() == pytest.approx(1.0)
    assert answer_scores(engine, knn, feats).kind == "neighbour-similarity"


def test_evidence_that_cannot_be_computed_leaves_the_answer_with_a_note(
        tiny_store: Store, tmp_path: Path) -> None:
    engine = QueryEngine(tiny_store)
    answer = engine.query([_query_bag(tmp_path / "q.h5")], None, QueryOptions(k=3))
    orphan = answer.model_copy(update={"query_patient_id": "nobody"})
    result = with_evidence(engine, orphan, [])
    assert result.evidence is None and result.neighbours == answer.neighbours
    assert "no patch-level evidence" in result.notes[-1] and "nobody" in result.notes[-1]
    assert with_evidence(engine, answer, None).evidence is None  # not asked for
