"""Plain records the graph is made of, shared by every GraphStore backend."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PatientRecord:
    """A ``:Patient`` node. ``modalities``: the authentic (measured, not imputed) ones, e.g.
    ``("cnv", "rna", "wsi")``; ``splits``: memberships as ``"<split set>/<fold>/<role>"``."""

    patient_id: str
    cohort: str
    time: float
    event: bool
    modalities: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()


@dataclass(frozen=True)
class SlideRecord:
    """A ``:Slide`` node, linked ``(:Patient)-[:HAS_SLIDE]->(:Slide)``."""

    slide_id: str
    patient_id: str
    n_patches: int | None = None
    encoder: str | None = None


@dataclass(frozen=True)
class ModelVersionRecord:
    """A ``:ModelVersion`` node. ``params`` and ``metrics`` are JSON text. ``parent_id``: the
    version it derives from (``(:ModelVersion)-[:DERIVED_FROM]->(:ModelVersion)``, written
    when both nodes exist); ``batches``: the ingest batches its own rows cover."""

    version_id: str
    model: str
    cohort: str | None
    created: str
    params: str = "{}"
    metrics: str = "{}"
    parent_id: str | None = None
    batches: tuple[str, ...] = ()


@dataclass(frozen=True)
class SimilarEdge:
    """``(:Patient {patient_id})-[:SIMILAR_TO {weight, rank, model_version}]->(:Patient)``."""

    patient_id: str
    neighbour_id: str
    rank: int
    weight: float


@dataclass(frozen=True)
class PredictionRecord:
    """``(:Patient)-[:PREDICTED {risk, survival, inferred}]->(:ModelVersion)``: one version's
    own prediction for a patient. ``survival``: S(t) at the end of each bin of the version's
    ``bin_edges`` (None for risk-only models); ``inferred``: genomics inferred, not given."""

    patient_id: str
    risk: float
    survival: tuple[float, ...] | None = None
    inferred: bool = False


@dataclass(frozen=True)
class BufferEntry:
    """``(:Patient)-[:IN_BUFFER {position}]->(:ModelVersion)``; position 0 = oldest."""

    patient_id: str
    position: int


@dataclass(frozen=True)
class Neighbour:
    """One answer row of :meth:`GraphStore.neighbours`."""

    patient_id: str
    rank: int
    weight: float
    cohort: str
    time: float
    event: bool
    modalities: tuple[str, ...]


@dataclass
class GraphStats:
    """Counts by node label and relationship type, and the model versions present."""

    nodes: dict[str, int] = field(default_factory=dict)
    relationships: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)  # version id -> SIMILAR_TO edges


@dataclass(frozen=True)
class GraphDump:
    """The whole graph as canonical sets, to compare two graphs (tests, backends)."""

    cohorts: frozenset[str]
    patients: frozenset[PatientRecord]
    slides: frozenset[SlideRecord]
    versions: frozenset[str]
    similar: frozenset[tuple[str, str, str, int, float]]  # version, patient, neighbour, rank, w
    buffer: frozenset[tuple[str, str, int]]  # version, patient, position
    query_cases: frozenset[tuple[str, str, str, int, float]]  # case, version, neighbour, rank, w
    # version, patient, risk, survival (rounded), inferred
    predictions: frozenset[tuple[str, str, float, tuple[float, ...] | None, bool]] = frozenset()
    derived_from: frozenset[tuple[str, str]] = frozenset()  # child version, parent version
    synced_batches: frozenset[str] = frozenset()  # ingest batches whose patients are written
