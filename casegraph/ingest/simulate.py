"""A simulator of WSI patch-feature bags (whole synthetic cohorts: :mod:`casegraph.ingest.synthetic`).

There are no public patch features for the TCGA cohorts, so casegraph simulates them.
These are *not* real histology features. The generative model (docs/simulator.md):

- ``n_phenotypes`` tissue-phenotype prototypes ``mu_p ~ N(0, prototype_scale^2 I_D)``.
- A patient's phenotype logits mix a genomic part and an independent part::

      x_i = clip(standardise(g_i), -8, 8)       (genomic columns standardised over the cohort)
      a_i = standardise(x_i @ W)                (W: F x P map, ``genomic_map``: "random"
                                                 = fixed random, seeded; "pca" = the leading
                                                 principal axes of x)
      b_i ~ N(0, I_P)                           (independent of genomics)
      logits_i = mix_scale * (sqrt(signal) a_i + sqrt(1 - signal) b_i)
      pi_i = softmax(logits_i)

  so ``signal = 0`` gives mixes independent of genomics, ``signal = 1`` mixes fully
  determined by them. All slides of a patient share ``pi_i``.
- A slide: a shift ``s ~ N(0, slide_shift^2 I_D)``; each patch picks a phenotype
  ``z ~ Categorical(pi_i)`` and is ``mu_z + s + noise_scale * N(0, I_D)`` (float32), on a
  random grid of 256-px patch coordinates.

Synthetic cohorts (:func:`casegraph.ingest.synthetic.simulate_cohort`) add survival from a known genomic risk and,
with ``histology_risk`` W > 0, a histology-only share W of the risk: h = the standardised
phenotype-1 draw b_i[1], risk ~ standardise(sqrt(1-W) genomic + sqrt(W) h).

Randomness is keyed by (seed, what, id): the map and prototypes by the seed, a patient's
independent logits by its id, a slide's patches by the slide id, so a slide's bag does
not depend on the order of the input (only on the cohort through the standardisation).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from casegraph.errors import InputError
from casegraph.ingest.bags import slide_key
from casegraph.ingest.ids import shown, slide_id_problem
from casegraph.registry import Registry
from casegraph.runtime import progress

PATCH_PX = 256
CLIP_Z = 8.0
GENERATOR = "casegraph.ingest.simulate: simulated patch features, not real WSI features"
_TAG_MAP, _TAG_PROTOTYPES, _TAG_PATIENT, _TAG_SLIDE = 1, 2, 3, 4


@dataclass(frozen=True)
class BagSettings:
    """The simulator's knobs (see the module docstring for their meaning)."""

    n_patches: int = 4096
    dim: int = 1024
    signal: float = 0.5
    n_phenotypes: int = 8
    seed: int = 0
    mix_scale: float = 1.5
    prototype_scale: float = 0.5
    noise_scale: float = 1.0
    slide_shift: float = 0.1
    patch_spread: float = 0.0  # slide sizes uniform in n_patches * [1 - spread, 1 + spread]
    genomic_map: str = "random"  # the genomics -> phenotype map: a name in GENOMIC_MAPS

    def __post_init__(self) -> None:
        if not 0.0 <= self.signal <= 1.0:
            raise ValueError(f"signal must be in [0, 1], got {self.signal}")
        if self.n_patches < 1 or self.dim < 1 or self.n_phenotypes < 1:
            raise ValueError("n_patches, dim and n_phenotypes must be >= 1")
        if not 0.0 <= self.patch_spread < 1.0:
            raise ValueError(f"patch_spread must be in [0, 1), got {self.patch_spread}")
        GENOMIC_MAPS.get(self.genomic_map)  # unknown name: "choose among" error


@dataclass
class SimulatedBags:
    """What :func:`simulate_bags` wrote: slide_id -> file, and the latent truth."""

    paths: dict[str, Path]
    mix: npt.NDArray[np.float64]  # (n_patients, P) phenotype mixes, input order
    prototypes: npt.NDArray[np.float32]  # (P, D)
    settings: BagSettings = field(default_factory=BagSettings)


def keyed_rng(seed: int, tag: int, key: str | None = None) -> np.random.Generator:
    words = [seed % (2**63), tag]
    if key is not None:
        words.append(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))
    return np.random.default_rng(words)


def phenotype_map(n_features: int, n_phenotypes: int, seed: int) -> npt.NDArray[np.float64]:
    """The fixed random genomics -> phenotype-logit map W (F, P) for a seed."""
    return keyed_rng(seed, _TAG_MAP).standard_normal((n_features, n_phenotypes)) / np.sqrt(
        max(n_features, 1)
    )


def pca_phenotype_map(x: npt.NDArray[np.float64], n_phenotypes: int,
                      seed: int) -> npt.NDArray[np.float64]:
    """W (F, P) whose columns are the leading principal axes of ``x`` (n, F), each with its
    largest-|entry| component positive; columns beyond the rank of ``x`` come from the
    random map of the seed."""
    w = phenotype_map(x.shape[1], n_phenotypes, seed)
    if x.shape[0] < 2 or x.shape[1] == 0:
        return w
    _, singular, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    tol = singular[0] * max(x.shape) * np.finfo(np.float64).eps
    k = min(int((singular > tol).sum()), n_phenotypes)
    axes = vt[:k].T
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(k)])
    w[:, :k] = axes * signs
    return w


GENOMIC_MAPS: Registry[Callable[[npt.NDArray[np.float64], int, int], npt.NDArray[np.float64]]]
GENOMIC_MAPS = Registry("genomic map")
GENOMIC_MAPS.add("random", lambda x, n_phenotypes, seed: phenotype_map(x.shape[1], n_phenotypes,
                                                                        seed))
GENOMIC_MAPS.add("pca", pca_phenotype_map)


def genomic_features(genomics: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """x: genomic columns standardised over the cohort (NaN -> 0) and clipped to +-CLIP_Z,
    so raw outliers do not dominate the map."""
    return np.clip(standardise_columns(genomics), -CLIP_Z, CLIP_Z)


def cohort_phenotype_map(genomics: npt.ArrayLike, settings: BagSettings
                         ) -> npt.NDArray[np.float64]:
    """The settings' genomics -> phenotype-logit map W (F, P) for this cohort's genomics."""
    return _map_of_features(genomic_features(np.asarray(genomics, dtype=np.float64)), settings)


def _map_of_features(x: npt.NDArray[np.float64], settings: BagSettings
                     ) -> npt.NDArray[np.float64]:
    return GENOMIC_MAPS.get(settings.genomic_map)(x, settings.n_phenotypes, settings.seed)


def independent_logits(patient_ids: Sequence[str], settings: BagSettings
                       ) -> npt.NDArray[np.float64]:
    """b (n, P): each patient's genomics-independent logit draw, keyed by its id."""
    p = settings.n_phenotypes
    if not len(patient_ids):
        return np.zeros((0, p))
    return np.stack([keyed_rng(settings.seed, _TAG_PATIENT, pid).standard_normal(p)
                     for pid in patient_ids])


def prototypes(settings: BagSettings) -> npt.NDArray[np.float32]:
    """Phenotype prototypes (P, D) for the settings' seed."""
    rng = keyed_rng(settings.seed, _TAG_PROTOTYPES)
    protos = rng.standard_normal((settings.n_phenotypes, settings.dim), dtype=np.float32)
    return protos * np.float32(settings.prototype_scale)


def standardise_columns(x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Zero-mean unit-variance columns (constant columns become 0; NaN becomes 0)."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape[0] == 0:
        return arr
    with warnings.catch_warnings():  # all-NaN columns: mean NaN, handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, std = np.nanmean(arr, axis=0), np.nanstd(arr, axis=0)
    out = (arr - mean) / np.where(std > 0, std, 1.0)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def phenotype_mix(
    genomics: npt.ArrayLike,
    patient_ids: Sequence[str],
    settings: BagSettings,
    phenotype_map_: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.float64]:
    """Each patient's phenotype mix (n, P), rows summing to 1."""
    g = np.asarray(genomics, dtype=np.float64)
    n, p = len(patient_ids), settings.n_phenotypes
    if g.ndim != 2 or g.shape[0] != n:
        raise ValueError(f"genomics must be (n_patients={n}, F), got {g.shape}")
    x = genomic_features(g)
    w = _map_of_features(x, settings) if phenotype_map_ is None else phenotype_map_
    if w.shape != (g.shape[1], p):
        raise ValueError(f"phenotype map must be ({g.shape[1]}, {p}), got {w.shape}")
    genomic = standardise_columns(x @ w) if g.shape[1] else np.zeros((n, p))
    independent = independent_logits(patient_ids, settings)
    logits = settings.mix_scale * (np.sqrt(settings.signal) * genomic
                                   + np.sqrt(1.0 - settings.signal) * independent)
    logits -= logits.max(axis=1, keepdims=True) if n else 0.0
    mix = np.exp(logits)
    return mix / mix.sum(axis=1, keepdims=True)


def simulate_slide(
    slide_id: str,
    mix: npt.NDArray[np.float64],
    protos: npt.NDArray[np.float32],
    settings: BagSettings,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """One slide's (features (N, D) float32, coords (N, 2) int64)."""
    rng = keyed_rng(settings.seed, _TAG_SLIDE, slide_id)
    n = settings.n_patches
    if settings.patch_spread > 0:
        low = max(1, round(n * (1 - settings.patch_spread)))
        n = int(rng.integers(low, round(n * (1 + settings.patch_spread)) + 1))
    shift = rng.standard_normal(settings.dim, dtype=np.float32) * np.float32(settings.slide_shift)
    phenotype = rng.choice(len(mix), size=n, p=mix)
    features = rng.standard_normal((n, settings.dim), dtype=np.float32)
    features *= np.float32(settings.noise_scale)
    features += protos[phenotype]
    features += shift
    side = int(np.ceil(np.sqrt(n * 1.5)))
    cells = rng.choice(side * side, size=n, replace=False)
    coords = np.stack([cells % side, cells // side], axis=1).astype(np.int64) * PATCH_PX
    return features, coords


def write_clam_h5(path: Path, features: npt.NDArray[np.float32],
                  coords: npt.NDArray[np.int64], attrs: dict[str, object] | None = None) -> None:
    """A CLAM-format .h5 (``features`` N x D float32, ``coords`` N x 2), written atomically
    (contiguous, uncompressed datasets: the fastest layout to read)."""
    import h5py

    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as handle:
        handle.create_dataset("features", data=features)
        dataset = handle.create_dataset("coords", data=coords)
        dataset.attrs["patch_size"], dataset.attrs["patch_level"] = PATCH_PX, 0  # as CLAM
        for key, value in (attrs or {}).items():
            handle.attrs[key] = value
    os.replace(tmp, path)


def provenance_attrs(settings: BagSettings) -> dict[str, object]:
    """HDF5 attributes that mark a file as simulated (retrieval reports it as such);
    ``genomic_map`` only when it is not the default "random" (older files stay identical)."""
    attrs: dict[str, object] = {"generator": GENERATOR, "simulated": True,
                                "signal": settings.signal, "seed": settings.seed,
                                "n_phenotypes": settings.n_phenotypes}
    if settings.genomic_map != "random":
        attrs["genomic_map"] = settings.genomic_map
    return attrs


def simulate_bags(
    genomics: npt.ArrayLike,
    patient_ids: Sequence[str],
    slide_ids: Sequence[Sequence[str]],
    out_dir: str | Path,
    *,
    n_patches: int = 4096,
    dim: int = 1024,
    signal: float = 0.5,
    n_phenotypes: int = 8,
    seed: int = 0,
    settings: BagSettings | None = None,
    phenotype_map_: npt.NDArray[np.float64] | None = None,
) -> SimulatedBags:
    """Write ``<out_dir>/<slide_id>.h5`` for every slide of every patient.

    ``genomics`` (n, F): one row per patient (any scale; the projection is standardised),
    ``slide_ids[i]``: the slides of ``patient_ids[i]`` (``.svs`` suffixes are dropped from
    file names). ``settings`` overrides the keyword knobs when given.
    """
    if settings is None:
        settings = BagSettings(n_patches=n_patches, dim=dim, signal=signal,
                               n_phenotypes=n_phenotypes, seed=seed)
    if len(slide_ids) != len(patient_ids):
        raise ValueError(f"{len(patient_ids)} patients but {len(slide_ids)} slide lists")
    mix = phenotype_mix(genomics, patient_ids, settings, phenotype_map_)
    protos = prototypes(settings)
    out = Path(out_dir)
    jobs = [(i, _checked_key(s)) for i, slides in enumerate(slide_ids) for s in slides]
    with _writing(out):
        out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    attrs = provenance_attrs(settings)
    for i, key in progress(jobs, "simulating bags", total=len(jobs)):
        features, coords = simulate_slide(key, mix[i], protos, settings)
        path = out / f"{key}.h5"
        with _writing(path):
            write_clam_h5(path, features, coords, attrs)
        paths[key] = path
    return SimulatedBags(paths=paths, mix=mix, prototypes=protos, settings=settings)


def _checked_key(slide_id: str) -> str:
    """The bag-file key of a slide id; one that cannot name a file is an InputError."""
    problem = slide_id_problem(slide_id)
    if problem:
        raise InputError(f"slide id {shown(slide_id)} {problem[0]}", fix=problem[1])
    return slide_key(slide_id)


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An OS refusal (name too long, no space, no permission) becomes an error naming path."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise InputError(f"cannot write here ({reason})", file=path,
                         fix="choose a writable --out folder with free space and a shorter "
                         "path") from None
