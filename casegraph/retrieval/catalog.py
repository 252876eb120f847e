"""What retrieval needs to know about the stored patients, read once per store.

Provenance rules (from the store's own records):
- histology is *absent* when none of the patient's slides has a feature file (slides
  listed in the table without an ingested bag carry no histology), else *simulated* when
  such a slide's ``encoder`` names the simulator (contains "simul" or "synthetic"), else
  *authentic*;
- genomics is *absent* without genomic values, *simulated* when the patient's cohort
  ``source`` names a simulator or a synthetic cohort, *authentic* otherwise.
The case of a patient is its ``source_id`` (the table's case id) or else its patient id:
two patients of one case are never each other's neighbours.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from casegraph.errors import InputError
from casegraph.ingest.store import Store
from casegraph.retrieval.results import (
    CohortRecord,
    GroupSummary,
    PatientRecord,
    Provenance,
)

MODALITY_FILTERS = ("genomics", "histology")


def is_simulated_marker(text: object) -> bool:
    value = str(text or "").lower()
    return "simul" in value or "synthetic" in value


@dataclass
class PatientCatalog:
    """One row per stored patient (index = patient_id): cohort, case_id, time, event,
    oncotree_code, n_slides, n_featured (slides with a feature file), genomics, histology
    (provenance strings), attributes."""

    table: pd.DataFrame
    cohort_sources: dict[str, str | None]

    @classmethod
    def from_store(cls, store: Store) -> PatientCatalog:
        patients = store.patients()
        slides = store.slides()
        sources = store.cohort_sources()
        with_genomics = set(store.patient_ids_with_genomics())
        n_slides = slides.groupby("patient_id").size()
        featured = slides[slides["feature_path"].notna()]
        n_featured = featured.groupby("patient_id").size()
        simulated = featured.assign(sim=featured["encoder"].map(is_simulated_marker)) \
            .groupby("patient_id")["sim"].any()
        table = pd.DataFrame({
            "patient_id": patients["patient_id"].astype(str),
            "cohort": patients["cohort"].astype(str),
            "case_id": [str(s) if isinstance(s, str) and s else str(p)
                        for p, s in zip(patients["patient_id"], patients["source_id"],
                                        strict=True)],
            "time": patients["time"].astype(float),
            "event": patients["event"].astype(bool),
            "attributes": patients["attributes"],
        }).set_index("patient_id", drop=False)
        table["oncotree_code"] = [_oncotree(a) for a in table["attributes"]]
        table["n_slides"] = [int(n_slides.get(p, 0)) for p in table.index]
        table["n_featured"] = [int(n_featured.get(p, 0)) for p in table.index]
        table["histology"] = [
            "absent" if not table.at[p, "n_featured"] else
            ("simulated" if bool(simulated.get(p, False)) else "authentic")
            for p in table.index]
        table["genomics"] = [
            "absent" if p not in with_genomics else
            ("simulated" if is_simulated_marker(sources.get(c)) else "authentic")
            for p, c in zip(table.index, table["cohort"], strict=True)]
        return cls(table, sources)

    def __contains__(self, patient_id: object) -> bool:
        return patient_id in self.table.index

    def require(self, patient_id: str) -> pd.Series:
        if patient_id not in self.table.index:
            raise InputError(f"unknown patient {patient_id!r}", column="patient_id",
                             fix="use an id listed by `casegraph info` or GET /cohorts")
        return self.table.loc[patient_id]

    def same_case(self, patient_id: str) -> set[str]:
        """The patient itself and every other patient of its case."""
        if patient_id not in self.table.index:
            return {patient_id}
        case = self.table.at[patient_id, "case_id"]
        return set(self.table.index[self.table["case_id"] == case]) | {patient_id}

    def allowed(self, cohorts: Sequence[str] | None = None,
                require: Collection[str] = ()) -> set[str] | None:
        """Ids passing the cohort and modality filters (None = no restriction).

        ``require``: modalities that must be *authentic* ("genomics", "histology").
        """
        unknown = sorted(set(require) - set(MODALITY_FILTERS))
        if unknown:
            raise InputError(f"unknown modality filter {unknown[0]!r}", column="require",
                             fix=f"choose among: {', '.join(MODALITY_FILTERS)}")
        if not cohorts and not require:
            return None
        mask = np.ones(len(self.table), dtype=bool)
        if cohorts:
            missing = sorted(set(cohorts) - set(self.table["cohort"]))
            if missing:
                raise InputError(f"unknown cohort {missing[0]!r}", column="cohort",
                                 fix="choose among: " + ", ".join(sorted(set(self.table["cohort"]))))
            mask &= self.table["cohort"].isin(list(cohorts)).to_numpy()
        for modality in require:
            mask &= (self.table[modality] == "authentic").to_numpy()
        return set(self.table.index[mask])

    def record(self, patient_id: str) -> PatientRecord:
        row = self.require(patient_id)
        attrs = {str(k): v for k, v in dict(row["attributes"]).items()
                 if v is None or isinstance(v, str | int | float | bool)}
        return PatientRecord(
            patient_id=patient_id, cohort=row["cohort"], case_id=row["case_id"],
            time=float(row["time"]), event=bool(row["event"]),
            oncotree_code=row["oncotree_code"], n_slides=int(row["n_slides"]),
            genomics=_prov(row["genomics"]), histology=_prov(row["histology"]),
            attributes={k: _finite_or_none(v) for k, v in attrs.items()})

    def cohort_records(self) -> list[CohortRecord]:
        out = []
        for name, rows in self.table.groupby("cohort", sort=True):
            out.append(CohortRecord(
                name=str(name), source=self.cohort_sources.get(str(name)),
                n_patients=len(rows), n_with_slides=int((rows["n_slides"] > 0).sum()),
                n_with_genomics=int((rows["genomics"] != "absent").sum()),
                censoring_rate=float(1.0 - rows["event"].mean()) if len(rows) else None))
        return out


def genomic_group_summaries(
    store: Store, patient_ids: Sequence[str], group_set: str | None = None
) -> dict[str, dict[str, GroupSummary]]:
    """patient id -> gene group -> summary of that patient's stored genomic values."""
    sets = store.gene_group_sets()
    if not patient_ids or not sets:
        return {p: {} for p in patient_ids}
    chosen = group_set if group_set in sets else ("mcat" if "mcat" in sets else sets[0])
    groups = store.gene_groups(chosen)
    matrix, names, present = store.genomic_matrix(list(patient_ids))
    features = store.feature_table().set_index("name")
    genes = [str(features.at[n, "gene"]) for n in names]
    modality = np.array([str(features.at[n, "modality"]) for n in names])
    out: dict[str, dict[str, GroupSummary]] = {}
    for row, pid in enumerate(patient_ids):
        summaries = {}
        for group, members in groups.items():
            in_group = np.isin(genes, members) & present[row]
            if in_group.any():
                summaries[group] = _summarise(matrix[row], in_group, modality)
        out[pid] = summaries
    return out


def _summarise(values: np.ndarray, in_group: np.ndarray, modality: np.ndarray) -> GroupSummary:
    def pick(m: str) -> np.ndarray:
        return values[in_group & (modality == m)]

    rna, cnv, mut = pick("rna"), pick("cnv"), pick("mut")
    return GroupSummary(
        rna_mean=float(np.clip(rna, -10, 10).mean()) if rna.size else None,
        cnv_mean=float(cnv.mean()) if cnv.size else None,
        n_mutated=int((mut > 0.5).sum()) if mut.size else None,
    )


def _oncotree(attributes: object) -> str | None:
    if not isinstance(attributes, dict):
        return None
    value = attributes.get("oncotree_code")
    return str(value) if isinstance(value, str) and value else None


def _prov(value: str) -> Provenance:
    return value  # type: ignore[return-value]


def _finite_or_none(value: object) -> str | float | int | bool | None:
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value  # type: ignore[return-value]
