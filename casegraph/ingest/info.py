"""A store summary for ``casegraph info``."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.table import Table

from casegraph.ingest.signatures import unique_gene_coverage
from casegraph.ingest.store import Store


@dataclass
class CohortSummary:
    name: str
    patients: int
    slides: int
    slides_with_features: int
    censoring_rate: float
    modalities: dict[str, int]  # modality -> patients with at least one value
    endpoints: list[str] = field(default_factory=lambda: ["OS"])  # OS, DSS, PFI, DFI held


@dataclass
class StoreSummary:
    root: str
    cohorts: list[CohortSummary]
    gene_group_sets: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    split_sets: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    model_versions: int = 0

    def render(self) -> Table:
        table = Table(title=f"casegraph store {self.root}")
        for col in ("cohort", "patients", "slides (with features)", "censored", "rna", "cnv", "mut",
                    "endpoints"):
            table.add_column(col)
        for c in self.cohorts:
            table.add_row(c.name, str(c.patients), f"{c.slides} ({c.slides_with_features})",
                          f"{c.censoring_rate:.1%}",
                          *(str(c.modalities.get(m, 0)) for m in ("rna", "cnv", "mut")),
                          " ".join(c.endpoints))
        caption = [f"{self.batches} ingest batches, {self.model_versions} model versions"]
        for name, (groups, covered, genes) in self.gene_group_sets.items():
            caption.append(f"gene groups {name!r}: {groups} groups, {covered} of {genes} "
                           "unique genes with features in the store")
        for name, folds in self.split_sets.items():
            caption.append(f"split set {name!r}: {folds} folds")
        table.caption = "\n".join(caption)
        return table


def store_summary(store: Store) -> StoreSummary:
    con = store.con
    cohorts = []
    endpoints = store.outcomes.endpoints()
    for name, patients, censored in con.execute(
        "SELECT cohort, count(*), avg(CASE WHEN event THEN 0.0 ELSE 1.0 END) FROM patients "
        "GROUP BY cohort ORDER BY cohort"
    ).fetchall():
        slides, with_features = con.execute(
            "SELECT count(*), count(feature_path) FROM slides WHERE cohort = ?", [name]
        ).fetchall()[0]
        cohorts.append(CohortSummary(name, int(patients), int(slides), int(with_features),
                                     float(censored), _modalities(store, name),
                                     endpoints.get(name, ["OS"])))
    features = store.feature_table()
    genes = set(features["gene"])
    group_sets = {}
    for name in store.gene_group_sets():
        groups = store.gene_groups(name)
        group_sets[name] = (len(groups), *unique_gene_coverage(groups, genes))
    splits = {name: len(store.splits(name)) for name in store.split_sets()}
    counts = store.counts()
    return StoreSummary(str(store.root), cohorts, group_sets, splits,
                        counts["ingest_batches"], counts["model_versions"])


def _modalities(store: Store, cohort: str) -> dict[str, int]:
    ids = list(store.patients(cohort)["patient_id"])
    if not ids:
        return {}
    _, names, present = store.genomic_matrix(ids)
    if not names:
        return {}
    features = store.feature_table()
    modality_of = dict(zip(features["name"], features["modality"], strict=True))
    out: dict[str, int] = {}
    for modality in ("rna", "cnv", "mut"):
        cols = [j for j, n in enumerate(names) if modality_of[n] == modality]
        if cols:
            out[modality] = int(present[:, cols].any(axis=1).sum())
    return out
