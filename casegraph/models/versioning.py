"""One model-version contract for every registered model family.

A version is written with :func:`train_version` and read back with :func:`load_version`;
rows and folders belong to the store's version API (:mod:`casegraph.ingest.versions`),
the model writes only its own files (``save_files(folder)`` / ``load_files(folder)``,
one ``weights.pt`` that loads with ``weights_only=True``). MSRL models keep their own
files and dispatch to :mod:`casegraph.models.msrl.api` / ``MSRLModel.load_version``.

Every version's config holds an :class:`InputSpec`: the gene groups with the exact store
feature names of each (in column order) and the bag feature dimension. A version reads
exactly those columns, so it predicts the same for a patient however the store grows
(new features or patients change nothing it reads).

A new patient (:func:`external_cohort`) gives bag files and genomics as feature -> value.
A feature it does not give is set to the training mean (the fitted preprocessing's
``mean_``), which is 0 after standardisation: "no information" rather than a raw 0.
:class:`GenomicCoverage` reports per group how many features were given, which were
missing, and which given names the version does not know.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from casegraph.errors import InputError, StoreError
from casegraph.ingest.bags import read_bag
from casegraph.ingest.store import Store
from casegraph.ingest.versions import NewVersion, PredictionRows
from casegraph.models.base import Prediction, SurvivalModel
from casegraph.models.data import CohortData, group_columns
from casegraph.models.registry import MODELS, build_model, load_model_modules
from casegraph.schema import SurvivalTarget

FloatArray = npt.NDArray[np.float32]


@dataclass
class InputSpec:
    """The inputs a version reads. ``groups``: (group name, store feature names in column
    order); ``bag_dim``: patch feature dimension of slide models (None without slides)."""

    group_set: str
    groups: list[tuple[str, list[str]]]
    uses_genomics: bool
    uses_slides: bool
    bag_dim: int | None = None
    genomics_at_inference: bool = True  # False: genomics train the model, slides answer

    @property
    def reads_genomics(self) -> bool:
        """Whether a patient's genomics are an input at prediction time."""
        return self.uses_genomics and self.genomics_at_inference

    @property
    def feature_names(self) -> list[str]:
        return [name for _, names in self.groups for name in names]

    def to_dict(self) -> dict[str, Any]:
        return {"group_set": self.group_set,
                "groups": [[group, list(names)] for group, names in self.groups],
                "uses_genomics": self.uses_genomics, "uses_slides": self.uses_slides,
                "bag_dim": self.bag_dim, "genomics_at_inference": self.genomics_at_inference}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> InputSpec:
        return cls(group_set=str(raw["group_set"]),
                   groups=[(str(g), [str(n) for n in names]) for g, names in raw["groups"]],
                   uses_genomics=bool(raw["uses_genomics"]),
                   uses_slides=bool(raw["uses_slides"]),
                   bag_dim=None if raw.get("bag_dim") is None else int(raw["bag_dim"]),
                   genomics_at_inference=bool(raw.get("genomics_at_inference", True)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> InputSpec:
        return cls.from_dict(json.loads(text))


@dataclass
class GroupCoverage:
    group: str
    given: int
    expected: int

    @property
    def fraction(self) -> float:
        return self.given / self.expected if self.expected else 1.0


@dataclass
class GenomicCoverage:
    """How much of a version's genomics a new patient gave. ``missing``: expected features
    not given (set to the training mean); ``unknown``: given names the version does not
    read (ignored)."""

    groups: list[GroupCoverage] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [{**asdict(g), "fraction": g.fraction} for g in self.groups],
                "missing": list(self.missing), "unknown": list(self.unknown)}


# ---------------------------------------------------------------------- model families
def is_msrl(model: str) -> bool:
    load_model_modules()
    return bool(getattr(MODELS.get(model), "uses_stage1_cache", False))


def uses_genomics(model: object) -> bool:
    return bool(getattr(model, "uses_genomics", True))


def uses_slides(model: object) -> bool:
    return bool(getattr(model, "uses_slides", False))


def embedding_kind(model: object) -> str:
    """``genomics`` (snn, coxnet), ``wsi`` (abmil) or ``fused`` (both modalities)."""
    return str(getattr(model, "embedding_kind", "fused"))


# ---------------------------------------------------------------------- specs and cohorts
def spec_for_store(store: Store, cohort: str | None, group_set: str, genomics: bool,
                   slides: bool) -> InputSpec:
    """The inputs ``cohort`` offers now, grouped as :meth:`CohortData.from_store` does:
    a group's features are every ``<gene>_{rnaseq,cnv,mut}`` the cohort's patients have
    for a gene of the group; groups without any are dropped."""
    groups: list[tuple[str, list[str]]] = []
    if genomics:
        ids = list(store.patients(cohort)["patient_id"])
        _, names, _ = store.genomic_matrix(ids)
        groups = [(group, [names[j] for j in cols])
                  for group, cols in group_columns(store, names, group_set)]
        if not groups:
            raise InputError(f"no genomic features of gene-group set {group_set!r} for cohort "
                             f"{cohort or 'all'}", column="--group-set",
                             fix=f"group sets in the store: "
                             f"{', '.join(store.gene_group_sets()) or 'none'}")
    bag_dim = None
    if slides:
        dims = store.slides(cohort)["feature_dim"].dropna()
        if dims.empty:
            raise InputError(f"cohort {cohort or 'all'} has no slide features in the store",
                             fix="ingest --bags for this cohort, or use a genomics model")
        bag_dim = int(dims.astype(int).mode().iloc[0])
    return InputSpec(group_set=group_set, groups=groups, uses_genomics=genomics,
                     uses_slides=slides, bag_dim=bag_dim)


def _assemble(store: Store, patient_ids: Sequence[str], spec: InputSpec
              ) -> tuple[CohortData, dict[str, str]]:
    """The patients as a CohortData reading exactly ``spec``'s inputs, and for each patient
    that does not fit the spec, why."""
    ids = list(patient_ids)
    patients = store.patients().set_index("patient_id")
    unknown = [p for p in ids if p not in patients.index]
    if unknown:
        raise InputError(f"patient {unknown[0]!r} is not in the store", column="--patient",
                         fix="give a stored patient id, or --slide for a new patient")
    rows = patients.loc[ids] if ids else patients.iloc[:0]
    slides = store.slides()
    slides = slides[slides["patient_id"].isin(set(ids)) & slides["feature_path"].notna()]
    bags: dict[str, list[Path]] = {p: [] for p in ids}
    slide_ids: dict[str, list[str]] = {p: [] for p in ids}
    dims: dict[str, set[int]] = {p: set() for p in ids}
    for pid, sid, path, dim in zip(slides["patient_id"], slides["slide_id"],
                                   slides["feature_path"], slides["feature_dim"], strict=True):
        if path:
            bags[pid].append(Path(path))
            slide_ids[pid].append(str(sid))
            if dim is not None and not pd.isna(dim):
                dims[pid].add(int(dim))
    names = spec.feature_names
    matrix, _, present = (store.genomic_matrix(ids, names) if names
                          else (np.zeros((len(ids), 0), np.float32), [],
                                np.zeros((len(ids), 0), bool)))
    misfits: dict[str, str] = {}
    for i, pid in enumerate(ids):
        reason = _misfit(spec, bags[pid], dims[pid], bool(present[i].any()) if names else False)
        if reason:
            misfits[pid] = reason
    genomics, start = [], 0
    for _, group_names in spec.groups:
        genomics.append(np.ascontiguousarray(matrix[:, start:start + len(group_names)]))
        start += len(group_names)
    data = CohortData(
        patient_ids=ids,
        target=SurvivalTarget.from_arrays(rows["time"].to_numpy(), rows["event"].to_numpy(),
                                          source="store"),
        groups=[g for g, _ in spec.groups], genomics=genomics,
        bags=[bags[p] for p in ids], cohorts=[str(c) for c in rows["cohort"]],
        attributes=list(rows["attributes"]), slide_ids=[slide_ids[p] for p in ids],
        summaries=store.slide_summaries)
    return data, misfits


def _misfit(spec: InputSpec, bags: list[Path], dims: set[int], has_genomics: bool) -> str | None:
    if spec.uses_slides:
        if not bags:
            return "has no slide features; this version reads slides"
        wrong = sorted(d for d in dims if d != spec.bag_dim)
        if wrong:
            return (f"has slide features of dimension {wrong[0]}; this version reads "
                    f"dimension {spec.bag_dim}")
    if spec.reads_genomics and not has_genomics:
        return "has no genomic values for this version's features; this version reads genomics"
    return None


def cohort_with_misfits(store: Store, patient_ids: Sequence[str], spec: InputSpec
                        ) -> tuple[CohortData, dict[str, str]]:
    """Like :func:`cohort_for`, but patients that do not fit are reported (patient id ->
    why), not raised; the CohortData still lists every patient."""
    return _assemble(store, patient_ids, spec)


def cohort_for(store: Store, patient_ids: Sequence[str], spec: InputSpec) -> CohortData:
    """Stored patients with exactly ``spec``'s genomic columns and their bags; an
    InputError naming the first patient that does not fit."""
    data, misfits = _assemble(store, patient_ids, spec)
    if misfits:
        pid, reason = next(iter(misfits.items()))
        raise InputError(f"patient {pid} {reason}", column="--patient",
                         fix="ingest the missing inputs, or use a version of a model that "
                         "does not read them")
    return data


def external_cohort(spec: InputSpec, bag_paths: Sequence[str | Path],
                    genomics: dict[str, float] | None, patient_id: str = "query",
                    fill: Sequence[npt.ArrayLike] | None = None
                    ) -> tuple[CohortData, GenomicCoverage | None]:
    """A new patient (not in the store) as a one-row CohortData, and the genomic coverage
    (None without genomics). ``fill``: per group, the raw value of a feature not given
    (the training mean; default 0)."""
    paths = [Path(p) for p in bag_paths]
    for path in paths:
        dim = int(read_bag(path).features.shape[1])
        if spec.bag_dim is not None and dim != spec.bag_dim:
            raise InputError(f"patch features of dimension {dim}; this version reads "
                             f"dimension {spec.bag_dim}", file=path,
                             fix="give features from the encoder the version was trained on")
    given = dict(genomics or {})
    groups: list[FloatArray] = []
    coverage = GenomicCoverage() if genomics is not None else None
    known = set(spec.feature_names)
    for j, (group, names) in enumerate(spec.groups):
        default = (np.zeros(len(names)) if fill is None
                   else np.asarray(fill[j], dtype=np.float64).reshape(-1))
        row = np.array([given.get(n, default[k]) for k, n in enumerate(names)], np.float32)
        groups.append(row[None, :])
        if coverage is not None:
            n_given = sum(n in given for n in names)
            coverage.groups.append(GroupCoverage(group, n_given, len(names)))
            coverage.missing += [n for n in names if n not in given]
    if coverage is not None:
        coverage.unknown = sorted(n for n in given if n not in known)
    data = CohortData(
        patient_ids=[patient_id],
        target=SurvivalTarget.from_arrays([1.0], [False], source="query"),
        groups=[g for g, _ in spec.groups], genomics=groups, bags=[paths],
        cohorts=["query"], attributes=[{}], slide_ids=[[]])
    return data, coverage


# ---------------------------------------------------------------------- genomics files
def read_genomics_row(path: str | Path) -> dict[str, float]:
    """One patient's genomics: a CSV row in the cohort table's format (``<gene>_rnaseq``,
    ``_cnv``, ``_mut`` columns; other columns ignored; empty cells = not given) or a JSON
    object ``{feature: value}``."""
    path = Path(path)
    if not path.is_file():
        raise InputError("genomics file not found", file=path, fix="check the path")
    if path.suffix.lower() == ".json":
        return _json_genomics(path)
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return _csv_genomics(path)
    raise InputError(f"unknown genomics file type {path.suffix or '(none)'!r}", file=path,
                     fix="give a .csv row like the cohort table, or a .json object")


def _json_genomics(path: Path) -> dict[str, float]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"not valid JSON ({str(exc)[:80]})", file=path,
                         fix='write {"TP53_rnaseq": 0.5, ...}') from None
    if not isinstance(raw, dict):
        raise InputError("the JSON is not an object of feature -> value", file=path,
                         fix='write {"TP53_rnaseq": 0.5, ...}')
    out: dict[str, float] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"value {value!r} is not a number", file=path, column=str(key),
                             fix="give numbers (null = not measured)")
        out[str(key)] = _finite(float(value), path, str(key), None)
    return out


def _csv_genomics(path: Path) -> dict[str, float]:
    import csv

    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = [r for r in csv.reader(handle, delimiter=sep) if any(c.strip() for c in r)]
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", file=path,
                         fix="save the row as UTF-8 CSV, as the cohort table") from None
    except csv.Error as exc:
        raise InputError(f"not a readable CSV ({str(exc)[:80]})", file=path,
                         fix="one header line and one row, comma separated") from None
    if not rows:
        raise InputError("the genomics file is empty", file=path,
                         fix="give a header and one patient's row")
    header, body = rows[0], rows[1:]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise InputError("repeated column header", file=path, column=repeated[0],
                         fix="keep one column per feature")
    if len(body) != 1:
        raise InputError(f"{len(body)} data rows; a genomics file holds one patient's row",
                         file=path, fix="keep the header and one row")
    row = body[0]
    out: dict[str, float] = {}
    for name, cell in zip(header, row, strict=False):
        if not name.endswith(("_rnaseq", "_cnv", "_mut")) or not cell.strip():
            continue
        try:
            value = float(cell)
        except ValueError:
            raise InputError(f"value {cell!r} is not a number", file=path, row=2, column=name,
                             fix="give a number, or leave the cell empty") from None
        out[name] = _finite(value, path, name, 2)
    return out


def _finite(value: float, path: Path, column: str, row: int | None) -> float:
    if not math.isfinite(value) or abs(value) > float(np.finfo(np.float32).max):
        raise InputError(f"value {value!r} is not a finite float32", file=path, row=row,
                         column=column, fix="give a finite number")
    return value


# ---------------------------------------------------------------------- training
def _json_safe(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _training_ids(store: Store, ids: list[str], fold: int | None, split_set: str) -> list[str]:
    if fold is None:
        return ids
    folds = store.splits(split_set)
    if fold not in folds:
        raise InputError(f"split set {split_set!r} has no fold {fold}", column="--version-fold",
                         fix=f"folds: {sorted(folds) or 'none (ingest --splits)'}")
    train = set(folds[fold][0])
    return [p for p in ids if p in train]


def _metrics(model: Any) -> dict[str, Any]:
    history = list(getattr(model, "history_", []))
    metrics: dict[str, Any] = {"history_tail": _json_safe(history[-3:])}
    if hasattr(model, "alpha_"):
        metrics["alpha"] = float(model.alpha_)
    return metrics


def train_version(store: Store, cohort: str | None, model: str, fold: int | None = 0,
                  split_set: str = "mcat", group_set: str = "mcat", endpoint: str = "OS",
                  **options: Any) -> str:
    """Fit ``model`` on the training patients of ``fold`` (None = every patient) of the
    cohort that have ``endpoint``'s outcome, predict every cohort patient that fits its
    inputs (the rest are skipped and counted), and store one version; its id."""
    if is_msrl(model) and endpoint.upper() != "OS":
        raise InputError(f"{model} versions are trained on OS only", column="--endpoint",
                         fix="drop --endpoint for --save-version, or save another model")
    if is_msrl(model):
        from casegraph.models.msrl.api import train_version as msrl_train_version

        return msrl_train_version(store, cohort, model=model, fold=fold, split_set=split_set,
                                  group_set=group_set, **options)
    fitted = build_model(model, **options)
    spec = spec_for_store(store, cohort, group_set, uses_genomics(fitted), uses_slides(fitted))
    spec.genomics_at_inference = bool(getattr(fitted, "genomics_at_inference", True))
    data, misfits = _assemble(store, list(store.patients(cohort)["patient_id"]), spec)
    fits = [p for p in data.patient_ids if p not in misfits]
    train_ids = _training_ids(store, fits, fold, split_set)
    if spec.uses_genomics and not spec.reads_genomics:  # genomics are needed to train only
        _, untrainable = _assemble(store, train_ids, replace(spec, genomics_at_inference=True))
        train_ids = [p for p in train_ids if p not in untrainable]
    if not train_ids:
        raise InputError(f"cohort {cohort or 'all'} has no training patients with the inputs "
                         f"{model} reads", fix="ingest them, or check --version-fold")
    data = data.select(fits)
    train = data.select(train_ids).with_endpoint(store, endpoint, cohort)
    fitted.fit(train)
    prediction = fitted.predict(data)
    embeddings = {}
    if prediction.embedding is not None and prediction.embedding.shape[1] > 0:
        embeddings[embedding_kind(fitted)] = (list(prediction.patient_ids),
                                              np.asarray(prediction.embedding, np.float32))
    config = {"model": model, "options": _json_safe(_options(fitted)),
              "inputs": spec.to_dict(), "fold": fold, "split_set": split_set,
              "endpoint": endpoint.upper()}
    edges = prediction.bin_edges
    new = NewVersion(
        model=model, cohort=cohort, config=config, metrics=_metrics(fitted),
        fitted_on=list(train.patient_ids),
        predictions=PredictionRows(list(prediction.patient_ids), prediction.risk,
                                   prediction.survival),
        bin_edges=None if edges is None else [float(e) for e in edges],
        embeddings=embeddings,
        counts={"patients": len(data), "skipped": len(misfits)})
    return store.versions.create(new, write_files=_files_writer(fitted))


def _options(model: Any) -> dict[str, Any]:
    get = getattr(model, "get_options", None)
    return dict(get()) if callable(get) else {}


def _files_writer(model: Any) -> Any:
    save = getattr(model, "save_files", None)
    if not callable(save):
        raise StoreError(f"model {model.name!r} cannot save its files (no save_files)")
    return save


# ---------------------------------------------------------------------- loading, predicting
def load_version(store: Store, version_id: str) -> tuple[SurvivalModel, InputSpec]:
    """The fitted model of a version (the root version's files, so a derived version
    loads the same weights) and the inputs it reads."""
    root = store.versions.root(version_id)
    if is_msrl(root.model):
        from casegraph.models.msrl.model import MSRLModel

        msrl = MSRLModel.load_version(store, version_id)
        return msrl, _msrl_spec(store, root.cohort, root.config, msrl)
    factory = MODELS.get(root.model)
    load = getattr(factory, "load_files", None)
    if not callable(load):
        raise StoreError(f"model {root.model!r} cannot load version files (no load_files)")
    model = load(store.versions.folder(root.version_id))
    if "inputs" not in root.config:
        raise StoreError(f"model version {version_id} records no inputs (config['inputs'])")
    return model, InputSpec.from_dict(root.config["inputs"])


def msrl_inputs(store: Store, version_id: str, model: Any) -> InputSpec:
    """The inputs of an MSRL version whose model is already loaded (no second load)."""
    root = store.versions.root(version_id)
    return _msrl_spec(store, root.cohort, root.config, model)


def _msrl_spec(store: Store, cohort: str | None, config: dict[str, Any],
               model: Any) -> InputSpec:
    if "inputs" in config:
        return InputSpec.from_dict(config["inputs"])
    authentic = config.get("genomics_mode") == "authentic"
    group_set = str(config.get("group_set", "mcat"))
    spec = spec_for_store(store, cohort, group_set, authentic, True)
    spec.bag_dim = int(model.bag_dim_)
    return spec


def predict_stored(store: Store, version_id: str, patient_ids: Sequence[str]) -> Prediction:
    """The version's predictions for stored patients, computed by the loaded model."""
    model, spec = load_version(store, version_id)
    return _with_edges(model, model.predict(cohort_for(store, patient_ids, spec)))


def refuse_modalities(store: Store, version_id: str, spec: InputSpec, bag_paths: Sequence[Any],
                      genomics: dict[str, float] | None) -> None:
    """An InputError when a new patient's inputs do not match what the version reads."""
    model = store.versions.root(version_id).model
    if genomics is not None and not spec.reads_genomics:
        how = ("infers genomics from the slides" if is_msrl(model) and model != "msrl_h"
               else "was trained without genomics")
        raise InputError(f"version {version_id} ({model}) {how}", column="--genomics",
                         fix="drop --genomics")
    if bag_paths and not spec.uses_slides:
        raise InputError(f"version {version_id} ({model}) was trained without slides",
                         column="--slide", fix="drop --slide")
    if spec.uses_slides and not bag_paths:
        raise InputError(f"version {version_id} ({model}) reads slides", column="--slide",
                         fix="give the patient's patch-feature files with --slide")
    if spec.reads_genomics and genomics is None:
        raise InputError(f"version {version_id} ({model}) reads genomics", column="--genomics",
                         fix="give the patient's genomics with --genomics FILE (.csv or .json)")


def predict_external(store: Store, version_id: str, bag_paths: Sequence[str | Path],
                     genomics: dict[str, float] | None
                     ) -> tuple[Prediction, GenomicCoverage | None, bool]:
    """A new patient's prediction, genomic coverage, and whether the model inferred the
    genomics (MSRL's Inductor) instead of reading them."""
    model, spec = load_version(store, version_id)
    refuse_modalities(store, version_id, spec, bag_paths, genomics)
    pre = getattr(model, "preprocessor_", None)
    fill = None if pre is None or not hasattr(pre, "mean_") else pre.mean_
    data, coverage = external_cohort(spec, bag_paths, genomics if spec.reads_genomics else None,
                                     fill=fill)
    root = store.versions.root(version_id)
    inferred = is_msrl(root.model) and not spec.uses_genomics and root.model != "msrl_h"
    return _with_edges(model, model.predict(data)), coverage, inferred


def _with_edges(model: Any, prediction: Prediction) -> Prediction:
    if prediction.bin_edges is None and getattr(model, "bin_edges_", None) is not None:
        prediction.bin_edges = np.asarray(model.bin_edges_, dtype=np.float64)
    return prediction
