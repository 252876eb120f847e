"""The demo's steps; each prints what it did. Later layers add their steps here."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def run_demo(console: Console, root: Path, *, patches: int, dim: int, signal: float, seed: int,
             epochs: int) -> None:
    store_dir = root
    inputs = root / "inputs"
    console.rule("casegraph demo")
    console.print("cohort: scikit-survival's bundled breast-cancer data (real: 198 patients, 76 "
                  "expression probes, time to distant metastasis); WSI bags: [bold]simulated[/bold] "
                  f"({patches} patches x {dim}-d per slide, signal {signal})")
    step_ingest(console, store_dir, inputs, patches=patches, dim=dim, signal=signal, seed=seed)
    console.print(f"\n[green]demo finished[/green]: store at {store_dir}")


def step_ingest(console: Console, store_dir: Path, inputs: Path, *, patches: int, dim: int,
                signal: float, seed: int) -> None:
    from casegraph.cli.store_cmds import _print_report
    from casegraph.ingest.demo_data import write_demo_cohort
    from casegraph.ingest.info import store_summary
    from casegraph.ingest.pipeline import IngestRequest, ingest
    from casegraph.ingest.signatures import read_gene_groups
    from casegraph.ingest.simulate import simulate_bags
    from casegraph.ingest.splits import read_split_dir
    from casegraph.ingest.store import Store
    from casegraph.ingest.tables import read_mcat_table

    console.rule("1. ingest")
    files = write_demo_cohort(inputs, seed=seed)
    table = read_mcat_table(files.table)
    slides_of: dict[str, list[str]] = {p: [] for p in table.patient_ids}
    for key, pid in table.slides:
        slides_of[pid].append(key)
    simulate_bags(table.genomics, table.patient_ids, [slides_of[p] for p in table.patient_ids],
                  inputs / "bags", n_patches=patches, dim=dim, signal=signal, seed=seed)
    request = IngestRequest(tables=[table], gene_groups=[read_gene_groups(files.signatures)],
                            split_sets=[read_split_dir(files.splits_dir)],
                            bag_dirs=[inputs / "bags"], encoder=f"simulator-{dim}d", seed=seed)
    with Store.open(store_dir) as store:
        _print_report(ingest(store, request))
        console.print(store_summary(store).render())
