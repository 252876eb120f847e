"""Fully synthetic cohorts: genomics, survival from a known risk function, splits and bags.

A simulator, not data (docs/simulator.md, "Synthetic cohorts"). Survival follows
:func:`true_risk`: a sparse linear function of the genomics, plus (``histology_risk`` > 0)
a histology-only latent that the bags express through phenotype 1. The bags come from
:mod:`casegraph.ingest.simulate` with the phenotype map's first column set to the risk
direction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from casegraph.ingest.simulate import (
    BagSettings,
    cohort_phenotype_map,
    independent_logits,
    keyed_rng,
    simulate_bags,
    standardise_columns,
)

MCAT_GROUPS = (
    "Tumor Suppressor Genes",
    "Oncogenes",
    "Protein Kinases",
    "Cell Differentiation Markers",
    "Transcription Factors",
    "Cytokines and Growth Factors",
)
# The known risk function: risk = risk_scale * standardise(sum_j beta_j * x_j) over these
# (modality, gene index, beta) drivers of the standardised genomics.
RISK_DRIVERS = (("rnaseq", 0, 1.0), ("rnaseq", 1, -0.8), ("rnaseq", 2, 0.6),
                ("rnaseq", 3, -0.5), ("cnv", 0, 0.7), ("cnv", 1, -0.4),
                ("mut", 0, 0.8), ("mut", 1, 0.5))


@dataclass
class SyntheticCohort:
    """Files written by :func:`simulate_cohort` and the ground truth behind them."""

    table_path: Path  # MCAT-format csv, one row per slide
    signatures_path: Path  # six groups, columns of genes
    splits_dir: Path  # splits_{k}.csv with train/val columns
    bags_dir: Path  # <slide_id>.h5
    risk: dict[str, float]  # case_id -> true log-hazard
    n_slides: int
    histology_latent: dict[str, float]  # case_id -> h (standardised phenotype-1 draw b_i[1])


def synthetic_genomics(
    n_patients: int, n_genes: int, rng: np.random.Generator
) -> dict[str, npt.NDArray[np.float64]]:
    """Correlated rnaseq z-scores (all genes), GISTIC-like cnv (-2..2; first third of the
    genes) and 0/1 mutations (first quarter), driven by one latent factor per gene group."""
    n_groups = len(MCAT_GROUPS)
    group = np.arange(n_genes) % n_groups
    latent = rng.standard_normal((n_patients, n_groups))
    loading = 0.15 * rng.standard_normal((n_groups, n_genes))
    loading[group, np.arange(n_genes)] += 0.8
    base = latent @ loading
    rna = base + 0.6 * rng.standard_normal(base.shape)
    n_cnv, n_mut = max(2, n_genes // 3), max(2, n_genes // 4)
    cnv_raw = base[:, :n_cnv] + 0.8 * rng.standard_normal((n_patients, n_cnv))
    cnv = np.digitize(cnv_raw, [-1.6, -0.6, 0.6, 1.6]).astype(np.float64) - 2.0
    p_mut = 1.0 / (1.0 + np.exp(-(-2.5 + base[:, :n_mut])))
    mut = (rng.random((n_patients, n_mut)) < p_mut).astype(np.float64)
    return {"rnaseq": np.round(rna, 4), "cnv": cnv, "mut": mut}


def true_risk(modalities: dict[str, npt.NDArray[np.float64]], risk_scale: float = 1.0, *,
              histology: npt.NDArray[np.float64] | None = None, histology_risk: float = 0.0,
              ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(risk (n,), beta over the concatenated standardised features) of RISK_DRIVERS.

    With ``histology_risk`` W > 0, ``histology`` h (n,) (standardised) takes the share W of
    the risk variance: risk = risk_scale * standardise(sqrt(1-W) genomic + sqrt(W) h)."""
    blocks = [standardise_columns(modalities[m]) for m in ("rnaseq", "cnv", "mut")]
    offsets = dict(zip(("rnaseq", "cnv", "mut"),
                       np.cumsum([0] + [b.shape[1] for b in blocks[:-1]]), strict=True))
    beta = np.zeros(sum(b.shape[1] for b in blocks))
    for modality, gene, weight in RISK_DRIVERS:
        beta[offsets[modality] + gene] = weight
    score = standardise_columns((np.hstack(blocks) @ beta)[:, None])[:, 0]
    if histology_risk > 0:
        if histology is None:
            raise ValueError("histology_risk > 0 needs the histology latent h")
        score = standardise_columns((np.sqrt(1.0 - histology_risk) * score
                                     + np.sqrt(histology_risk) * histology)[:, None])[:, 0]
    return risk_scale * score, beta


def check_histology_risk(histology_risk: float, settings: BagSettings) -> None:
    """Refuse a ``histology_risk`` that is out of [0, 1] or that the bags cannot show."""
    if not 0.0 <= histology_risk <= 1.0:
        raise ValueError(f"histology_risk must be in [0, 1], got {histology_risk}")
    if histology_risk > 0 and settings.n_phenotypes < 2:
        raise ValueError("histology_risk > 0 plants survival in phenotype 1: it needs "
                         f"n_phenotypes >= 2, got {settings.n_phenotypes}")
    if histology_risk > 0 and settings.signal >= 1.0:
        raise ValueError("histology_risk > 0 is invisible in the bags at signal = 1 "
                         "(phenotype 1's logit is then purely genomic); use signal < 1")


def survival_times(
    risk: npt.NDArray[np.float64], rng: np.random.Generator, *, median_months: float = 30.0,
    censoring: float = 0.5, max_follow_up: float = 180.0,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Exponential times with hazard ``h0 exp(risk)``; exponential censoring tuned so that
    about ``censoring`` of patients are censored. Returns (months, censorship 1=censored)."""
    h0 = np.log(2.0) / median_months
    event_time = -np.log(rng.random(risk.shape)) / (h0 * np.exp(risk))
    unit_censor = -np.log(rng.random(risk.shape))
    low, high = 1e-6, 1e3  # bisection on the censoring hazard (in units of h0)
    for _ in range(60):
        mid = np.sqrt(low * high)
        censored = np.minimum(unit_censor / (mid * h0), max_follow_up) < event_time
        low, high = (low, mid) if censored.mean() > censoring else (mid, high)
    censor_time = np.minimum(unit_censor / (np.sqrt(low * high) * h0), max_follow_up)
    months = np.round(np.maximum(np.minimum(event_time, censor_time), 0.01), 2)
    return months, (censor_time < event_time).astype(np.int64)


def simulate_cohort(
    n_patients: int,
    out_dir: str | Path,
    *,
    n_genes: int = 120,
    settings: BagSettings | None = None,
    censoring: float = 0.5,
    multi_slide: float = 0.3,
    n_folds: int = 5,
    risk_scale: float = 1.0,
    seed: int = 0,
    histology_risk: float = 0.0,
) -> SyntheticCohort:
    """A fully synthetic cohort under ``out_dir``: table, signatures, splits and bags.

    Survival follows :func:`true_risk` (a sparse linear function of the genomics). The
    phenotype map's first column is the risk direction, so phenotype 0 is the
    "aggressive" phenotype and the bags carry survival information as ``signal`` grows.

    ``histology_risk`` W in [0, 1] gives the share W of the risk variance to h, the
    patient's standardised independent phenotype-1 logit draw (histology-only information;
    visible in the bags in proportion to 1 - signal). The bags, splits and genomics do not
    depend on W, so cohorts that differ only in W are paired; W = 0 is the plain model.
    """
    import pandas as pd

    settings = settings or BagSettings(seed=seed)
    check_histology_risk(histology_risk, settings)
    rng = keyed_rng(seed, 10)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    genes = [f"SIM{g:04d}" for g in range(n_genes)]
    modalities = synthetic_genomics(n_patients, n_genes, rng)
    case_ids = [f"SIM-{i:05d}" for i in range(n_patients)]
    histology = (standardise_columns(independent_logits(case_ids, settings)[:, 1:2])[:, 0]
                 if settings.n_phenotypes >= 2 else np.zeros(n_patients))
    risk, beta = true_risk(modalities, risk_scale, histology=histology,
                           histology_risk=histology_risk)
    months, censorship = survival_times(risk, rng, censoring=censoring)
    n_slides = 1 + (rng.random(n_patients) < multi_slide) * rng.integers(1, 3, n_patients)
    slides = [[f"{c}-01Z-00-DX{j + 1}.svs" for j in range(k)] for c, k in zip(case_ids, n_slides, strict=True)]

    columns: dict[str, object] = {}
    for modality, values in modalities.items():
        for j in range(values.shape[1]):
            columns[f"{genes[j]}_{modality}"] = values[:, j]
    per_patient = pd.DataFrame({"case_id": case_ids, "survival_months": months,
                                "censorship": censorship, **columns})
    rows = per_patient.loc[np.repeat(np.arange(n_patients), n_slides)].reset_index(drop=True)
    rows.insert(1, "slide_id", [s for group in slides for s in group])
    table_path = out / "synthetic_all_clean.csv"
    rows.to_csv(table_path, index=False)

    group_of = np.arange(n_genes) % len(MCAT_GROUPS)
    signatures = pd.DataFrame({name: pd.Series([g for g, k in zip(genes, group_of, strict=True) if k == i])
                               for i, name in enumerate(MCAT_GROUPS)})
    signatures_path = out / "signatures.csv"
    signatures.to_csv(signatures_path, index=False)
    splits_dir = write_splits(case_ids, out / "splits", n_folds, rng)

    genomics = np.hstack([standardise_columns(modalities[m]) for m in ("rnaseq", "cnv", "mut")])
    w = cohort_phenotype_map(genomics, settings)
    w[:, 0] = beta / np.linalg.norm(beta)
    simulate_bags(genomics, case_ids, slides, out / "bags", settings=settings, phenotype_map_=w)
    return SyntheticCohort(table_path=table_path, signatures_path=signatures_path,
                           splits_dir=splits_dir, bags_dir=out / "bags",
                           risk=dict(zip(case_ids, risk.tolist(), strict=True)),
                           n_slides=int(n_slides.sum()),
                           histology_latent=dict(zip(case_ids, histology.tolist(), strict=True)))


def write_splits(case_ids: Sequence[str], out_dir: Path, n_folds: int,
                 rng: np.random.Generator) -> Path:
    """MCAT-style ``splits_{k}.csv`` (index, ``train``, ``val``; the shorter column NaN-padded)."""
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    order = np.asarray(case_ids)[rng.permutation(len(case_ids))]
    folds = np.array_split(order, n_folds)
    for k, val in enumerate(folds):
        train = np.concatenate([f for j, f in enumerate(folds) if j != k])
        frame = pd.DataFrame({"train": pd.Series(sorted(train)), "val": pd.Series(sorted(val))})
        frame.to_csv(out_dir / f"splits_{k}.csv")
    return out_dir
