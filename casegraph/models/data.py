"""In-memory view of a cohort for modelling: targets, grouped genomics, bag references.

Built from the store once (:meth:`CohortData.from_store`), then sliced by fold with
:meth:`CohortData.subset`. Bags stay on disk and are read on demand (:meth:`load_bag`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from casegraph.ingest.bags import read_bag
from casegraph.ingest.store import Store
from casegraph.schema import Modality, SurvivalTarget

FloatArray = npt.NDArray[np.float32]
ALL_FEATURES = "all"  # pseudo group set: one group with every genomic feature
# (slide_ids, k, seed) -> {slide_id: (mean (D,), centres (k, D))}, e.g. Store.slide_summaries
SummaryLookup = Callable[
    [Sequence[str], int, int], dict[str, tuple[FloatArray, FloatArray]]
]


def group_columns(store: Store, names: Sequence[str], group_set: str,
                  modalities: tuple[Modality, ...] = (Modality.RNA, Modality.CNV, Modality.MUT)
                  ) -> list[tuple[str, list[int]]]:
    """(group, positions into ``names``) of every gene group of ``group_set`` that has
    features among ``names``: a group's features are every ``<gene>_{rnaseq,cnv,mut}`` of
    its genes in ``modalities``, ordered by feature name so the columns do not depend on
    ingest order; ``group_set="all"`` is one group of every feature. The one grouping rule
    of CV data (:meth:`CohortData.from_store`) and model versions (their InputSpec)."""
    if not names:
        return []
    feats = store.feature_table().set_index("name").loc[list(names)]
    wanted = {m.value for m in modalities}
    items: list[tuple[str, list[str] | None]] = (
        [(ALL_FEATURES, None)] if group_set == ALL_FEATURES
        else list(store.gene_groups(group_set).items()))
    out: list[tuple[str, list[int]]] = []
    for group, genes in items:
        gene_set = None if genes is None else set(genes)
        cols = [j for j, (gene, mod) in enumerate(zip(feats["gene"], feats["modality"],
                                                      strict=True))
                if (gene_set is None or gene in gene_set) and mod in wanted]
        cols.sort(key=lambda j: names[j])
        if cols:
            out.append((group, cols))
    return out


@dataclass
class CohortData:
    """n patients of one or more cohorts.

    ``genomics[j]`` is the (n, g_j) float32 matrix of gene group ``groups[j]`` (raw values;
    fold-wise preprocessing happens in the models layer). ``bags[i]`` lists the feature files
    of patient i's slides (possibly empty). ``attributes[i]`` holds extra table columns.
    ``slide_ids[i]`` names those slides (parallel to ``bags[i]``; empty list when unknown)
    and ``summaries`` looks up the store's precomputed per-slide summaries (None if none).
    """

    patient_ids: list[str]
    target: SurvivalTarget
    groups: list[str]
    genomics: list[FloatArray]
    bags: list[list[Path]]
    cohorts: list[str]
    attributes: list[dict[str, object]] = field(default_factory=list)
    slide_ids: list[list[str]] = field(default_factory=list)
    summaries: SummaryLookup | None = field(default=None, repr=False, compare=False)
    endpoint: str = "OS"  # which outcome ``target`` holds: OS, DSS, PFI or DFI
    labels: npt.NDArray[np.int64] | None = None  # classification: (n,) class codes
    label_classes: list[str] = field(default_factory=list)  # code -> class name (sorted)

    def __len__(self) -> int:
        return len(self.patient_ids)

    def subset(self, index: npt.ArrayLike) -> CohortData:
        idx = np.asarray(index, dtype=np.int64)
        return replace(
            self,
            patient_ids=[self.patient_ids[i] for i in idx],
            target=self.target[idx],
            genomics=[g[idx] for g in self.genomics],
            bags=[self.bags[i] for i in idx],
            cohorts=[self.cohorts[i] for i in idx],
            attributes=[self.attributes[i] for i in idx] if self.attributes else [],
            slide_ids=[self.slide_ids[i] for i in idx] if self.slide_ids else [],
            labels=None if self.labels is None else self.labels[idx],
        )

    def select(self, patient_ids: list[str]) -> CohortData:
        pos = {p: i for i, p in enumerate(self.patient_ids)}
        return self.subset([pos[p] for p in patient_ids])

    def with_endpoint(self, store: Store, endpoint: str, cohort: str | None = None
                      ) -> CohortData:
        """These patients with ``endpoint``'s outcome (of ``cohort``, or any cohort) as the
        target, those without a value left out; an InputError naming the cohort and its
        endpoints when it has none."""
        if endpoint.upper() == self.endpoint:
            return self
        outcomes = store.outcomes.of(endpoint, cohort).set_index("patient_id")
        kept = self.select([p for p in self.patient_ids if p in outcomes.index])
        chosen = outcomes.loc[kept.patient_ids]
        target = SurvivalTarget.from_arrays(chosen["time"].to_numpy(dtype=np.float64),
                                            chosen["event"].to_numpy(dtype=bool), source="store")
        return replace(kept, target=target, endpoint=endpoint.upper())

    @property
    def group_sizes(self) -> list[int]:
        return [int(g.shape[1]) for g in self.genomics]

    def genomics_flat(self) -> FloatArray:
        if not self.genomics:
            return np.zeros((len(self), 0), dtype=np.float32)
        return np.concatenate(self.genomics, axis=1)

    def has_bags(self) -> bool:
        return any(self.bags)

    def load_bag(self, i: int) -> FloatArray:
        """All patches of patient i's slides stacked: (N_total, D) float32."""
        parts = [read_bag(p).features for p in self.bags[i]]
        if not parts:
            raise ValueError(f"patient {self.patient_ids[i]} has no slides")
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    @classmethod
    def from_store(
        cls,
        store: Store,
        cohort: str | None = None,
        group_set: str = "mcat",
        modalities: tuple[Modality, ...] = (Modality.RNA, Modality.CNV, Modality.MUT),
        require_slides: bool = False,
        endpoint: str = "OS",
        label: str | None = None,
    ) -> CohortData:
        """Load patients of ``cohort`` (all cohorts if None) with genomics grouped by
        ``group_set``: a group's features are every ``<gene>_{rnaseq,cnv,mut}`` the store
        holds for a gene of that group (the MCAT convention), restricted to ``modalities``.
        Groups with no feature for these patients are dropped. ``group_set="all"`` gives
        one group holding every genomic feature (MCAT's SNN baseline uses them all).
        ``endpoint`` picks the outcome (``store.outcomes``): patients without a value for
        it are left out; a cohort without it is an InputError naming what it has.
        ``label`` (a table column kept at ingest) gives ``labels`` / ``label_classes``;
        patients without a value in it are left out.
        """
        outcomes = store.outcomes.of(endpoint, cohort).set_index("patient_id")
        patients = store.patients(cohort)
        patients = patients[patients["patient_id"].isin(set(outcomes.index))]
        label_of: dict[str, str] = {}
        if label is not None:
            found = store.outcomes.labels(label, cohort)
            label_of = dict(zip(found["patient_id"], found["label"], strict=True))
            patients = patients[patients["patient_id"].isin(set(label_of))]
        slides = store.slides(cohort)
        if require_slides:
            patients = patients[patients["patient_id"].isin(set(slides["patient_id"]))]
        ids = list(patients["patient_id"])
        matrix, names, _present = store.genomic_matrix(ids)
        groups: list[str] = []
        genomics: list[FloatArray] = []
        for group, cols in group_columns(store, names, group_set, modalities):
            groups.append(group)
            genomics.append(np.ascontiguousarray(matrix[:, cols]))
        by_patient: dict[str, list[Path]] = {p: [] for p in ids}
        slide_ids: dict[str, list[str]] = {p: [] for p in ids}
        for pid, sid, path in zip(slides["patient_id"], slides["slide_id"],
                                  slides["feature_path"], strict=True):
            if pid in by_patient and path:
                by_patient[pid].append(Path(path))
                slide_ids[pid].append(str(sid))
        chosen = outcomes.loc[ids]
        codes, classes = _coded_labels([label_of[p] for p in ids] if label is not None
                                       else None)
        target = SurvivalTarget.from_arrays(
            chosen["time"].to_numpy(dtype=np.float64), chosen["event"].to_numpy(dtype=bool),
            source="store")
        return cls(
            patient_ids=ids,
            target=target,
            groups=groups,
            genomics=genomics,
            bags=[by_patient[p] for p in ids],
            cohorts=list(patients["cohort"]),
            attributes=list(patients["attributes"]),
            slide_ids=[slide_ids[p] for p in ids],
            summaries=store.slide_summaries,
            endpoint=endpoint.upper(),
            labels=codes, label_classes=classes,
        )


def _coded_labels(names: list[str] | None
                  ) -> tuple[npt.NDArray[np.int64] | None, list[str]]:
    """(codes 0..C-1 by sorted class name, the class names) of these names."""
    if names is None:
        return None, []
    classes = sorted(set(names))
    code = {c: i for i, c in enumerate(classes)}
    return np.array([code[n] for n in names], dtype=np.int64), classes
