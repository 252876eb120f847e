"""Tiny synthetic cohorts with a planted signal (shared by the model tests)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from casegraph.ingest.store import Store
from casegraph.models.data import CohortData
from casegraph.schema import SurvivalTarget


def planted_cohort(n: int = 120, seed: int = 0, bag_dir: Path | None = None,
                   n_patches: int = 30, dim: int = 8) -> CohortData:
    """Two gene groups (5 + 3 features); risk = 1.5 * (g0[:,0] - g1[:,0]); ~30 % censored.

    With ``bag_dir``, each patient gets one slide whose patches carry the risk in
    feature 0 of a few "tumour" patches (the rest is noise).
    """
    rng = np.random.default_rng(seed)
    g0 = rng.normal(size=(n, 5)).astype(np.float32)
    g1 = rng.normal(size=(n, 3)).astype(np.float32)
    risk = 1.5 * (g0[:, 0] - g1[:, 0])
    event_time = rng.exponential(np.exp(-risk)) * 20
    censor_time = rng.exponential(40, size=n)
    time = np.minimum(event_time, censor_time)
    event = event_time <= censor_time
    ids = [f"P{i:03d}" for i in range(n)]
    bags: list[list[Path]] = [[] for _ in range(n)]
    if bag_dir is not None:
        bag_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            feats = rng.normal(size=(n_patches, dim)).astype(np.float32)
            feats[: n_patches // 3, 0] += 2.0 * risk[i]
            path = bag_dir / f"{ids[i]}-S0.h5"  # named by slide id
            with h5py.File(path, "w") as f:
                f["features"] = feats
                f["coords"] = np.zeros((n_patches, 2), dtype=np.int64)
            bags[i] = [path]
    return CohortData(
        patient_ids=ids,
        target=SurvivalTarget.from_arrays(time, event),
        groups=["g0", "g1"],
        genomics=[g0, g1],
        bags=bags,
        cohorts=["synth"] * n,
    )



def write_to_store(store: Store, data: CohortData, cohort: str = "synth",
                   n_folds: int = 3) -> None:
    """Ingest a synthetic cohort (patients, genomics as RNA features, groups "mcat", the
    split set "mcat" with patient i evaluated in fold i % n_folds, and its bags if any)."""
    from casegraph.ingest.pipeline import IngestRequest, ingest
    from casegraph.ingest.signatures import GeneGroups
    from casegraph.ingest.splits import SplitSet
    from casegraph.ingest.tables import CohortTable

    genes = [f"{g.upper()}G{k}" for g, m in zip(data.groups, data.genomics, strict=True)
             for k in range(m.shape[1])]
    slides = [(f"{pid}-S{j}", pid) for pid, bags in zip(data.patient_ids, data.bags, strict=True)
              for j in range(len(bags))]
    table = CohortTable(
        source=Path("synthetic.csv"), cohort=cohort, patient_ids=list(data.patient_ids),
        time=data.target.time, event=data.target.event,
        attributes=[{} for _ in data.patient_ids], slides=slides,
        feature_names=[f"{g}_rnaseq" for g in genes], feature_genes=genes,
        feature_modalities=["rna"] * len(genes), genomics=data.genomics_flat())
    groups = GeneGroups(group_set="mcat", source=Path("signatures.csv"), groups={
        g: [f"{g.upper()}G{k}" for k in range(m.shape[1])]
        for g, m in zip(data.groups, data.genomics, strict=True)})
    folds = {f: ([p for i, p in enumerate(data.patient_ids) if i % n_folds != f],
                 [p for i, p in enumerate(data.patient_ids) if i % n_folds == f])
             for f in range(n_folds)}
    bag_dirs = sorted({path.parent for bags in data.bags for path in bags})
    ingest(store, IngestRequest(tables=[table], gene_groups=[groups],
                                split_sets=[SplitSet("mcat", Path("splits"), folds)],
                                bag_dirs=bag_dirs))


def ingested_sim_store(tmp_path: Path, n_patients: int, n_patches: int, dim: int, seed: int,
                       multi_slide: float) -> Store:
    """A store holding a simulated cohort ("sim": table, "mcat" groups and splits, bags)."""
    from casegraph.ingest.pipeline import IngestRequest, ingest
    from casegraph.ingest.signatures import read_gene_groups
    from casegraph.ingest.simulate import BagSettings
    from casegraph.ingest.splits import read_split_dir
    from casegraph.ingest.synthetic import simulate_cohort
    from casegraph.ingest.tables import read_mcat_table

    sim = simulate_cohort(n_patients, tmp_path / "sim", n_genes=18, multi_slide=multi_slide,
                          seed=seed, settings=BagSettings(n_patches=n_patches, dim=dim, seed=seed))
    store = Store.open(tmp_path / "store")
    ingest(store, IngestRequest(
        tables=[read_mcat_table(sim.table_path, "sim")],
        gene_groups=[read_gene_groups(sim.signatures_path, "mcat")],
        split_sets=[read_split_dir(sim.splits_dir, "mcat")],
        bag_dirs=[sim.bags_dir], encoder="simulator"))
    return store
