"""The simulator's evaluation knobs: ``histology_risk`` (survival information only histology
has) and ``genomic_map`` ("random" or "pca" genomics -> phenotype map)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from casegraph.errors import UnknownNameError
from casegraph.ingest.bags import read_bag
from casegraph.ingest.simulate import (
    BagSettings,
    cohort_phenotype_map,
    genomic_features,
    pca_phenotype_map,
    phenotype_map,
    phenotype_mix,
    prototypes,
    provenance_attrs,
    simulate_bags,
    standardise_columns,
)
from casegraph.ingest.synthetic import SyntheticCohort, simulate_cohort
from casegraph.models.metrics import harrell_c
from casegraph.schema import SurvivalTarget

TINY = BagSettings(n_patches=16, dim=8, n_phenotypes=4, seed=1)
SURVIVAL = ["survival_months", "censorship"]


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _cohort(out: Path, histology_risk: float | None, settings: BagSettings = TINY,
            n: int = 60) -> SyntheticCohort:
    extra = {} if histology_risk is None else {"histology_risk": histology_risk}
    return simulate_cohort(n, out, n_genes=12, settings=settings, multi_slide=0.3, seed=1,
                           **extra)


def test_histology_risk_zero_is_the_default_model(tmp_path: Path) -> None:
    default, zero = _cohort(tmp_path / "default", None), _cohort(tmp_path / "zero", 0.0)
    assert _digests(tmp_path / "default") == _digests(tmp_path / "zero")
    assert default.risk == zero.risk and default.histology_latent == zero.histology_latent


def test_histology_risk_changes_only_survival(tmp_path: Path) -> None:
    plain, planted = _cohort(tmp_path / "a", 0.0), _cohort(tmp_path / "b", 0.5)
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == ["synthetic_all_clean.csv"]  # bags, splits: paired
    table_a, table_b = pd.read_csv(plain.table_path), pd.read_csv(planted.table_path)
    pd.testing.assert_frame_equal(table_a.drop(columns=SURVIVAL), table_b.drop(columns=SURVIVAL))
    assert not table_a[SURVIVAL].equals(table_b[SURVIVAL])
    assert plain.histology_latent == planted.histology_latent
    h = np.array(list(planted.histology_latent.values()))
    assert abs(h.mean()) < 1e-9 and abs(h.std() - 1.0) < 1e-9


def _h_concordance(cohort: SyntheticCohort) -> tuple[float, SurvivalTarget, pd.DataFrame]:
    first = pd.read_csv(cohort.table_path).groupby("case_id").first()
    target = SurvivalTarget(time=first["survival_months"].to_numpy(np.float64),
                            event=first["censorship"].to_numpy() == 0)
    h = first.index.map(cohort.histology_latent).to_numpy()
    return harrell_c(h, target), target, first


def test_histology_latent_carries_survival_only_when_planted(tmp_path: Path) -> None:
    c_plain = _h_concordance(_cohort(tmp_path / "a", 0.0, n=120))[0]
    c_planted = _h_concordance(_cohort(tmp_path / "b", 0.8, n=120))[0]
    assert abs(c_plain - 0.5) < 0.08
    assert c_planted > 0.62


def test_phenotype_1_abundance_follows_the_histology_latent(tmp_path: Path) -> None:
    settings = BagSettings(n_patches=64, dim=8, n_phenotypes=4, prototype_scale=3.0,
                           noise_scale=0.3, seed=0)
    cohort = simulate_cohort(100, tmp_path, n_genes=12, settings=settings, multi_slide=0.0,
                             histology_risk=0.8, seed=0)
    _, target, first = _h_concordance(cohort)
    protos = prototypes(settings)
    fraction = []
    for slide in first["slide_id"]:
        features = read_bag(cohort.bags_dir / f"{slide[:-4]}.h5").features
        nearest = np.linalg.norm(features[:, None] - protos[None], axis=2).argmin(axis=1)
        fraction.append(float((nearest == 1).mean()))
    h = first.index.map(cohort.histology_latent).to_numpy()
    assert np.corrcoef(fraction, h)[0, 1] > 0.3
    assert harrell_c(np.array(fraction), target) > 0.55  # the bags now carry it


@pytest.mark.parametrize(("weight", "settings", "match"), [
    (-0.1, TINY, r"\[0, 1\]"),
    (1.5, TINY, r"\[0, 1\]"),
    (0.5, BagSettings(n_patches=4, dim=2, n_phenotypes=1), "n_phenotypes >= 2"),
    (0.5, BagSettings(n_patches=4, dim=2, signal=1.0), "signal"),
])
def test_invalid_histology_risk_is_refused(tmp_path: Path, weight: float,
                                           settings: BagSettings, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        simulate_cohort(10, tmp_path, n_genes=6, settings=settings, histology_risk=weight)
    assert not list(tmp_path.iterdir())  # refused before writing anything


# ------------------------------------------------------------------------------ genomic map
def _correlated_genomics(n: int = 200, f: int = 15, seed: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3)) @ rng.standard_normal((3, f)) * 2.0 \
        + rng.standard_normal((n, f))


def test_pca_map_gives_principal_component_scores() -> None:
    g = _correlated_genomics()
    settings = BagSettings(n_phenotypes=4, seed=2, genomic_map="pca")
    w = cohort_phenotype_map(g, settings)
    np.testing.assert_allclose(w.T @ w, np.eye(4), atol=1e-10)  # orthonormal axes
    largest = w[np.abs(w).argmax(axis=0), np.arange(4)]
    assert (largest > 0).all()  # deterministic signs
    x = genomic_features(g)
    x_centred = x - x.mean(axis=0)
    scores = x_centred @ np.linalg.svd(x_centred, full_matrices=False)[2][:4].T
    genomic = standardise_columns(x @ w)
    for p in range(4):
        assert abs(np.corrcoef(genomic[:, p], scores[:, p])[0, 1]) > 0.9999
    variances = scores.var(axis=0)
    assert (np.diff(variances) <= 0).all()  # leading axes first
    ids = [f"P{i}" for i in range(len(g))]
    np.testing.assert_array_equal(
        phenotype_mix(g, ids, settings),
        phenotype_mix(g, ids, BagSettings(n_phenotypes=4, seed=2), phenotype_map_=w))


def test_pca_map_fills_beyond_the_rank_with_the_random_map() -> None:
    x = genomic_features(_correlated_genomics(f=3))
    w = pca_phenotype_map(x, 5, seed=7)
    np.testing.assert_array_equal(w[:, 3:], phenotype_map(3, 5, 7)[:, 3:])
    np.testing.assert_allclose(w[:, :3].T @ w[:, :3], np.eye(3), atol=1e-10)


def test_random_map_is_the_default_and_unchanged(tmp_path: Path) -> None:
    g = _correlated_genomics(n=6)
    ids, slides = [f"P{i}" for i in range(6)], [[f"S{i}.svs"] for i in range(6)]
    simulate_bags(g, ids, slides, tmp_path / "a", settings=TINY)
    explicit = BagSettings(n_patches=16, dim=8, n_phenotypes=4, seed=1, genomic_map="random")
    simulate_bags(g, ids, slides, tmp_path / "b", settings=explicit)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    np.testing.assert_array_equal(cohort_phenotype_map(g, TINY), phenotype_map(15, 4, 1))
    assert "genomic_map" not in provenance_attrs(TINY)
    pca = BagSettings(n_patches=16, dim=8, n_phenotypes=4, seed=1, genomic_map="pca")
    result = simulate_bags(g, ids, slides, tmp_path / "c", settings=pca)
    with h5py.File(result.paths["S0"], "r") as handle:
        assert handle.attrs["genomic_map"] == "pca"


def test_synthetic_cohort_with_pca_map_keeps_the_risk_phenotype(tmp_path: Path) -> None:
    settings = BagSettings(n_patches=16, dim=8, n_phenotypes=3, seed=0, genomic_map="pca")
    cohort = simulate_cohort(40, tmp_path, n_genes=12, settings=settings)
    assert len(list(cohort.bags_dir.glob("*.h5"))) == cohort.n_slides


def test_unknown_genomic_map_names_the_choices() -> None:
    with pytest.raises(UnknownNameError, match="unknown genomic map 'pcaa'; choose among: pca, "
                                               "random"):
        BagSettings(genomic_map="pcaa")


# ------------------------------------------------------------------------------------- CLI
def _invoke(args: list[str]):  # type: ignore[no-untyped-def]
    import typer
    from typer.testing import CliRunner

    from casegraph.cli import simulate_cmds

    app = typer.Typer()
    app.callback()(lambda: None)
    simulate_cmds.register(app)
    return CliRunner().invoke(app, ["simulate", *args])


def test_cli_knobs(tmp_path: Path) -> None:
    small = ["--patches", "8", "--dim", "4", "--genes", "12", "--phenotypes", "3"]
    for name, weight in (("a", "0"), ("b", "0.6")):
        result = _invoke(["--synthetic", "20", "--out", str(tmp_path / name),
                          "--histology-risk", weight, "--genomic-map", "pca", *small])
        assert result.exit_code == 0, result.output
    assert _digests(tmp_path / "a" / "bags") == _digests(tmp_path / "b" / "bags")
    assert (pd.read_csv(tmp_path / "a" / "synthetic_all_clean.csv")["survival_months"].tolist()
            != pd.read_csv(tmp_path / "b" / "synthetic_all_clean.csv")["survival_months"].tolist())
    table = tmp_path / "a" / "synthetic_all_clean.csv"
    refused = _invoke(["--table", str(table), "--out", str(tmp_path / "c"),
                       "--histology-risk", "0.5", *small[:4]])
    assert refused.exit_code != 0
    unknown = _invoke(["--table", str(table), "--out", str(tmp_path / "c"),
                       "--genomic-map", "nmf", *small[:4]])
    assert unknown.exit_code != 0 and "choose among" in str(unknown.exception)
    ok = _invoke(["--table", str(table), "--out", str(tmp_path / "d"), "--genomic-map", "pca",
                  *small[:4]])
    assert ok.exit_code == 0, ok.output
