"""The demo's steps; each prints what it did. Later layers add their steps here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console


def run_demo(console: Console, root: Path, *, patches: int, dim: int, signal: float, seed: int,
             epochs: int) -> None:
    store_dir = root
    inputs = root / "inputs"
    console.rule("casegraph demo")
    console.print("cohort: scikit-survival's bundled breast-cancer data (real: 198 patients, 76 "
                  "expression probes, time to distant metastasis); WSI bags: [bold]simulated[/bold] "
                  f"({patches} patches x {dim}-d per slide, signal {signal})")
    later = step_ingest(console, store_dir, inputs, patches=patches, dim=dim, signal=signal,
                        seed=seed)
    version = step_train_msrl(console, store_dir, seed=seed, epochs=epochs)
    step_graph(console, store_dir, "3. case graph", store_buffer_patient(store_dir, version),
               version)
    step_second_batch(console, store_dir, inputs)
    derived = step_attach(console, store_dir, version)
    step_graph(console, store_dir, "6. case graph, by delta: the derived version and the new "
               "patients", later[0], derived)
    step_train_baseline(console, store_dir, seed=seed, epochs=epochs)
    step_query(console, store_dir, inputs / "bags-2", later)
    console.rule("done")
    console.print(f"[green]demo finished[/green]: store at {store_dir}. Try:\n"
                  f"  casegraph info --store {store_dir}\n"
                  f"  casegraph query --store {store_dir} --patient {DEMO_QUERY_HINT}\n"
                  f"  casegraph serve --store {store_dir}   (set CASEGRAPH_API_KEYS first)")


DEMO_QUERY_HINT = "BC-000"
# patients that arrive after training: fold 0 evaluation patients, so MSRL never trains on them
N_LATER = 30
# A smaller MSRL than the paper's defaults so the demo finishes in minutes on a laptop CPU.
DEMO_MSRL_OPTIONS: dict[str, Any] = {"dim": 128, "pretrain_steps": 30, "proj_dim": 64}


def step_train_baseline(console: Console, store_dir: Path, *, seed: int, epochs: int) -> None:
    """5-fold CV of the genomics-only SNN baseline on the stored folds."""
    from casegraph.ingest.store import Store
    from casegraph.models.cv import CVConfig, run_cv, stored_folds
    from casegraph.models.data import CohortData
    from casegraph.models.results import ResultStore

    console.rule("7. train a baseline (SNN on genomics, 5-fold CV over both batches)")
    console.print("(the first torch import and model set-up take a few seconds)")
    config = CVConfig(model="snn", cohort="demo", splits="mcat", seed=seed,
                      options={"epochs": epochs})
    with Store.open(store_dir) as store:
        data = CohortData.from_store(store, "demo", group_set="demo")
        results = ResultStore(store)
        folds = run_cv(data, config, stored_folds(data, store, "mcat"), results=results)
    c = [f.metrics.get("c_index", float("nan")) for f in folds]
    console.print("per-fold Harrell's C: " + ", ".join(f"{x:.3f}" for x in c)
                  + f"  (mean {sum(c) / len(c):.3f})")


def step_train_msrl(console: Console, store_dir: Path, *, seed: int, epochs: int) -> str:
    """MSRL on fold 0's training patients; fold 0's evaluation patients stay out of the buffer."""
    from casegraph.ingest.store import Store
    from casegraph.models.msrl.api import train_version

    console.rule("2. train MSRL (graph structure learning + authentic-case buffer), fold 0")
    with Store.open(store_dir) as store:
        version = train_version(store, "demo", model="msrl", fold=0, group_set="demo",
                                epochs=epochs, seed=seed, **DEMO_MSRL_OPTIONS)
        buffer = store.model_buffer(version)
        edges = len(store.model_neighbours(version))
    console.print(f"model version {version}: buffer of {len(buffer)} authentic cases, "
                  f"{edges} learned top-K neighbour edges stored")
    return version


def store_buffer_patient(store_dir: Path, version: str) -> str:
    from casegraph.ingest.store import Store

    with Store.open(store_dir, read_only=True) as store:
        return store.versions.buffer(version)[0]


def step_graph(console: Console, store_dir: Path, title: str, patient: str, version: str) -> None:
    """Sync the case graph (embedded unless CASEGRAPH_NEO4J_URI is set) and read it back."""
    from casegraph.graph import open_graph_store
    from casegraph.graph.sync import sync_graph
    from casegraph.ingest.store import Store

    with Store.open(store_dir) as store, open_graph_store(store) as graph:
        console.rule(f"{title} ({graph.backend})")
        report = sync_graph(store, graph)
        console.print(f"wrote {report.patients_written} patients, {report.slides_written} "
                      f"slides, {report.edges_written} SIMILAR_TO edges, "
                      f"{report.predictions_written} predictions "
                      f"(versions {', '.join(report.versions_written) or 'none new'})")
        for n in graph.neighbours(patient, version, k=3):
            outcome = "death" if n.event else "censored"
            console.print(f"  ({patient})-[:SIMILAR_TO {{rank: {n.rank}, weight: {n.weight:.3f}}}]->"
                          f"({n.patient_id}: {n.time:.1f} months, {outcome})")


def step_second_batch(console: Console, store_dir: Path, inputs: Path) -> None:
    from casegraph.cli.store_cmds import _print_report
    from casegraph.ingest.pipeline import IngestRequest, ingest
    from casegraph.ingest.store import Store
    from casegraph.ingest.tables import read_mcat_table

    console.rule(f"4. ingest the second batch ({N_LATER} patients who arrived after training)")
    table = read_mcat_table(inputs / "batch-2" / "tcga_demo_all_clean.csv", "demo")
    with Store.open(store_dir) as store:
        _print_report(ingest(store, IngestRequest(tables=[table], bag_dirs=[inputs / "bags-2"],
                                                  encoder=_encoder(store))))


def step_attach(console: Console, store_dir: Path, version: str) -> str:
    """The new patients join the trained version as a derived version (no retraining)."""
    from casegraph.ingest.store import Store
    from casegraph.retrieval.attach import attach_patients

    console.rule("5. attach the new patients to the trained version (no retraining)")
    with Store.open(store_dir) as store:
        report = attach_patients(store, version, refresh_buffer=True)
    console.print(report.summary())
    console.print("the trained version is unchanged; the derived one adds the new patients' "
                  "neighbours, predictions and embeddings, and its buffer took the newest "
                  "authentic cases (FIFO)")
    return report.version_id or version


def step_query(console: Console, store_dir: Path, bags: Path, later: list[str]) -> None:
    """A WSI-only query with a held-out patient's slide files, as a new patient would come."""
    from casegraph.ingest.store import Store
    from casegraph.retrieval.query import QueryEngine, QueryOptions
    from casegraph.retrieval.report import print_result

    console.rule("8. WSI-only query: a newly arrived patient's slides, no genomics")
    query_patient = later[0]
    with Store.open(store_dir, read_only=True) as store:
        files = sorted(bags.glob(f"{query_patient}-S*.h5"))
        console.print(f"query: {[f.name for f in files]} (patient {query_patient} arrived "
                      "after training; its own case is left out of the answer)")
        result = QueryEngine(store).query(files, None, QueryOptions(k=8, exact=True))
    print_result(result)
    attached = [n.patient_id for n in result.neighbours if n.patient_id in set(later)]
    console.print(f"neighbours that arrived after training (attached): "
                  f"{', '.join(attached) if attached else 'none'}")


def _encoder(store: Any) -> str:
    slides = store.slides()
    return str(slides["encoder"].dropna().iloc[0])


def step_ingest(console: Console, store_dir: Path, inputs: Path, *, patches: int, dim: int,
                signal: float, seed: int) -> list[str]:
    """Ingest all but :data:`N_LATER` of fold 0's evaluation patients; those are written
    to ``inputs/batch-2`` and ``inputs/bags-2`` for the second batch. Returns their ids."""
    import pandas as pd

    from casegraph.cli.store_cmds import _print_report
    from casegraph.ingest.demo_data import write_demo_cohort
    from casegraph.ingest.info import store_summary
    from casegraph.ingest.pipeline import IngestRequest, ingest
    from casegraph.ingest.signatures import read_gene_groups
    from casegraph.ingest.simulate import simulate_bags
    from casegraph.ingest.splits import read_split_dir
    from casegraph.ingest.store import Store
    from casegraph.ingest.tables import read_mcat_table

    console.rule("1. ingest the first batch")
    files = write_demo_cohort(inputs, seed=seed)
    splits = read_split_dir(files.splits_dir)
    later = sorted(splits.folds[0][1])[:N_LATER]
    full = pd.read_csv(files.table)
    parts = {"batch-1": full[~full["case_id"].isin(later)], "batch-2": full[full["case_id"].isin(later)]}
    tables = {}
    for name, part in parts.items():
        (inputs / name).mkdir(parents=True, exist_ok=True)
        path = inputs / name / "tcga_demo_all_clean.csv"
        part.to_csv(path, index=False)
        tables[name] = read_mcat_table(path, "demo")
    for name, table in tables.items():
        bags = inputs / ("bags" if name == "batch-1" else "bags-2")
        simulate_bags(table.genomics, table.patient_ids, table.slide_lists(), bags,
                      n_patches=patches, dim=dim, signal=signal, seed=seed)
    request = IngestRequest(tables=[tables["batch-1"]],
                            gene_groups=[read_gene_groups(files.signatures)],
                            split_sets=[splits], bag_dirs=[inputs / "bags"],
                            encoder=f"simulator-{dim}d", seed=seed)
    with Store.open(store_dir) as store:
        _print_report(ingest(store, request))
        console.print(store_summary(store).render())
    return later
