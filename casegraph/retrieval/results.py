"""The pydantic models a query returns (also the REST service's response schemas)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from casegraph.retrieval.track_record import MethodChoice, TrackRecord

Provenance = Literal["authentic", "simulated", "inferred", "absent", "unknown"]
Method = Literal["msrl-gsl", "wsi-model", "embedding-knn"]


class GroupSummary(BaseModel):
    """One gene group of one patient: mean RNA z-score, mean CNV, number of mutated genes
    (None where the store holds no value of that modality for the group)."""

    rna_mean: float | None = None
    cnv_mean: float | None = None
    n_mutated: int | None = None


class Neighbour(BaseModel):
    """A similar historical patient, its edge to the query and its outcome."""

    rank: int = Field(description="1 = most similar")
    patient_id: str
    cohort: str
    similarity: float = Field(description="cosine similarity of the embeddings")
    weight: float = Field(description="edge weight (sums to 1 over the neighbours)")
    time: float = Field(description="follow-up time (months)")
    event: bool = Field(description="True = death observed, False = censored")
    oncotree_code: str | None = None
    genomics: Provenance = Field(description="provenance of this patient's genomics")
    histology: Provenance = Field(description="provenance of this patient's slides")
    genomic_groups: dict[str, GroupSummary] = Field(
        default_factory=dict, description="per gene group summaries of authentic genomics")


class SurvivalCurve(BaseModel):
    """Predicted S(t) at the end of each time bin (``times[j]`` = end of bin j, months)."""

    times: list[float]
    survival: list[float]


class KaplanMeier(BaseModel):
    """Kaplan-Meier estimate of the neighbourhood: S just after each distinct time."""

    times: list[float]
    survival: list[float]
    at_risk: list[int]
    events: list[int]
    weighted: bool = False
    median_survival: float | None = Field(None, description="None when S never drops to 0.5")


class InputProvenance(BaseModel):
    """Where one input of the query came from."""

    name: str
    modality: Literal["histology", "genomics"]
    status: Provenance
    detail: str = ""


class IndexInfo(BaseModel):
    version_id: str
    kind: str
    type: str
    n: int
    params: dict[str, float | int | str] = Field(default_factory=dict)


class QueryResult(BaseModel):
    """The answer to a WSI-only query."""

    method: Method
    fallback_reason: str | None = Field(
        None, description="why the model-free fallback answered (None when MSRL did)")
    model_version: str | None = None
    query_patient_id: str | None = None
    query_files: list[str] = Field(default_factory=list)
    n_patches: int
    risk: float = Field(description="higher = worse prognosis (-sum of S over the bins)")
    survival: SurvivalCurve
    neighbours: list[Neighbour]
    neighbourhood_km: KaplanMeier
    inputs: list[InputProvenance]
    index: IndexInfo
    n_candidates: int = Field(description="FAISS candidates the prediction considered")
    filters: dict[str, str | list[str] | bool | None] = Field(default_factory=dict)
    persisted_to_graph: bool = False
    notes: list[str] = Field(default_factory=list)
    track_record: TrackRecord | None = Field(
        default=None, description="the answering method's validated performance on its cohort, "
                          "its baseline's, and this answer's calibration")
    method_choice: MethodChoice | None = Field(
        default=None, description="method auto: which method answered for the cohort, and why")


class PatientRecord(BaseModel):
    patient_id: str
    cohort: str
    case_id: str
    time: float
    event: bool
    oncotree_code: str | None = None
    n_slides: int
    genomics: Provenance
    histology: Provenance
    attributes: dict[str, str | float | int | bool | None] = Field(default_factory=dict)


class CohortRecord(BaseModel):
    name: str
    source: str | None = None
    n_patients: int
    n_with_slides: int
    n_with_genomics: int
    censoring_rate: float | None = None
