"""``casegraph demo``: the whole pipeline on a fresh store, with no external data."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)


def demo_command(
    store: Path = typer.Option(Path("casegraph-demo"), "--store", "-s",
                               help="Where to build the demo store (replaced if it exists)."),
    patches: int = typer.Option(512, help="Simulated patches per slide."),
    dim: int = typer.Option(256, help="Simulated feature dim."),
    signal: float = typer.Option(0.6, help="Simulator signal strength (0 = histology carries no genomic information)."),
    seed: int = typer.Option(0, help="Seed for the simulator and the models."),
    epochs: int = typer.Option(10, help="Training epochs for the demo models."),
) -> None:
    """Build a demo store from a real bundled cohort (scikit-survival breast cancer) with
    simulated WSI bags, then run the pipeline on it and print what each step produced."""
    from rich.console import Console

    from casegraph.cli.demo_steps import run_demo

    console = Console()
    if store.exists():
        if not (store / "store.duckdb").exists() and any(store.iterdir()):
            raise typer.BadParameter(f"{store} exists and is not a casegraph store; pick another --store")
        shutil.rmtree(store)
    run_demo(console, store, patches=patches, dim=dim, signal=signal, seed=seed, epochs=epochs)
