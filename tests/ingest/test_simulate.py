"""The WSI simulator: determinism, the signal knob, shared mixes, valid CLAM files."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from casegraph.errors import InputError
from casegraph.ingest.bags import read_bag
from casegraph.ingest.simulate import (
    BagSettings,
    phenotype_map,
    phenotype_mix,
    prototypes,
    simulate_bags,
    standardise_columns,
)
from casegraph.ingest.synthetic import simulate_cohort

SMALL = {"n_patches": 64, "dim": 16, "n_phenotypes": 4}


def _genomics(n: int = 6, f: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, f))


def _cohort(n: int = 4) -> tuple[list[str], list[list[str]]]:
    patients = [f"P{i}" for i in range(n)]
    slides = [[f"P{i}-DX1.svs"] + ([f"P{i}-DX2.svs"] if i % 2 else []) for i in range(n)]
    return patients, slides


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.h5"))}


def test_writes_valid_clam_h5_named_by_slide(tmp_path: Path) -> None:
    patients, slides = _cohort()
    result = simulate_bags(_genomics(4), patients, slides, tmp_path, **SMALL)
    assert sorted(result.paths) == sorted(s[:-4] for group in slides for s in group)
    for key, path in result.paths.items():
        assert path == tmp_path / f"{key}.h5"
        with h5py.File(path, "r") as handle:
            assert handle["features"].shape == (64, 16)
            assert handle["features"].dtype == np.float32
            assert handle["coords"].shape == (64, 2)
            assert np.issubdtype(handle["coords"].dtype, np.integer)
            assert "simulated" in str(handle.attrs["generator"])
        bag = read_bag(path)
        assert len({tuple(c) for c in bag.coords.tolist()}) == 64  # distinct patch positions
    assert not list(tmp_path.glob(".*tmp"))


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    patients, slides = _cohort()
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        simulate_bags(_genomics(4), patients, slides, tmp_path / name, seed=seed, **SMALL)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_slide_bags_do_not_depend_on_input_order(tmp_path: Path) -> None:
    patients, slides = _cohort()
    g = _genomics(4)
    simulate_bags(g, patients, slides, tmp_path / "a", signal=0.0, **SMALL)
    simulate_bags(g[::-1], patients[::-1], slides[::-1], tmp_path / "b", signal=0.0, **SMALL)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_multi_slide_patients_share_their_mix(tmp_path: Path) -> None:
    settings = BagSettings(n_patches=4000, dim=8, n_phenotypes=3, noise_scale=0.05,
                           slide_shift=0.0, prototype_scale=5.0)
    patients, slides = ["A", "B"], [["A1", "A2"], ["B1"]]
    result = simulate_bags(_genomics(2), patients, slides, tmp_path, settings=settings)

    def proportions(key: str) -> np.ndarray:
        feats = read_bag(result.paths[key]).features
        nearest = np.linalg.norm(feats[:, None] - result.prototypes[None], axis=2).argmin(axis=1)
        return np.bincount(nearest, minlength=3) / len(feats)

    np.testing.assert_allclose(proportions("A1"), result.mix[0], atol=0.03)
    np.testing.assert_allclose(proportions("A2"), result.mix[0], atol=0.03)
    np.testing.assert_allclose(proportions("B1"), result.mix[1], atol=0.03)


def _mix_vs_genomics_correlation(signal: float) -> float:
    n = 2000
    g = _genomics(n, 12, seed=5)
    ids = [f"P{i}" for i in range(n)]
    settings = BagSettings(signal=signal, n_phenotypes=4, seed=3)
    log_mix = np.log(phenotype_mix(g, ids, settings))
    log_mix -= log_mix.mean(axis=1, keepdims=True)
    genomic = standardise_columns(g @ phenotype_map(12, 4, 3))
    genomic -= genomic.mean(axis=1, keepdims=True)
    return float(np.mean([abs(np.corrcoef(log_mix[:, p], genomic[:, p])[0, 1]) for p in range(4)]))


def test_signal_zero_mix_is_independent_of_genomics() -> None:
    assert _mix_vs_genomics_correlation(0.0) < 0.06


def test_signal_one_mix_is_a_function_of_genomics() -> None:
    assert _mix_vs_genomics_correlation(1.0) > 0.99
    assert 0.4 < _mix_vs_genomics_correlation(0.5) < 0.9


def test_signal_outside_unit_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="signal"):
        BagSettings(signal=1.5)


def test_patch_spread_varies_slide_sizes(tmp_path: Path) -> None:
    settings = BagSettings(n_patches=100, dim=4, patch_spread=0.5)
    patients = [f"P{i}" for i in range(6)]
    result = simulate_bags(_genomics(6), patients, [[p] for p in patients], tmp_path,
                           settings=settings)
    sizes = {read_bag(p).n_patches for p in result.paths.values()}
    assert len(sizes) > 1 and all(50 <= s <= 150 for s in sizes)


def test_synthetic_cohort(tmp_path: Path) -> None:
    cohort = simulate_cohort(120, tmp_path, n_genes=24, settings=BagSettings(n_patches=32, dim=8),
                             seed=0)
    table = pd.read_csv(cohort.table_path)
    assert {"case_id", "slide_id", "survival_months", "censorship"} <= set(table.columns)
    assert table["case_id"].nunique() == 120 and len(table) == cohort.n_slides
    assert any(c.endswith("_rnaseq") for c in table) and any(c.endswith("_cnv") for c in table)
    cnv = table[[c for c in table if c.endswith("_cnv")]].to_numpy()
    assert set(np.unique(cnv)) <= {-2.0, -1.0, 0.0, 1.0, 2.0}
    mut = table[[c for c in table if c.endswith("_mut")]].to_numpy()
    assert set(np.unique(mut)) <= {0.0, 1.0}
    assert set(table["censorship"]) <= {0, 1} and 0.3 < table["censorship"].mean() < 0.7
    assert (table["survival_months"] > 0).all()
    per_patient = table.groupby("case_id")
    assert (per_patient["survival_months"].nunique() == 1).all()  # repeated rows agree
    assert len(list(cohort.bags_dir.glob("*.h5"))) == cohort.n_slides
    signatures = pd.read_csv(cohort.signatures_path)
    assert signatures.shape[1] == 6
    splits = pd.read_csv(cohort.splits_dir / "splits_0.csv", index_col=0)
    assert not set(splits["train"].dropna()) & set(splits["val"].dropna())
    # the known risk orders survival (higher risk, earlier death)
    first = per_patient.first()
    risk = first.index.map(cohort.risk).to_numpy()
    dead = first["censorship"].to_numpy() == 0
    assert np.corrcoef(risk[dead], np.log(first["survival_months"].to_numpy()[dead]))[0, 1] < -0.3


def test_synthetic_bags_carry_risk_when_signal_is_high(tmp_path: Path) -> None:
    settings = BagSettings(n_patches=200, dim=8, signal=1.0, n_phenotypes=3, seed=0)
    cohort = simulate_cohort(80, tmp_path, n_genes=12, settings=settings, multi_slide=0.0)
    table = pd.read_csv(cohort.table_path)
    means = np.stack([read_bag(p).features.mean(axis=0)
                      for p in sorted(cohort.bags_dir.glob("*.h5"))])
    risk = np.array([cohort.risk[c] for c in sorted(table["case_id"])])
    # the bag mean moves towards phenotype 0 (the risk phenotype) as risk grows
    towards_0 = means @ prototypes(settings)[0]
    assert np.corrcoef(towards_0, risk)[0, 1] > 0.5


def _simulate_app():  # type: ignore[no-untyped-def]
    import typer

    from casegraph.cli import simulate_cmds

    app = typer.Typer()
    app.callback()(lambda: None)
    simulate_cmds.register(app)
    return app


def test_cli_simulates_bags_for_a_table(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    app = _simulate_app()
    table = tmp_path / "tcga_tiny_all_clean.csv"
    table.write_text(
        "case_id,slide_id,survival_months,censorship,TP53_rnaseq,TP53_cnv,TP53_mut\n"
        "A,A-DX1.svs,10.5,0,1.2,1,0\n"
        "A,A-DX2.svs,10.5,0,1.2,1,0\n"
        "B,B-DX1.svs,3.0,1,-0.4,0,1\n", encoding="utf-8")
    args = ["simulate", "--table", str(table), "--out", str(tmp_path / "bags"),
            "--patches", "20", "--dim", "8", "--signal", "1", "--seed", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "bags").glob("*.h5")) == ["A-DX1.h5", "A-DX2.h5",
                                                                       "B-DX1.h5"]
    assert read_bag(tmp_path / "bags" / "B-DX1.h5").features.shape == (20, 8)


def test_cli_synthetic_cohort_and_bad_usage(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    app = _simulate_app()
    result = CliRunner().invoke(app, ["simulate", "--synthetic", "12", "--out", str(tmp_path),
                                      "--patches", "8", "--dim", "4", "--genes", "12"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "synthetic_all_clean.csv").is_file()
    assert len(list((tmp_path / "bags").glob("*.h5"))) >= 12
    assert CliRunner().invoke(app, ["simulate", "--out", str(tmp_path)]).exit_code != 0


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from casegraph.cli import main; main()", *args],
                          capture_output=True, text=True, check=False)


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("slide_id", ["S" * 5000, "S" * 248, "dir/S.svs", ".svs"])
def test_cli_simulate_unusable_slide_id_is_one_line(tmp_path: Path, slide_id: str) -> None:
    table = tmp_path / "tcga_tiny_all_clean.csv"
    table.write_text("case_id,slide_id,survival_months,censorship,TP53_rnaseq\n"
                     f"A,A-DX1.svs,10.5,0,1.2\nB,{slide_id},3.0,1,-0.4\n", encoding="utf-8")
    line = _one_line_error(_run_cli("simulate", "--table", str(table), "--out",
                                    str(tmp_path / "bags"), "--patches", "8", "--dim", "4"))
    assert f"{table}, row 3, column 'slide_id': slide id" in line and "fix:" in line
    assert len(line) < 500 and not (tmp_path / "bags").exists()


def test_cli_simulate_unwritable_out_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / ("o" * 300) / "bags"
    line = _one_line_error(_run_cli("simulate", "--synthetic", "4", "--out", str(out),
                                    "--patches", "8", "--dim", "4", "--genes", "8"))
    assert "File name too long" in line and "fix:" in line


@pytest.mark.parametrize("slide_id", ["x" * 5000, "a/b", "..", " P-1"])
def test_simulate_bags_refuses_ids_before_writing(tmp_path: Path, slide_id: str) -> None:
    with pytest.raises(InputError, match="slide id"):
        simulate_bags(_genomics(2), ["P0", "P1"], [["P0-DX1"], [slide_id]], tmp_path / "o",
                      **SMALL)
    assert not (tmp_path / "o").exists()
