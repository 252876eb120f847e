"""Attach new store patients to a trained model version, inductively (no retraining).

``attach_patients(store, V)`` takes every store patient of V's cohort that V (and its
lineage) has not seen and writes a *derived* version V' (parent V; the ingest batches it
covers; counts) holding only the new rows, so V stays byte-identical:

- MSRL versions: each new patient is answered exactly as ``casegraph query --patient``
  answers it against V (same engine, same options: top-K = the version's graph K): its
  neighbours among V's reference cases in V's learned metric become its ``SIMILAR_TO``
  rows; its prediction is the model's own (the buffer graph, as the trained version's
  stored predictions); its WSI embedding h and — when the store holds authentic genomics
  for it — its authentic fused features f = [g, h] are stored, and those patients join
  V''s reference cases. Patients without authentic genomics are marked ``inferred``
  (MSRL's Inductor prompt stood in for them).
- ``refresh_buffer``: new patients with both authentic modalities enter V''s buffer at
  the tail, oldest members out (MSRL's FIFO), recorded as counts buffer_in / buffer_out.
- other model families: predictions and embeddings of the new patients.

A patient the version's inputs (its InputSpec) cannot take (no slides for a WSI model,
another patch feature dim, no genomics for a genomics model) is an error naming the patient and the
mismatch, and nothing is written — unless ``skip_unfit``, which attaches the others and
lists the skipped ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from casegraph.errors import InputError
from casegraph.faults import crash_point
from casegraph.ingest.store import Store
from casegraph.ingest.versions import ModelVersion, NewVersion, PredictionRows
from casegraph.models.data import CohortData
from casegraph.models.versioning import cohort_with_misfits, is_msrl, msrl_inputs
from casegraph.retrieval.options import QueryOptions
from casegraph.retrieval.query import QueryEngine


@dataclass
class AttachReport:
    parent_id: str
    version_id: str | None = None  # None: nothing to attach
    attached: list[str] = field(default_factory=list)
    inferred: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    buffer_in: int = 0
    buffer_out: int = 0
    edges: int = 0
    batches: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        if self.version_id is None:
            return (f"nothing to attach: every patient of {self.parent_id}'s cohort is "
                    "already covered" + (f" ({len(self.skipped)} skipped)" if self.skipped
                                         else ""))
        return (f"derived version {self.version_id} from {self.parent_id}: "
                f"{len(self.attached)} patients attached ({self.inferred} with inferred "
                f"genomics), {self.edges} neighbour edges, buffer +{self.buffer_in}/"
                f"-{self.buffer_out}, {len(self.skipped)} skipped, {self.seconds:.1f} s")


def attach_patients(store: Store, version_id: str, *, refresh_buffer: bool = False,
                    skip_unfit: bool = False,
                    log: Callable[[str], None] = lambda _m: None) -> AttachReport:
    """Write the derived version of ``version_id`` covering its unseen patients."""
    started = time.perf_counter()
    version = store.versions.get(version_id)
    report = AttachReport(parent_id=version_id)
    candidates = _unseen_of_cohort(store, version)
    if not candidates:
        report.seconds = time.perf_counter() - started
        return report
    if not is_msrl(version.model):
        from casegraph.retrieval.attach_generic import attach_generic

        return attach_generic(store, version, candidates, report, skip_unfit, started)
    return _attach_msrl(store, version, candidates, report, refresh_buffer, skip_unfit,
                        started, log)


def _unseen_of_cohort(store: Store, version: ModelVersion) -> list[str]:
    return store.versions.unseen_patients(version.version_id, version.cohort)


def fitting(candidates: list[str], problems: dict[str, str], version_id: str,
            skip_unfit: bool, report: AttachReport) -> list[str]:
    """The candidates the version can read; the others are refused (nothing written) or,
    with ``skip_unfit``, recorded in ``report.skipped``."""
    if problems and not skip_unfit:
        refuse_unfit(version_id, problems)
    report.skipped = sorted(problems.items())
    return [p for p in candidates if p not in problems]


def refuse_unfit(version_id: str, problems: dict[str, str]) -> None:
    first = sorted(problems)[0]
    more = f" (and {len(problems) - 1} more patients)" if len(problems) > 1 else ""
    raise InputError(f"cannot attach patient {first} to version {version_id}: it "
                     f"{problems[first]}{more}; nothing was written", column="patient_id",
                     fix="ingest matching features, or pass --skip-unfit to attach the others")


def _attach_msrl(store: Store, version: ModelVersion, candidates: list[str],
                 report: AttachReport, refresh_buffer: bool, skip_unfit: bool,
                 started: float, log: Callable[[str], None]) -> AttachReport:
    from casegraph.models.msrl.artifacts import (
        authentic_rows,
        save_derived_buffer,
        store_embeddings,
    )

    engine = QueryEngine(store)
    model = engine.model(version.version_id)
    _, problems = cohort_with_misfits(store, candidates,
                                      msrl_inputs(store, version.version_id, model))
    ids = fitting(candidates, problems, version.version_id, skip_unfit, report)
    if not ids:
        report.seconds = time.perf_counter() - started
        return report
    data = _cohort(store, model, version, ids)
    emb = store_embeddings(model, data)
    authentic = authentic_rows(store, model, ids)
    prediction = model.predict(data)
    neighbours = _query_neighbours(engine, version.version_id, ids, int(model.config.k), log)
    fused_ids = [p for p, a in zip(ids, authentic, strict=True) if a]
    fused = emb["fused"][torch.from_numpy(authentic)]
    buffer = model.buffer_
    if refresh_buffer and fused_ids:
        before = set(buffer.ids)
        buffer = type(buffer).from_state(buffer.ids, buffer.features, capacity=buffer.capacity)
        buffer.enqueue(fused_ids, fused)
        report.buffer_in = len(set(buffer.ids) - before)
        report.buffer_out = len(before - set(buffer.ids))
    embeddings = {k: (ids, v.numpy()) for k, v in emb.items() if k != "fused"}
    embeddings["fused"] = (fused_ids, fused.numpy())
    report.attached, report.inferred = ids, int((~authentic).sum())
    report.edges = len(neighbours)
    report.batches = store.versions.batches_since(version.version_id)
    new = NewVersion(
        model=version.model, cohort=version.cohort,
        config={**version.config, "attached_to": version.version_id,
                "refresh_buffer": refresh_buffer},
        metrics={}, parent_id=version.version_id, batches=report.batches,
        predictions=PredictionRows(ids, prediction.risk, prediction.survival, ~authentic),
        bin_edges=version.bin_edges, embeddings=embeddings, neighbours=neighbours,
        buffer=buffer.ids,
        counts={"attached": len(ids), "inferred": report.inferred,
                "skipped": len(report.skipped), "buffer_in": report.buffer_in,
                "buffer_out": report.buffer_out})
    features = buffer.features
    report.version_id = store.versions.create(
        new, write_files=lambda folder: save_derived_buffer(folder, features))
    crash_point("attach.after_version")
    report.seconds = time.perf_counter() - started
    return report


def _cohort(store: Store, model: Any, version: ModelVersion, ids: list[str]) -> CohortData:
    data = CohortData.from_store(store, version.cohort, group_set=model.config.group_set,
                                 require_slides=True).select(ids)
    if model.config.uses_genomics and data.group_sizes != list(model.group_sizes_):
        raise InputError(
            f"cannot attach patient {ids[0]} to version {version.version_id}: the store's "
            f"{model.config.group_set!r} gene groups now have sizes {data.group_sizes}, the "
            f"version was trained on {list(model.group_sizes_)}; nothing was written",
            column="group_set", fix="attach to a version trained on the current gene groups")
    return data


def _query_neighbours(engine: QueryEngine, version_id: str, ids: list[str], k: int,
                      log: Callable[[str], None]) -> pd.DataFrame:
    """Each patient's neighbours exactly as ``casegraph query --patient`` returns them."""
    options = QueryOptions(k=k, method="msrl", model_version=version_id)
    rows: list[tuple[str, str, int, float]] = []
    for count, pid in enumerate(ids, start=1):
        result = engine.similar(pid, options)
        rows += [(pid, n.patient_id, n.rank, float(n.weight)) for n in result.neighbours]
        if count % 500 == 0:
            log(f"  {count}/{len(ids)} patients answered")
    frame = pd.DataFrame(rows, columns=["patient_id", "neighbour_id", "rank", "weight"])
    frame["rank"] = frame["rank"].astype(np.int32)
    return frame
