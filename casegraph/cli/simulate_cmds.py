"""``casegraph simulate``: simulated WSI patch bags for a cohort table, or a synthetic cohort."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_command)


def simulate_command(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write into (created if needed)."),
    table: Path | None = typer.Option(None, "--table", "-t", help="MCAT/PORPOISE cohort table (.csv/.csv.zip) whose slides get bags; with --rna, a SurvPath label table."),
    rna: Path | None = typer.Option(None, help="SurvPath patients x genes RNA matrix (with --table as the label table)."),
    synthetic: int | None = typer.Option(None, "--synthetic", min=2, help="Instead of --table: write a fully synthetic cohort of N patients (table, signatures, splits, bags)."),
    genes: int = typer.Option(120, help="--synthetic: number of genes."),
    censoring: float = typer.Option(0.5, min=0.0, max=0.95, help="--synthetic: target censoring rate."),
    patches: int = typer.Option(4096, "--patches", min=1, help="Patches per slide."),
    dim: int = typer.Option(1024, "--dim", min=1, help="Feature dimension."),
    signal: float = typer.Option(0.5, min=0.0, max=1.0, help="Signal strength: 0 = histology carries no genomic information, 1 = the phenotype mix is a function of genomics."),
    phenotypes: int = typer.Option(8, "--phenotypes", min=1, help="Number of tissue-phenotype prototypes."),
    patch_spread: float = typer.Option(0.0, min=0.0, max=0.95, help="Vary patches per slide uniformly within +-this fraction."),
    genomic_map: str = typer.Option("random", "--genomic-map", help="Genomics -> phenotype map: 'random' (fixed random directions) or 'pca' (the cohort's leading genomic principal axes)."),
    histology_risk: float = typer.Option(0.0, "--histology-risk", min=0.0, max=1.0, help="--synthetic: share of the survival-risk variance carried by a histology-only latent (phenotype 1), not by genomics."),
    seed: int = typer.Option(0, help="Seed (same seed, same files)."),
) -> None:
    """Write simulated CLAM .h5 bags (features N x D float32, coords N x 2), named
    <slide_id>.h5. These are simulated features, not real WSI features (docs/simulator.md)."""
    from rich.console import Console

    from casegraph.errors import InputError
    from casegraph.ingest.simulate import BagSettings

    if (table is None) == (synthetic is None):
        raise InputError("give exactly one of --table and --synthetic",
                         fix="`casegraph simulate --table T.csv.zip --out DIR` or "
                         "`casegraph simulate --synthetic 200 --out DIR`")
    if table is not None and histology_risk > 0:
        raise InputError("--histology-risk plants survival information in a synthetic cohort; "
                         "a real table's survival is what it is",
                         fix="use --histology-risk with --synthetic N")
    settings = BagSettings(n_patches=patches, dim=dim, signal=signal, n_phenotypes=phenotypes,
                           seed=seed, patch_spread=patch_spread, genomic_map=genomic_map)
    console = Console()
    with _out_errors(out):
        if synthetic is not None:
            _synthetic(console, out, synthetic, genes, censoring, settings, histology_risk)
        else:
            assert table is not None
            _for_table(console, out, table, rna, settings)


@contextmanager
def _out_errors(out: Path) -> Iterator[None]:
    """The OS refusing a write under --out (name too long, no space, read-only) is one line."""
    from casegraph.errors import InputError

    try:
        yield
    except OSError as exc:
        where = exc.filename if isinstance(exc.filename, str) else out
        raise InputError(f"cannot write the simulated files ({exc.strerror or exc})", file=where,
                         fix="choose a writable --out folder with free space and a shorter path"
                         ) from None


def _for_table(console, out: Path, table_path: Path, rna: Path | None, settings) -> None:  # type: ignore[no-untyped-def]
    from casegraph.ingest.simulate import simulate_bags
    from casegraph.ingest.tables import read_mcat_table, read_survpath

    table = read_survpath(table_path, rna) if rna is not None else read_mcat_table(table_path)
    result = simulate_bags(table.genomics, table.patient_ids, table.slide_lists(), out,
                           settings=settings)
    console.print(f"wrote {len(result.paths)} simulated bags for {len(table.patient_ids)} "
                  f"patients of {table_path.name} to {out} ({settings.n_patches} x {settings.dim}, "
                  f"signal {settings.signal}, {settings.genomic_map} genomic map, "
                  f"{table.genomics.shape[1]} genomic features, seed {settings.seed})")


def _synthetic(console, out: Path, n: int, genes: int, censoring: float, settings,  # type: ignore[no-untyped-def]
               histology_risk: float) -> None:
    from casegraph.ingest.synthetic import simulate_cohort

    cohort = simulate_cohort(n, out, n_genes=genes, settings=settings, censoring=censoring,
                             seed=settings.seed, histology_risk=histology_risk)
    console.print(f"wrote a synthetic cohort of {n} patients ({cohort.n_slides} slides) to {out}:")
    for label, path in (("table", cohort.table_path), ("signatures", cohort.signatures_path),
                        ("splits", cohort.splits_dir), ("bags", cohort.bags_dir)):
        console.print(f"  {label:<10} {path}")
    console.print(f"ingest it: casegraph ingest --table {cohort.table_path} --cohort synthetic "
                  f"--signatures {cohort.signatures_path} --splits {cohort.splits_dir} "
                  f"--bags {cohort.bags_dir} --encoder simulator-{settings.dim}d")
