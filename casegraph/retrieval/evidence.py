"""Patch-level evidence of an answer: which patches drive it, drawn on the patch grid, and
which gene groups of the authentic neighbours it leans on (docs/evidence.md).

- Scores: an MSRL answer (``msrl-gsl``) is explained by its version's WSI encoder
  (:mod:`casegraph.models.msrl.attribution`: each patch's contribution to the slide's
  learned-graph similarity with the reported neighbours); a model-free answer
  (``embedding-knn``) by the same quantity for its metric, the cosine of the centred bag
  mean with the neighbours' slide means, whose gradient is closed-form; a version of
  another family with patch structure (ABMIL attention, MurreNet, CCL) by
  :func:`casegraph.models.attribution.explain`.
- Coordinates come with an uploaded bag (``Bag.coords``); a stored slide's from the
  store as registered at ingest (``Store.slide_coords`` / ``slide_provenance``), else from
  its bag file. The patch size is the bag's ``patch_size_level0`` (TRIDENT) or level-0
  ``patch_size`` (CLAM) attribute, else the smallest spacing of the coordinates.
- JSON stays bounded whatever the bag: the top :data:`TOP_N` patches and, per slide, a grid
  of at most :data:`JSON_CELLS` x :data:`JSON_CELLS` cells, each holding the score of
  largest magnitude among its patches (so one hot patch is never averaged away).
- PNG: :func:`write_heatmap` draws the same grid at up to :data:`PNG_CELLS` cells a side,
  with a colour bar, over the slide's openslide thumbnail when the slide image is given.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from casegraph.config import BagLimits
from casegraph.errors import InputError
from casegraph.ingest.bags import Bag, slide_key
from casegraph.models.attribution import KINDS, PatchScores, explain, has_patch_structure
from casegraph.retrieval.catalog import genomic_group_summaries
from casegraph.retrieval.index import SLIDE_MEAN, IndexKey
from casegraph.retrieval.options import QueryOptions
from casegraph.retrieval.results import Neighbour, QueryResult

if TYPE_CHECKING:
    from casegraph.retrieval.query import QueryEngine

TOP_N = 50
JSON_CELLS = 64
PNG_CELLS = 512
THUMBNAIL_PX = 1024
FloatArray = npt.NDArray[np.float64]


class TopPatch(BaseModel):
    slide: str
    index: int = Field(description="the patch's row in its slide's bag")
    x: int | None = Field(None, description="level-0 x of the patch's top-left corner")
    y: int | None = None
    score: float


class PatchGrid(BaseModel):
    """One slide's scores on its patch grid: cell (r, c) covers level-0 pixels
    [origin_x + c*cell, +cell) x [origin_y + r*cell, +cell); None = no patch there."""

    slide: str
    n_patches: int
    patch_size: int = Field(description="level-0 pixels per patch side")
    cell: int = Field(description="level-0 pixels per grid cell side (patch_size x downsample)")
    origin_x: int
    origin_y: int
    rows: int
    cols: int
    values: list[list[float | None]]


class GroupLean(BaseModel):
    """How the authentic neighbours' values of one gene group sit against the cohort."""

    group: str
    modality: str = Field(description="rna (mean z-score) or cnv (mean copy number)")
    n_neighbours: int = Field(description="authentic neighbours with a value")
    neighbours_mean: float = Field(description="their weighted mean")
    cohort_mean: float
    cohort_sd: float
    shift: float = Field(description="(neighbours_mean - cohort_mean) / cohort_sd")
    spread: float | None = Field(None, description="the neighbours' weighted SD / cohort_sd "
                                                   "(< 1: they agree more than the cohort)")


class Evidence(BaseModel):
    attribution: str = Field(description="what the scores are: " + "; ".join(
        f"{k}: {d}" for k, (_, d) in KINDS.items()))
    description: str
    signed: bool = Field(description="negative scores count against the answer")
    model_version: str | None = None
    n_patches: int
    score_min: float
    score_max: float
    top: list[TopPatch]
    slides: list[PatchGrid] = Field(description="one grid per slide with coordinates")
    gene_groups: list[GroupLean] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class QueryWithEvidence(QueryResult):
    """A query's answer with its patch-level and gene-group evidence (None: none could be
    computed, e.g. a stored patient without readable bags)."""

    evidence: Evidence | None = None


@dataclass
class SlideBag:
    """One slide's patches: name, features (N, D), coords (N, 2) or None, patch size."""

    name: str
    features: npt.NDArray[np.float32]
    coords: npt.NDArray[np.int64] | None
    patch_size: int | None

    @classmethod
    def from_bag(cls, bag: Bag, name: str | None = None) -> SlideBag:
        return cls(name or slide_key(bag.path.name), bag.features, bag.coords,
                   _declared_patch_size(bag.path))


# ---------------------------------------------------------------------------------- inputs
def bags_from_files(paths: Sequence[Path], limits: BagLimits,
                    names: dict[str, str] | None = None) -> list[SlideBag]:
    """The slides of an upload (``names``: path -> the name to show)."""
    from casegraph.retrieval.query import read_bags

    names = names or {}
    return [SlideBag.from_bag(b, slide_key(names.get(str(b.path), b.path.name)))
            for b in read_bags(list(paths), limits)]


def bags_of_patient(engine: QueryEngine, patient_id: str) -> list[SlideBag]:
    """A stored patient's slides with feature files, read from their bag files."""
    from casegraph.retrieval.query import read_bags

    with engine.lock:
        slides = engine.store.slides()
    mine = slides[(slides["patient_id"] == patient_id) & slides["feature_path"].notna()]
    if mine.empty:
        raise InputError(f"patient {patient_id!r} has no stored patch features",
                         column="patient_id", fix="ingest its bags (casegraph ingest --bags)")
    paths = [Path(p) for p in mine["feature_path"]]
    bags = read_bags(paths, engine.limits)  # the features: the store keeps bags by reference
    out = []
    for bag, slide in zip(bags, mine["slide_id"].astype(str), strict=True):
        with engine.lock:  # coords and attributes as registered at ingest
            coords = engine.store.slide_coords(slide)
            attributes = engine.store.slide_provenance(slide)
        out.append(SlideBag(slide, bag.features,
                            bag.coords if coords is None else coords.astype(np.int64),
                            _patch_size_of(attributes) or _declared_patch_size(bag.path)))
    return out


def _declared_patch_size(path: Path) -> int | None:
    """TRIDENT's ``patch_size_level0``, or CLAM's ``patch_size`` at ``patch_level`` 0, from
    an .h5 bag's attributes (None when absent or not at level 0)."""
    if path.suffix != ".h5":
        return None
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            attrs: dict[str, Any] = {}
            for name in ("features", "coords"):
                if name in handle:
                    attrs.update(handle[name].attrs)
            attrs.update(handle.attrs)
    except (OSError, KeyError):
        return None
    return _patch_size_of(attrs)


def _patch_size_of(attrs: dict[str, Any]) -> int | None:
    """The level-0 patch size named by bag attributes (see :func:`_declared_patch_size`)."""
    if "patch_size_level0" in attrs:
        return _positive_int(attrs["patch_size_level0"])
    if "patch_size" in attrs and int(np.asarray(attrs.get("patch_level", 0))) == 0:
        return _positive_int(attrs["patch_size"])
    return None


def _positive_int(value: Any) -> int | None:
    try:
        number = int(np.asarray(value).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None
    return number if number > 0 else None


def patch_size(slide: SlideBag) -> int:
    """The declared patch size, else the smallest positive spacing of the coordinates
    along x or y, else 1."""
    if slide.patch_size:
        return slide.patch_size
    if slide.coords is None:
        return 1
    steps = [np.diff(np.unique(slide.coords[:, axis])) for axis in (0, 1)]
    positive = [int(s[s > 0].min()) for s in steps if (s > 0).any()]
    return min(positive) if positive else 1


# ---------------------------------------------------------------------------------- scores
def knn_scores(features: npt.NDArray[np.float32], center: npt.NDArray[np.float32] | None,
               neighbour_vectors: npt.NDArray[np.float32], weights: Sequence[float]
               ) -> FloatArray:
    """The model-free answer's attribution: S = sum_j w_j v_j . u/|u|, u = mean(x) - centre,
    v_j the neighbours' normalised slide vectors; score_i = dS/dmean . (x_i - mean) / N
    (closed form: dS/dmean = (a - q (q . a)) / |u|, a = sum_j w_j v_j, q = u/|u|)."""
    x = np.asarray(features, dtype=np.float32)  # no float64 copy of a 50,000-patch bag
    mean = x.mean(axis=0, dtype=np.float64)
    u = mean - (0.0 if center is None else np.asarray(center, dtype=np.float64))
    norm = float(np.linalg.norm(u))
    if norm == 0 or not len(neighbour_vectors):
        return np.zeros(len(x))
    q = u / norm
    a = np.asarray(weights, dtype=np.float64) @ np.asarray(neighbour_vectors, np.float64)
    grad = (a - q * float(q @ a)) / norm
    return ((x @ grad.astype(np.float32)).astype(np.float64) - float(mean @ grad)) / len(x)


def answer_scores(engine: QueryEngine, result: QueryResult,
                  features: npt.NDArray[np.float32]) -> PatchScores:
    """Per-patch scores of the bag behind ``result`` (see the module doc)."""
    pairs = [(n.patient_id, n.weight) for n in result.neighbours]
    if result.method == "msrl-gsl" and result.model_version is not None:
        model = engine.model(result.model_version)
        known = set(getattr(model, "reference_ids_", []))
        return explain(model, features, neighbours=[(p, w) for p, w in pairs if p in known])
    if result.method == "wsi-model" and result.model_version is not None:
        model, _ = _version_model(engine, result.model_version)
        if has_patch_structure(model):  # e.g. ABMIL: its own attention
            return explain(model, features)
    loaded = engine.index(IndexKey(SLIDE_MEAN, "wsi"))
    present = [(p, w) for p, w in pairs if p in loaded.index]
    vectors = loaded.index.vectors([p for p, _ in present]) if present \
        else np.zeros((0, features.shape[1]), dtype=np.float32)
    scores = knn_scores(features, loaded.center, vectors, [w for _, w in present])
    return PatchScores(scores, "neighbour-similarity", True,
                       "each patch's first-order contribution to the cosine similarity of "
                       "the slide's mean patch feature with the neighbours' (model-free)")


# ---------------------------------------------------------------------------------- grids
@dataclass
class Grid:
    """Scores on a slide's grid: values (rows, cols), NaN where no patch."""

    origin_x: int
    origin_y: int
    cell: int
    values: FloatArray


def score_grid(coords: npt.NDArray[np.int64], scores: FloatArray, size: int,
               max_cells: int) -> Grid:
    """The patches' scores on a grid of patch-size cells, coarsened by a whole factor until
    neither side exceeds ``max_cells``; a cell keeps its patches' score of largest
    magnitude. O(N log N) time, O(N + max_cells^2) memory."""
    origin = coords.min(axis=0)
    extent = (coords.max(axis=0) - origin) // size + 1  # (cols, rows) in patches
    factor = max(1, math.ceil(int(extent.max()) / max_cells))
    cell = size * factor
    col, row = ((coords - origin) // cell).T
    cols, rows = int(col.max()) + 1, int(row.max()) + 1
    flat = row * cols + col
    order = np.lexsort((np.abs(scores), flat))
    flat_sorted = flat[order]
    last = np.r_[flat_sorted[1:] != flat_sorted[:-1], True]
    values = np.full(rows * cols, np.nan)
    values[flat_sorted[last]] = scores[order][last]
    return Grid(int(origin[0]), int(origin[1]), cell, values.reshape(rows, cols))


def _grid_json(slide: SlideBag, scores: FloatArray) -> PatchGrid | None:
    if slide.coords is None:
        return None
    size = patch_size(slide)
    grid = score_grid(slide.coords, scores, size, JSON_CELLS)
    values = [[None if math.isnan(v) else float(v) for v in row] for row in grid.values]
    return PatchGrid(slide=slide.name, n_patches=len(scores), patch_size=size, cell=grid.cell,
                     origin_x=grid.origin_x, origin_y=grid.origin_y,
                     rows=grid.values.shape[0], cols=grid.values.shape[1], values=values)


def _top(slides: Sequence[SlideBag], scores: FloatArray) -> list[TopPatch]:
    n = min(TOP_N, len(scores))
    best = np.argpartition(-scores, n - 1)[:n]
    best = best[np.argsort(-scores[best], kind="stable")]
    starts = np.cumsum([0] + [len(s.features) for s in slides])
    out = []
    for i in best:
        s = int(np.searchsorted(starts, i, side="right") - 1)
        j = int(i - starts[s])
        coords = slides[s].coords
        x, y = (None, None) if coords is None else (int(coords[j, 0]), int(coords[j, 1]))
        out.append(TopPatch(slide=slides[s].name, index=j, score=float(scores[i]), x=x, y=y))
    return out


def evidence_of(slides: Sequence[SlideBag], scored: PatchScores,
                version: str | None = None,
                gene_groups: list[GroupLean] | None = None) -> Evidence:
    """The bounded JSON of ``scored`` (one score per patch of ``slides``, in order)."""
    scores = scored.scores
    starts = np.cumsum([0] + [len(s.features) for s in slides])
    grids = [_grid_json(s, scores[starts[i]:starts[i + 1]]) for i, s in enumerate(slides)]
    notes = [f"slide {s.name} has no patch coordinates: no grid"
             for s, g in zip(slides, grids, strict=True) if g is None]
    return Evidence(attribution=scored.kind, description=scored.description,
                    signed=scored.signed, model_version=version, n_patches=len(scores),
                    score_min=float(scores.min()), score_max=float(scores.max()),
                    top=_top(slides, scores), slides=[g for g in grids if g is not None],
                    gene_groups=gene_groups or [], notes=notes)


# ---------------------------------------------------------------------------------- groups
_COHORT_STATS: weakref.WeakKeyDictionary[Any, dict[Any, dict[tuple[str, str], tuple[
    float, float]]]] = weakref.WeakKeyDictionary()
MODALITIES = (("rna", "rna_mean"), ("cnv", "cnv_mean"))


def _cohort_stats(engine: QueryEngine, cohorts: tuple[str, ...], group_set: str | None
                  ) -> dict[tuple[str, str], tuple[float, float]]:
    """(group, modality) -> (mean, sd) over the authentic patients of ``cohorts``, once per
    engine (a served snapshot's engine lives as long as the snapshot)."""
    cache = _COHORT_STATS.setdefault(engine, {})
    key = (cohorts, group_set)
    if key not in cache:
        table = engine.catalog.table
        ids = [str(p) for p in table.index[(table["genomics"] == "authentic")
                                           & table["cohort"].isin(cohorts)]]
        with engine.lock:
            summaries = genomic_group_summaries(engine.store, ids, group_set)
        values: dict[tuple[str, str], list[float]] = {}
        for groups in summaries.values():
            for group, summary in groups.items():
                for modality, field in MODALITIES:
                    v = getattr(summary, field)
                    if v is not None:
                        values.setdefault((group, modality), []).append(float(v))
        cache[key] = {k: (float(np.mean(v)), float(np.std(v, ddof=1)))
                      for k, v in values.items() if len(v) > 1}
    return cache[key]


def gene_group_leans(engine: QueryEngine, neighbours: Sequence[Neighbour],
                     group_set: str | None = None) -> list[GroupLean]:
    """Per gene group and modality: the authentic neighbours' weighted mean against their
    cohorts' mean and SD, largest |shift| first (groups the answer leans on)."""
    authentic = [n for n in neighbours if n.genomic_groups]
    if not authentic:
        return []
    stats = _cohort_stats(engine, tuple(sorted({n.cohort for n in authentic})), group_set)
    out = []
    for (group, modality), (mean, sd) in stats.items():
        field = dict(MODALITIES)[modality]
        pairs = [(getattr(n.genomic_groups[group], field), n.weight) for n in authentic
                 if group in n.genomic_groups
                 and getattr(n.genomic_groups[group], field) is not None]
        if not pairs or sd <= 0:
            continue
        v = np.array([p[0] for p in pairs], dtype=np.float64)
        w = np.array([max(p[1], 0.0) for p in pairs], dtype=np.float64)
        w = w / w.sum() if w.sum() > 0 else np.full(len(v), 1.0 / len(v))
        centre = float(w @ v)
        spread = float(np.sqrt(w @ (v - centre) ** 2)) / sd if len(v) > 1 else None
        out.append(GroupLean(group=group, modality=modality, n_neighbours=len(v),
                             neighbours_mean=centre, cohort_mean=mean, cohort_sd=sd,
                             shift=(centre - mean) / sd, spread=spread))
    return sorted(out, key=lambda g: -abs(g.shift))


# ---------------------------------------------------------------------------------- entry
def query_evidence(engine: QueryEngine, result: QueryResult, slides: Sequence[SlideBag],
                   group_set: str | None = None) -> Evidence:
    """The evidence of a computed or stored answer over the query's ``slides``."""
    features = np.concatenate([s.features for s in slides]) if len(slides) > 1 \
        else slides[0].features
    scored = answer_scores(engine, result, features)
    return evidence_of(slides, scored, result.model_version,
                       gene_group_leans(engine, result.neighbours, group_set))


def with_evidence(engine: QueryEngine, result: QueryResult, paths: Sequence[Path] | None,
                  names: dict[str, str] | None = None) -> QueryWithEvidence:
    """``result`` with the evidence of its query bags (the uploads, else the stored
    patient's slides); evidence None when ``paths`` is None (not asked for), and None with
    a note saying why when it cannot be computed (the answer itself stands)."""
    if paths is None or (not paths and result.query_patient_id is None):
        return QueryWithEvidence(**result.model_dump())
    try:
        slides = bags_from_files(paths, engine.limits, names) if paths else \
            bags_of_patient(engine, str(result.query_patient_id))
        evidence = query_evidence(engine, result, slides)
    except InputError as exc:
        reason = str(exc)
        for path, name in (names or {}).items():
            reason = reason.replace(path, name)
        return QueryWithEvidence(**{**result.model_dump(), "notes": [
            *result.notes, f"no patch-level evidence: {reason}"]})
    return QueryWithEvidence(**result.model_dump(), evidence=evidence)


_VERSION_MODELS: weakref.WeakKeyDictionary[Any, dict[str, tuple[Any, Any]]] = \
    weakref.WeakKeyDictionary()


def _version_model(engine: QueryEngine, version_id: str) -> tuple[Any, Any]:
    """(fitted model, InputSpec) of a version, loaded once per engine."""
    from casegraph.models.versioning import load_version

    with engine.lock:
        models = _VERSION_MODELS.setdefault(engine, {})
        if version_id not in models:
            models[version_id] = load_version(engine.store, version_id)
        return models[version_id]  # type: ignore[no-any-return]


def version_evidence(engine: QueryEngine, version_id: str, patient_id: str) -> Evidence:
    """A stored patient's patch scores under a version of a family with patch structure
    (ABMIL/late fusion attention, MurreNet, CCL), on its stored slides and genomics."""
    from casegraph.models.versioning import cohort_for

    model, spec = _version_model(engine, version_id)
    with engine.lock:
        data = cohort_for(engine.store, [patient_id], spec)
    slides = bags_of_patient(engine, patient_id)
    features = np.concatenate([s.features for s in slides])
    genomics = [g[0] for g in data.genomics] if data.genomics else None
    return evidence_of(slides, explain(model, features, genomics), version_id)


def patient_evidence(engine: QueryEngine, patient_id: str, options: QueryOptions
                     ) -> Evidence:
    """The evidence of a stored patient: under ``options.model_version`` when that is a
    version of a family with patch structure, else of its similar-patients answer (MSRL
    or model-free, as ``GET /patients/{id}/similar`` answers with the same options)."""
    version = options.model_version
    if version is not None:
        with engine.lock:
            known = engine.store.versions.exists(version)
            model = engine.store.versions.get(version).model if known else ""
        if not known:
            raise InputError(f"unknown model version {version!r}", column="model_version")
        if not model.lower().startswith("msrl"):
            return version_evidence(engine, version, patient_id)
    answer = engine.similar(patient_id, options)
    return query_evidence(engine, answer, bags_of_patient(engine, patient_id),
                          options.group_set)


# ---------------------------------------------------------------------------------- PNG
def _colour_scale(values: FloatArray, signed: bool) -> tuple[Any, Any]:
    """(colormap, norm) of a heatmap: diverging around 0 for signed scores, else 0..max."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    finite = values[np.isfinite(values)]
    top = float(np.abs(finite).max()) if finite.size else 1.0
    top = top if top > 0 else 1.0
    if signed:
        return colormaps["RdBu_r"], Normalize(-top, top)
    return colormaps["inferno"], Normalize(0.0, top)


def heatmap_raster(grid: Grid, signed: bool, scale: tuple[Any, Any] | None = None
                   ) -> npt.NDArray[np.uint8]:
    """The RGBA image (rows, cols, 4) drawn for ``grid``: one pixel per cell, transparent
    where no patch; the colour scale's top colour is the hottest. ``scale``: (colormap,
    norm) shared by several grids (default: this grid's own)."""
    cmap, norm = scale or _colour_scale(grid.values, signed)
    rgba = cmap(norm(np.nan_to_num(grid.values)), bytes=True)
    rgba[np.isnan(grid.values)] = 0
    return np.asarray(rgba, dtype=np.uint8)


def _thumbnail(path: Path) -> tuple[Any, tuple[int, int]]:
    """(thumbnail image, level-0 (width, height)) of a slide image, via openslide."""
    try:
        import openslide
    except (ImportError, OSError) as exc:
        raise InputError(f"openslide cannot load here ({exc})", file=path,
                         fix="pip install openslide-python openslide-bin") from None
    if not path.is_file():
        raise InputError("slide image not found", file=path, column="--slide-image")
    try:
        with openslide.OpenSlide(str(path)) as slide:
            return slide.get_thumbnail((THUMBNAIL_PX, THUMBNAIL_PX)), slide.dimensions
    except (openslide.OpenSlideError, OSError) as exc:
        raise InputError(f"cannot read the slide image ({str(exc)[:80]})", file=path,
                         column="--slide-image",
                         fix="give the slide's whole-slide image (.svs, .tiff, .ndpi, ...)"
                         ) from None


def write_heatmap(slides: Sequence[SlideBag], scored: PatchScores, out: Path,
                  slide_image: Path | None = None, title: str = "") -> Path:
    """A PNG with one panel per slide with coordinates (the scores on its patch grid, a
    colour bar) over the slide's thumbnail when ``slide_image`` is given (first slide)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable

    drawable = [i for i, s in enumerate(slides) if s.coords is not None]
    if not drawable:
        raise InputError("the query's bags carry no patch coordinates: no heatmap to draw",
                         column="coords", fix="use CLAM/TRIDENT .h5 files with 'coords'")
    thumb = _thumbnail(slide_image) if slide_image is not None else None
    starts = np.cumsum([0] + [len(s.features) for s in slides])
    fig, axes = plt.subplots(1, len(drawable), figsize=(6 * len(drawable), 5.5), squeeze=False)
    cmap, norm = _colour_scale(scored.scores, scored.signed)
    for ax, i in zip(axes[0], drawable, strict=True):
        slide = slides[i]
        grid = score_grid(slide.coords, scored.scores[starts[i]:starts[i + 1]],  # type: ignore[arg-type]
                          patch_size(slide), PNG_CELLS)
        rows, cols = grid.values.shape
        extent = (grid.origin_x, grid.origin_x + cols * grid.cell,
                  grid.origin_y + rows * grid.cell, grid.origin_y)
        if thumb is not None and i == drawable[0]:
            image, (width, height) = thumb
            ax.imshow(image, extent=(0, width, height, 0))
        ax.imshow(heatmap_raster(grid, scored.signed, (cmap, norm)), extent=extent, interpolation="nearest",
                  alpha=0.6 if thumb is not None and i == drawable[0] else 1.0)
        ax.set_title(f"{slide.name} ({len(slide.features):,} patches)", fontsize=9)
        ax.set_xlabel("level-0 x (px)")
        ax.set_ylabel("level-0 y (px)")
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.046,
                     label=scored.kind)
    fig.suptitle(title or scored.description, fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def query_heatmap(engine: QueryEngine, result: QueryResult, paths: Sequence[Path], out: Path,
                  slide_image: Path | None = None) -> Path:
    """``casegraph query --heatmap``: the answer's patch scores drawn to ``out``."""
    slides = bags_from_files(paths, engine.limits) if paths else \
        bags_of_patient(engine, str(result.query_patient_id))
    features = np.concatenate([s.features for s in slides])
    scored = answer_scores(engine, result, features)
    return write_heatmap(slides, scored, out, slide_image,
                         title=f"{result.method}: {scored.description}")
