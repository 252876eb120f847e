"""Attach for model families without a case graph (snn, coxnet, abmil, late_fusion,
murrenet, ccl): the new patients' predictions and embeddings (for fusion models the
``fused`` index of the version), read with exactly the version's inputs."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from casegraph.ingest.store import Store
from casegraph.ingest.versions import ModelVersion, NewVersion, PredictionRows
from casegraph.models.versioning import cohort_with_misfits, embedding_kind, load_version

if TYPE_CHECKING:
    from casegraph.retrieval.attach import AttachReport


def attach_generic(store: Store, version: ModelVersion, candidates: list[str],
                   report: AttachReport, skip_unfit: bool, started: float) -> AttachReport:
    from casegraph.retrieval.attach import fitting

    model, spec = load_version(store, version.version_id)
    data, problems = cohort_with_misfits(store, candidates, spec)
    ids = fitting(candidates, problems, version.version_id, skip_unfit, report)
    if not ids:
        report.seconds = time.perf_counter() - started
        return report
    prediction = model.predict(data.select(ids))
    embeddings = {}
    if prediction.embedding is not None and prediction.embedding.shape[1] > 0:
        embeddings[embedding_kind(model)] = (ids, np.asarray(prediction.embedding, np.float32))
    report.attached = ids
    report.batches = store.versions.batches_since(version.version_id)
    report.version_id = store.versions.create(NewVersion(
        model=version.model, cohort=version.cohort,
        config={**version.config, "attached_to": version.version_id},
        parent_id=version.version_id, batches=report.batches,
        predictions=PredictionRows(ids, prediction.risk, prediction.survival),
        bin_edges=version.bin_edges, embeddings=embeddings,
        counts={"attached": len(ids), "inferred": 0, "skipped": len(report.skipped)}))
    report.seconds = time.perf_counter() - started
    return report
