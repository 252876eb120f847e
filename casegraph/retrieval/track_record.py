"""Every WSI-only answer carries its track record; ``method=auto`` picks by it.

A *track record* is the cross-validated performance of the method that answered, on its
cohort, from the store's finished CV runs (``store.cv_results``): Harrell's C, Uno's C and
the IBS (mean, sd over folds, n folds), beside the simplest WSI-only baseline's (ABMIL
with mean pooling) under the same folds, and a calibration note for this answer (the
neighbourhood Kaplan-Meier curve with its 95% band at the answer's time points against
the predicted curve). Nothing is invented: without a finished run the record says so in
one line and names the command that makes one.

Which run backs a method (docs/retrieval.md, *Track record*):

- a model version: the run ``casegraph versions track-record V`` recorded for it (its data
  fingerprint checked then), else the newest finished run of the same model, effective
  options (the options a fitted model reports, seeds and runtime options aside), cohort,
  group set and split set (the version's split set when the store holds it, else the
  seeded k-fold);
- ``embedding-knn``: the newest finished ``neighbour_km`` run on the cohort with the
  query's k and temperature (that model *is* the embedding-knn answer, cross-validated);
- the baseline: the newest finished ``abmil`` run with ``pooling=mean`` on the same cohort
  and split set whose folds evaluated exactly the same patients.

A run is finished when every fold of its split set has a result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from casegraph.errors import CasegraphError
from casegraph.ingest.store import Store

BASELINE_MODEL = "abmil"
BASELINE_OPTIONS: dict[str, Any] = {"pooling": "mean"}
KNN_MODEL = "neighbour_km"
KNN_METHOD = "embedding-knn"
MSRL_METHOD = "msrl-gsl"
WSI_MODEL_METHOD = "wsi-model"  # a non-MSRL WSI-only version (abmil, retrieval_impute, ...)
# what says how a model runs, not what it fits: never part of a match
IGNORED_OPTIONS = frozenset({"seed", "device", "cache_bags", "stage1_cache", "stage"})
METRIC_KEYS = {"harrell_c": "c_index", "uno_c": "c_index_uno", "ibs": "ibs"}
TIE_DECIMALS = 3  # the precision the results tables report


class MetricSummary(BaseModel):
    """One metric over a run's folds: mean, sd (population, as `casegraph evaluate`)
    and n, the folds with a finite value."""

    mean: float | None
    sd: float | None
    n: int


class BaselineRecord(BaseModel):
    method: str = Field(description="the baseline model and options, e.g. abmil[pooling=mean]")
    run_id: str | None = None
    harrell_c: MetricSummary | None = None
    uno_c: MetricSummary | None = None
    ibs: MetricSummary | None = None
    note: str | None = Field(default=None, description="why there is no baseline, when there is none")


class Calibration(BaseModel):
    """The neighbourhood's Kaplan-Meier curve (unweighted, as ``neighbourhood_km``) with its
    95% exponential-Greenwood band, and the predicted S(t), at the answer's time points."""

    times: list[float]
    predicted: list[float]
    neighbourhood_km: list[float]
    lower: list[float]
    upper: list[float]
    inside: int = Field(description="time points where the predicted S(t) is inside the band")
    n_neighbours: int
    note: str


class TrackRecord(BaseModel):
    """The validated performance of the method that answered (None values: no record;
    ``note`` then says which command makes one)."""

    method: str
    version: str | None = None
    cohort: str | None = None
    folds: str | None = Field(default=None, description="the split set and fold count, e.g. "
                                                "'mcat, 5 folds'")
    run_id: str | None = None
    linked: str | None = Field(default=None, description="recorded (verified by `casegraph versions "
                                                 "track-record`) or matched (by configuration "
                                                 "at answer time)")
    harrell_c: MetricSummary | None = None
    uno_c: MetricSummary | None = None
    ibs: MetricSummary | None = None
    baseline: BaselineRecord | None = None
    calibration: Calibration | None = None
    note: str | None = None


class Candidate(BaseModel):
    method: str
    version: str | None = None
    run_id: str | None = None
    harrell_c: MetricSummary | None = None


class MethodChoice(BaseModel):
    """What ``method=auto`` chose for the query's cohort, and why."""

    method: str
    version: str | None = None
    cohort: str | None = None
    reason: str
    candidates: list[Candidate] = Field(default_factory=list)


@dataclass(frozen=True)
class Backing:
    """A finished run backing a method: its id, split set, fold count and how it was found."""

    run_id: str
    split_set: str
    n_folds: int
    linked: str


def wsi_model_versions(store: Store) -> list[str]:
    """Trained versions of non-MSRL models that answer from slides alone (their inputs
    read slides and no genomics at inference: abmil, retrieval_impute, neighbour_km),
    survival task, oldest first."""
    from casegraph.models.registry import model_names
    from casegraph.models.versioning import is_msrl

    known = set(model_names())
    out = []
    for version in store.versions.all():
        inputs = version.config.get("inputs") or {}
        if version.parent_id is not None or not inputs or version.model not in known \
                or is_msrl(version.model):
            continue
        reads_genomics = bool(inputs.get("uses_genomics")) and \
            bool(inputs.get("genomics_at_inference", True))
        if inputs.get("uses_slides") and not reads_genomics and \
                version.config.get("task", "survival") == "survival":
            out.append(version.version_id)
    return out


# ---------------------------------------------------------------------- options
def effective_options(model: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options a model built with ``options`` reports (its defaults filled in), seeds
    and runtime options left out, as canonical JSON values: equal exactly when two runs or
    versions fit the same thing."""
    from casegraph.models.registry import MODELS, load_model_modules

    load_model_modules()
    given = {k: v for k, v in options.items() if k not in IGNORED_OPTIONS}
    try:
        built = MODELS.get(model)(**given)
    except (TypeError, ValueError, CasegraphError) as exc:  # another casegraph's options
        return {"unbuildable": str(exc), **given}
    config = getattr(built, "config", None)
    if config is not None and callable(getattr(config, "to_dict", None)):
        reported = dict(config.to_dict())
    elif callable(getattr(built, "get_options", None)):
        reported = dict(built.get_options())  # type: ignore[attr-defined]
    else:
        reported = given
    kept = {k: v for k, v in reported.items() if k not in IGNORED_OPTIONS}
    return dict(json.loads(json.dumps(kept, sort_keys=True, default=str)))


def version_options(store: Store, version_id: str) -> tuple[str, dict[str, Any], str]:
    """(model, the options its trained root was built with, group set)."""
    from dataclasses import fields

    from casegraph.models.versioning import is_msrl

    root = store.versions.root(version_id)
    config = root.config
    if is_msrl(root.model):
        from casegraph.models.msrl import MSRLConfig

        known = {f.name for f in fields(MSRLConfig)}
        options = {k: v for k, v in config.items() if k in known}
        return root.model, options, str(config.get("group_set", "mcat"))
    inputs = config.get("inputs") or {}
    return root.model, dict(config.get("options") or {}), str(inputs.get("group_set", "mcat"))


def version_split_set(store: Store, version_id: str) -> str:
    """The split set a version's CV runs use: the one it was fitted from when the store
    holds it, else the seeded k-fold."""
    wanted = str(store.versions.root(version_id).config.get("split_set", "mcat"))
    return wanted if wanted in store.split_sets() else "k-fold"


# ---------------------------------------------------------------------- runs
class RunLookup:
    """The store's CV runs, read once: finished runs by model and cohort, their metric
    summaries and evaluated patients (memoised)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        runs = store.cv_results.run_overview()
        self._runs = runs.assign(parsed=[_parse(c) for c in runs["config"]]) if len(runs) \
            else runs.assign(parsed=[])
        self._fold_counts: dict[str, int] = {}
        self._options: dict[str, dict[str, Any]] = {}
        self._patients: dict[str, dict[int, frozenset[str]]] = {}

    def expected_folds(self, split_set: str, config: Mapping[str, Any]) -> int:
        if split_set == "k-fold":
            return int(config.get("n_folds", 5))
        if split_set not in self._fold_counts:
            self._fold_counts[split_set] = len(self.store.splits(split_set))
        return self._fold_counts[split_set]

    def finished(self, model: str, cohort: str, split_set: str | None = None) -> pd.DataFrame:
        """Finished runs of ``model`` on ``cohort`` (in ``split_set``), newest first."""
        runs = self._runs
        if runs.empty:
            return runs
        mask = (runs["model"] == model) & (runs["cohort"] == cohort)
        if split_set is not None:
            mask &= runs["split_set"] == split_set
        chosen = runs[mask]
        done = [int(n) >= max(1, self.expected_folds(str(s), p))
                for n, s, p in zip(chosen["n_folds_done"], chosen["split_set"],
                                   chosen["parsed"], strict=True)]
        return chosen[np.asarray(done, dtype=bool)].iloc[::-1]

    def options(self, run: Any) -> dict[str, Any]:
        """The run's effective options (the CV runner adds n_bins and the selection)."""
        run_id = str(run.run_id)
        if run_id not in self._options:
            parsed = run.parsed
            given = dict(parsed.get("options") or {})
            given.setdefault("n_bins", parsed.get("n_bins", 4))
            if parsed.get("select", "last") != "last":
                given["select"] = parsed["select"]
            self._options[run_id] = effective_options(str(run.model), given)
        return self._options[run_id]

    def evaluated(self, run_id: str) -> dict[int, frozenset[str]]:
        if run_id not in self._patients:
            self._patients[run_id] = self.store.cv_results.evaluated_patients(run_id)
        return self._patients[run_id]

    def backing(self, run: Any, linked: str) -> Backing:
        return Backing(str(run.run_id), str(run.split_set),
                       int(run.n_folds_done), linked)

    def by_id(self, run_id: str) -> Any | None:
        rows = self._runs[self._runs["run_id"] == run_id] if len(self._runs) else self._runs
        return next(rows.itertuples(), None)


def summarise(store: Store, run_id: str) -> dict[str, MetricSummary]:
    """harrell_c / uno_c / ibs of a run's stored folds."""
    folds = store.cv_results.fold_results(run_id)
    out = {}
    for key, column in METRIC_KEYS.items():
        values = folds[column].dropna().to_numpy(dtype=float) if column in folds else \
            np.zeros(0)
        values = values[np.isfinite(values)]
        out[key] = MetricSummary(mean=float(values.mean()) if values.size else None,
                                 sd=float(values.std()) if values.size else None,
                                 n=int(values.size))
    return out


def method_run(lookup: RunLookup, version_id: str) -> Backing | None:
    """The run backing a model version: its recorded link, else the newest matching one."""
    store = lookup.store
    root = store.versions.root(version_id)
    for vid in dict.fromkeys([version_id, root.version_id]):
        linked = store.cv_results.version_links(vid).get("method")
        run = lookup.by_id(linked) if linked else None
        if run is not None:
            return lookup.backing(run, "recorded")
    if root.cohort is None:
        return None
    model, options, group_set = version_options(store, version_id)
    wanted = effective_options(model, options)
    for run in lookup.finished(model, root.cohort,
                               version_split_set(store, version_id)).itertuples():
        if run.parsed.get("group_set", "mcat") == group_set and lookup.options(run) == wanted:
            return lookup.backing(run, "matched")
    return None


def knn_run(lookup: RunLookup, cohort: str, k: int, temperature: float) -> Backing | None:
    """The newest finished neighbour_km run on ``cohort`` answering as the query does."""
    split_set = "mcat" if "mcat" in lookup.store.split_sets() else "k-fold"
    wanted = effective_options(KNN_MODEL, {"k": k, "temperature": temperature,
                                           "weighting": "softmax"})
    for run in lookup.finished(KNN_MODEL, cohort, split_set).itertuples():
        options = lookup.options(run)
        if {key: options.get(key) for key in ("k", "temperature", "weighting")} == \
                {key: wanted.get(key) for key in ("k", "temperature", "weighting")}:
            return lookup.backing(run, "matched")
    return None


def baseline_run(lookup: RunLookup, backing: Backing, cohort: str,
                 version_id: str | None = None) -> Backing | None:
    """The newest finished mean-pooling ABMIL run whose folds evaluated the same patients
    as ``backing``'s (a recorded baseline link of ``version_id`` first)."""
    if version_id is not None:
        linked = lookup.store.cv_results.version_links(version_id).get("baseline")
        run = lookup.by_id(linked) if linked else None
        if run is not None:
            return lookup.backing(run, "recorded")
    folds = lookup.evaluated(backing.run_id)
    for run in lookup.finished(BASELINE_MODEL, cohort, backing.split_set).itertuples():
        options = lookup.options(run)
        if all(options.get(k) == v for k, v in BASELINE_OPTIONS.items()) and \
                lookup.evaluated(str(run.run_id)) == folds:
            return lookup.backing(run, "matched")
    return None


# ---------------------------------------------------------------------- records
def run_cv_hint(method: str, version: str | None, cohort: str | None) -> str:
    if version is not None:
        return f"casegraph versions track-record {version} --run-cv"
    return f"casegraph train --model {KNN_MODEL} --cohort {cohort or 'COHORT'}"


def record_for(lookup: RunLookup, method: str, version: str | None, cohort: str | None,
               backing: Backing | None) -> TrackRecord:
    """The track record of ``method`` (a model name) backed by ``backing`` (None: the one
    line saying there is none), without the per-answer calibration."""
    hint = run_cv_hint(method, version, cohort)
    if backing is None or cohort is None:
        why = ("no validated track record: the version was trained on every cohort and CV "
               "runs are per cohort" if version is not None and cohort is None and
               backing is None else f"no validated track record: run `{hint}`")
        return TrackRecord(method=method, version=version, cohort=cohort, note=why)
    metrics = summarise(lookup.store, backing.run_id)
    base = baseline_run(lookup, backing, cohort, version)
    label = f"{BASELINE_MODEL}[pooling=mean]"
    if base is None:
        baseline = BaselineRecord(method=label, note=(
            "no finished abmil pooling=mean run under the same folds: run "
            f"`{hint if version else f'casegraph train --model abmil --cohort {cohort} --option pooling=mean'}`"))
    else:
        found = summarise(lookup.store, base.run_id)
        baseline = BaselineRecord(method=label, run_id=base.run_id,
                                  harrell_c=found["harrell_c"], uno_c=found["uno_c"],
                                  ibs=found["ibs"])
    return TrackRecord(method=method, version=version, cohort=cohort,
                       folds=f"{backing.split_set}, {backing.n_folds} folds",
                       run_id=backing.run_id, linked=backing.linked, baseline=baseline,
                       harrell_c=metrics["harrell_c"], uno_c=metrics["uno_c"],
                       ibs=metrics["ibs"])


def version_record(lookup: RunLookup, version_id: str) -> TrackRecord:
    root = lookup.store.versions.root(version_id)
    return record_for(lookup, root.model, version_id, root.cohort,
                      method_run(lookup, version_id))


def knn_record(lookup: RunLookup, cohort: str | None, k: int,
               temperature: float) -> TrackRecord:
    backing = None if cohort is None else knn_run(lookup, cohort, k, temperature)
    record = record_for(lookup, KNN_MODEL, None, cohort, backing)
    if cohort is None:
        record.note = ("no validated track record: the query's cohort is unknown (give one "
                       "--cohort, or query a stored patient)")
    return record


# ---------------------------------------------------------------------- calibration
def calibration(times: Sequence[float], predicted: Sequence[float],
                neighbour_times: Sequence[float], neighbour_events: Sequence[bool]
                ) -> Calibration:
    """The neighbourhood KM and its 95% band at ``times`` beside the predicted S(t)."""
    from casegraph.models.neighbourhood import kaplan_meier, km_confidence_band

    at = np.asarray(times, dtype=np.float64)
    pred = np.asarray(predicted, dtype=np.float64)
    n = len(neighbour_times)
    if n == 0:
        return Calibration(times=list(at), predicted=list(pred), neighbourhood_km=[],
                           lower=[], upper=[], inside=0, n_neighbours=0,
                           note="no neighbours: no calibration check")
    km_t, km_s, at_risk, deaths = kaplan_meier(neighbour_times, neighbour_events)
    lower, upper = km_confidence_band(km_s, at_risk, deaths)
    idx = np.searchsorted(km_t, at, side="right") - 1  # -1: before the first time, S = 1

    def pick(values: np.ndarray) -> np.ndarray:
        return np.concatenate([[1.0], values])[idx + 1]

    s, lo, hi = pick(km_s), pick(lower), pick(upper)
    inside = int(np.sum((pred >= lo - 1e-9) & (pred <= hi + 1e-9)))
    note = (f"predicted S(t) inside the {n} neighbours' Kaplan-Meier 95% band at {inside} of "
            f"{len(at)} time points" + ("" if inside == len(at) else
                                        "; outside it, the model and its neighbourhood disagree")
            + (" (few neighbours: a wide band)" if n < 20 else ""))
    return Calibration(times=[float(t) for t in at], predicted=[float(v) for v in pred],
                       neighbourhood_km=[float(v) for v in s], lower=[float(v) for v in lo],
                       upper=[float(v) for v in hi], inside=inside, n_neighbours=n, note=note)


# ---------------------------------------------------------------------- method=auto
def choose_method(lookup: RunLookup, cohort: str | None, msrl_versions: Sequence[str],
                  k: int, temperature: float, default_version: str | None,
                  model_versions: Sequence[str] = ()) -> MethodChoice:
    """Among the methods that answer a slide-only query (the cohort's WSI-only MSRL
    versions, its other WSI-only versions ``model_versions`` (abmil, ...), the newest of
    each model, and embedding-knn), the one whose validated Harrell C
    (mean over the folds of a finished run on ``cohort``) is best; candidates without a
    finished run are listed, not chosen. No cohort or no validated candidate:
    ``default_version`` (the newest MSRL version, else embedding-knn); a tie at
    :data:`TIE_DECIMALS` decimals: the first tied in the order MSRL versions (newest
    first), other versions, embedding-knn; each
    with the reason."""
    default = MethodChoice(method=MSRL_METHOD if default_version else KNN_METHOD,
                           version=default_version, cohort=cohort, reason="")
    if cohort is None:
        default.reason = ("auto: the query's cohort is unknown (a new patient, no single "
                          "--cohort, several cohorts in the store), so validated performance "
                          "cannot choose; the default answered " + _default_text(default))
        return default
    candidates = [*_version_candidates(lookup, cohort, msrl_versions, MSRL_METHOD),
                  *_version_candidates(lookup, cohort, model_versions, WSI_MODEL_METHOD),
                  _knn_candidate(lookup, cohort, k, temperature)]
    default.candidates = candidates
    scored = sorted((c for c in candidates if _mean(c) is not None),
                    key=lambda c: -(_mean(c) or 0.0))
    if not scored:
        default.reason = (f"auto: no candidate has a finished CV run on cohort {cohort}; the "
                          f"default answered {_default_text(default)}")
        return default
    best = scored[0]
    tied = [c for c in scored
            if round(_mean(c) or 0.0, TIE_DECIMALS) == round(_mean(best) or 0.0, TIE_DECIMALS)]
    if len(tied) > 1:
        pick = tied[0]  # candidates come MSRL versions first (newest first), knn last
        return MethodChoice(
            method=pick.method, version=pick.version, cohort=cohort, candidates=candidates,
            reason=f"auto: {', '.join(_label(c) for c in tied)} tie on validated Harrell C "
                   f"({_c_text(best)}) on cohort {cohort}; {_label(pick)} answered (the "
                   "order among the tied: MSRL versions newest first, other versions, "
                   "embedding-knn)")
    others = "; ".join(f"{_label(c)} {_c_text(c)}" for c in scored[1:]) or "no other " \
        "validated candidate"
    missing = [c for c in candidates if c not in scored]
    return MethodChoice(
        method=best.method, version=best.version, cohort=cohort, candidates=candidates,
        reason=f"auto: {_label(best)} has the best validated Harrell C on cohort {cohort}: "
               f"{_c_text(best)} (run {best.run_id}), vs {others}"
               + (f"; without a finished run: {', '.join(_label(c) for c in missing)}"
                  if missing else ""))


def _version_candidates(lookup: RunLookup, cohort: str, versions: Sequence[str],
                        method: str) -> list[Candidate]:
    """The newest of ``versions`` (given oldest first) per model on ``cohort``, newest
    first."""
    newest: dict[str, str] = {}
    for version in versions:
        root = lookup.store.versions.root(version)
        if root.cohort == cohort:
            newest.pop(root.model, None)
            newest[root.model] = version
    out = []
    for version in reversed(list(newest.values())):
        backing = method_run(lookup, version)
        out.append(Candidate(method=method, version=version,
                             run_id=backing.run_id if backing else None,
                             harrell_c=summarise(lookup.store, backing.run_id)["harrell_c"]
                             if backing else None))
    return out


def _knn_candidate(lookup: RunLookup, cohort: str, k: int, temperature: float) -> Candidate:
    knn = knn_run(lookup, cohort, k, temperature)
    return Candidate(method=KNN_METHOD, run_id=knn.run_id if knn else None,
                     harrell_c=summarise(lookup.store, knn.run_id)["harrell_c"]
                     if knn else None)


def _mean(candidate: Candidate) -> float | None:
    return None if candidate.harrell_c is None else candidate.harrell_c.mean


def _label(candidate: Candidate) -> str:
    return f"{candidate.method} ({candidate.version})" if candidate.version \
        else candidate.method


def _c_text(candidate: Candidate) -> str:
    c = candidate.harrell_c
    if c is None or c.mean is None:
        return "no run"
    return f"{c.mean:.3f} ± {c.sd or 0.0:.3f} over {c.n} folds"


def _default_text(choice: MethodChoice) -> str:
    return f"{MSRL_METHOD} ({choice.version})" if choice.version else KNN_METHOD


def _parse(config: object) -> dict[str, Any]:
    try:
        parsed = json.loads(str(config))
    except (json.JSONDecodeError, TypeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


# ---------------------------------------------------------------------- verify and link
@dataclass
class LinkReport:
    """What ``casegraph versions track-record V`` found, ran and recorded."""

    version: str
    record: TrackRecord
    lines: list[str]


def link_version(store: Store, version_id: str, *, run_cv: bool = False,
                 baseline_options: Mapping[str, Any] | None = None,
                 log: Any = lambda _msg: None) -> LinkReport:
    """Find the version's method run and its baseline, check each still matches the
    cohort's data (its data fingerprint), run the missing ones through the CV runner when
    ``run_cv``, and record the verified runs as the version's links."""
    root = store.versions.root(version_id)
    lines: list[str] = []
    if root.cohort is None:
        lines.append("the version was trained on every cohort; CV runs are per cohort, so it "
                     "has no track record")
        return LinkReport(version_id, version_record(RunLookup(store), version_id), lines)
    method = _verified(store, method_run(RunLookup(store), version_id), lines, "method")
    if method is None and run_cv:
        model, options, group_set = version_options(store, version_id)
        method = _run(store, model, root.cohort, version_split_set(store, version_id),
                      group_set, options, log)
        lines.append(f"method run {method}: cross-validated now")
    if method is not None:
        store.cv_results.link_version(version_id, "method", method)
        lookup = RunLookup(store)
        backing = lookup.backing(lookup.by_id(method), "recorded")
        base = _verified(store, baseline_run(lookup, backing, root.cohort), lines, "baseline")
        if base is None and run_cv:
            _, _, group_set = version_options(store, version_id)
            base = _run(store, BASELINE_MODEL, root.cohort, backing.split_set, group_set,
                        {**BASELINE_OPTIONS, **dict(baseline_options or {})}, log)
            if RunLookup(store).evaluated(base) == lookup.evaluated(method):
                lines.append(f"baseline run {base}: cross-validated now")
            else:
                lines.append(f"baseline run {base} evaluated other patients than the method "
                             "run (the models read different inputs): not linked")
                base = None
        if base is not None:
            store.cv_results.link_version(version_id, "baseline", base)
    return LinkReport(version_id, version_record(RunLookup(store), version_id), lines)


def _verified(store: Store, backing: Backing | None, lines: list[str], role: str) -> str | None:
    """``backing``'s run id when its data fingerprint is the cohort's data now."""
    if backing is None:
        lines.append(f"{role} run: none finished with this configuration")
        return None
    run = RunLookup(store).by_id(backing.run_id)
    parsed = run.parsed if run is not None else {}
    if _fingerprint(store, parsed) != parsed.get("data"):
        lines.append(f"{role} run {backing.run_id}: its data changed since (patients, "
                     "outcomes, genomics, slides or folds), not linked")
        return None
    lines.append(f"{role} run {backing.run_id}: matches the version and the data")
    return backing.run_id


def _cohort_and_folds(store: Store, model: str, cohort: str, split_set: str, group_set: str,
                      n_folds: int = 5, seed: int = 0) -> tuple[Any, Any]:
    from casegraph.models.cv import kfold_folds, stored_folds
    from casegraph.models.data import CohortData
    from casegraph.models.registry import MODELS, load_model_modules

    load_model_modules()
    factory = MODELS.get(model)
    data = CohortData.from_store(store, cohort, group_set=group_set,
                                 require_slides=bool(getattr(factory, "uses_slides", False)))
    folds = (kfold_folds(data, n_folds, seed) if split_set == "k-fold"
             else stored_folds(data, store, split_set))
    return data, folds


def _fingerprint(store: Store, parsed: Mapping[str, Any]) -> str | None:
    from casegraph.errors import InputError
    from casegraph.models.cv import data_fingerprint

    try:
        data, folds = _cohort_and_folds(store, str(parsed["model"]), str(parsed["cohort"]),
                                        str(parsed["splits"]),
                                        str(parsed.get("group_set", "mcat")),
                                        int(parsed.get("n_folds", 5)), int(parsed.get("seed", 0)))
    except (KeyError, InputError):
        return None
    return data_fingerprint(data, folds)


def _run(store: Store, model: str, cohort: str, split_set: str, group_set: str,
         options: Mapping[str, Any], log: Any) -> str:
    """Cross-validate ``model`` with ``options`` (the CV runner; finished folds skipped);
    the run id."""
    from casegraph.models.cv import CVConfig
    from casegraph.models.cv import run_cv as cross_validate
    from casegraph.models.registry import MODELS
    from casegraph.models.results import ResultStore

    chosen = {k: v for k, v in options.items() if k not in IGNORED_OPTIONS}
    seed = int(options.get("seed", 0))
    if getattr(MODELS.get(model), "uses_stage1_cache", False):
        chosen.update(stage1_cache=str(store.artifacts_dir / "msrl_stage1"), stage="all")
    config = CVConfig(model=model, cohort=cohort, splits=split_set, seed=seed,
                      options=chosen, group_set=group_set)
    data, folds = _cohort_and_folds(store, model, cohort, split_set, group_set, 5, seed)
    log(f"cross-validating {model} on {cohort} ({len(data)} patients, {len(folds)} folds)")
    cross_validate(data, config, folds, ResultStore(store), log=log)
    return config.run_id()
