"""Cohort table readers: MCAT/PORPOISE, SurvPath (labels + RNA matrix), and generic tables.

Each reader returns a validated :class:`CohortTable` (one row per patient, slides listed
separately, genomics as a dense float32 matrix) or raises an
:class:`~casegraph.errors.InputError` naming file, row, column and the fix. Row numbers in
messages are 1-based line numbers of the file (the header is line 1).
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from casegraph.errors import InputError
from casegraph.ingest.files import check_regular_file
from casegraph.ingest.ids import check_patient_ids, table_slides
from casegraph.ingest.outcomes import OutcomeRow
from casegraph.schema import Modality

FloatMatrix = npt.NDArray[np.float32]
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class CohortTable:
    """A validated cohort. ``genomics[i, j]`` is feature ``feature_names[j]`` of patient i
    (NaN where the source has no value for that patient, e.g. no RNA row)."""

    source: Path
    cohort: str
    patient_ids: list[str]
    time: npt.NDArray[np.float64]
    event: npt.NDArray[np.bool_]
    attributes: list[dict[str, object]]
    slides: list[tuple[str, str]]  # (slide key, patient id)
    feature_names: list[str]
    feature_genes: list[str]
    feature_modalities: list[str]
    genomics: FloatMatrix
    extra_sources: list[Path] = field(default_factory=list)
    outcomes: list[OutcomeRow] = field(default_factory=list)  # endpoints besides OS

    @property
    def n_patients(self) -> int:
        return len(self.patient_ids)

    def slide_lists(self) -> list[list[str]]:
        """Slide keys of each patient, in ``patient_ids`` order (what the simulator takes)."""
        slides_of: dict[str, list[str]] = {p: [] for p in self.patient_ids}
        for key, pid in self.slides:
            slides_of[pid].append(key)
        return [slides_of[p] for p in self.patient_ids]


@dataclass(frozen=True)
class ColumnMapping:
    """Column names of a generic table. Exactly one of ``event`` / ``censorship`` is set:
    ``event`` means 1 = event observed; ``censorship`` means 1 = censored (MCAT style)."""

    patient: str = "case_id"
    time: str = "survival_months"
    event: str | None = None
    censorship: str | None = "censorship"
    slide: str | None = "slide_id"

    def __post_init__(self) -> None:
        if (self.event is None) == (self.censorship is None):
            raise InputError("state exactly one of the event or censorship columns",
                             fix="pass --event COL (1 = death) or --censorship COL (1 = censored)")


MCAT_MAPPING = ColumnMapping()
IGNORED_COLUMNS = {"Unnamed: 0", "Unnamed: 0.1", ""}
LEGACY_COLUMNS = {"train"}  # the PORPOISE legacy split flag: use split files instead


def read_csv_checked(path: Path, keep_index_column: bool = False, **kwargs: object) -> pd.DataFrame:
    """pandas.read_csv with every failure turned into an InputError about ``path``."""
    check_regular_file(path, "table file", "pass the table file itself (check the path)")
    _check_zip_members(path)
    if path.stat().st_size == 0:
        raise InputError("file is empty", file=path, fix="export the table again")
    try:
        df = pd.read_csv(path, low_memory=False, encoding="utf-8", **kwargs)  # type: ignore[call-overload]
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start}: {exc.reason})", file=path,
                         fix="re-save the table as UTF-8 CSV") from None
    except pd.errors.EmptyDataError:
        raise InputError("file has no columns", file=path, fix="export the table again") from None
    except pd.errors.ParserError as exc:
        raise InputError(f"not a valid CSV ({_first_line(exc)})", file=path,
                         fix="check delimiters and quoting") from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise InputError(f"cannot read the file ({exc.__class__.__name__}: {exc})", file=path,
                         fix="re-download or re-compress the file") from None
    if df.shape[0] == 0:
        raise InputError("table has a header but no rows", file=path)
    _check_unique_header(path)
    columns = list(df.columns[1:]) if keep_index_column else list(df.columns)
    drop = [c for c in columns if str(c) in IGNORED_COLUMNS or str(c).startswith("Unnamed:")]
    return df.drop(columns=drop)


def _check_zip_members(path: Path) -> None:
    """pandas reads a zip holding exactly one entry (a folder entry counts, as does macOS's
    ``__MACOSX/`` junk); say which entries a bad one holds."""
    if not path.name.lower().endswith(".zip") or not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return  # read_csv reports the damage
    if len(names) != 1:
        shown_names = ", ".join(names[:3]) + (f", ... ({len(names)} in all)" if len(names) > 3 else "")
        raise InputError(f"the zip holds {len(names)} files ({shown_names or 'none'}); a table "
                         "zip holds exactly one CSV", file=path,
                         fix="zip the table alone (zip -j -X), or unzip it and pass the CSV")


def _check_unique_header(path: Path) -> None:
    """pandas renames a repeated column ``x`` to ``x.1``: refuse it instead, by the raw header."""
    header = pd.read_csv(path, header=None, nrows=1, dtype=str, encoding="utf-8").iloc[0]
    first: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        if not isinstance(name, str) or name in IGNORED_COLUMNS or name.startswith("Unnamed:"):
            continue
        if name in first:
            raise InputError(f"column {name!r} appears twice (columns {first[name]} and "
                             f"{position})", file=path, row=1, column=name,
                             fix="remove or rename one of them; columns are never renamed")
        first[name] = position


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__


def cohort_name_from_path(path: Path) -> str:
    """``tcga_blca_all_clean.csv.zip`` -> ``blca``; otherwise the file stem."""
    name = path.name
    match = re.match(r"tcga_([a-z0-9]+)_all_clean", name)
    if match:
        return match.group(1)
    return name.split(".")[0]


def read_mcat_table(path: str | Path, cohort: str | None = None,
                    mapping: ColumnMapping = MCAT_MAPPING) -> CohortTable:
    """MCAT/PORPOISE table (one row per slide) or any table under a column ``mapping``."""
    path = Path(path)
    df = read_csv_checked(path, dtype=_id_dtypes(mapping))
    return _table_from_frame(df, path, cohort or cohort_name_from_path(path), mapping)


def _id_dtypes(mapping: ColumnMapping) -> dict[str, type]:
    """Id columns are read as text: ``001`` stays ``001``, ``1e5`` is not a number."""
    return {c: str for c in (mapping.patient, mapping.slide) if c}


def read_survpath(labels: str | Path, rna: str | Path, cohort: str | None = None) -> CohortTable:
    """SurvPath: a label table (one row per slide) plus a patients x genes RNA matrix whose
    first column is the case id. RNA columns become ``<gene>_rnaseq`` features."""
    labels, rna = Path(labels), Path(rna)
    label_df = read_csv_checked(labels, dtype=_id_dtypes(MCAT_MAPPING))
    rna_df = read_csv_checked(rna, keep_index_column=True)
    first = rna_df.columns[0]
    if rna_df[first].dtype.kind in "fiu":
        raise InputError("first column must hold case ids", file=rna, column=str(first),
                         fix="put the patient id in the first column of the RNA matrix")
    rna_df = rna_df.rename(columns={first: "__case__"})
    check_patient_ids(rna_df["__case__"], rna, str(first))
    dup = rna_df["__case__"].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(f"case {rna_df['__case__'].iloc[row]!r} appears twice", file=rna,
                         row=row + 2, column=str(first), fix="keep one row per patient")
    genes = [c for c in rna_df.columns if c != "__case__"]
    _check_numeric(rna_df, genes, rna)
    rna_df = rna_df.rename(columns={g: f"{g}_rnaseq" for g in genes})
    clash = sorted(set(label_df.columns) & set(rna_df.columns))
    if clash:
        raise InputError(f"column {clash[0]!r} is in both the label table and (as an RNA gene) "
                         f"the RNA matrix {rna}", file=labels, row=1, column=clash[0],
                         fix="keep RNA values in the RNA matrix only")
    merged = label_df.merge(rna_df, how="left", left_on="case_id", right_on="__case__")
    merged = merged.drop(columns=["__case__"])
    table = _table_from_frame(merged, labels, cohort or labels.parent.name, MCAT_MAPPING,
                              allow_missing_genomics=True)
    table.extra_sources.append(rna)
    return table


def _table_from_frame(df: pd.DataFrame, path: Path, cohort: str, mapping: ColumnMapping,
                      allow_missing_genomics: bool = False) -> CohortTable:
    label_col = mapping.event or mapping.censorship
    required = [mapping.patient, mapping.time, label_col]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"missing required column(s) {missing}", file=path,
                         fix=f"the table needs {required}; for other names pass a column mapping")
    feature_cols = [c for c in df.columns if Modality.from_suffix(str(c))]
    _check_numeric(df, feature_cols, path, allow_nan=allow_missing_genomics)
    ids = pd.Series(check_patient_ids(df[mapping.patient], path, mapping.patient), index=df.index)
    time = _numeric_column(df, mapping.time, path)
    bad = np.flatnonzero(~np.isfinite(time) | (time < 0) | (time > FLOAT32_MAX))
    if bad.size:
        raise InputError(f"survival time must be finite, >= 0 and within the 32-bit float "
                         f"range, got {time[bad[0]]!r}",
                         file=path, row=int(bad[0]) + 2, column=mapping.time,
                         fix="correct or remove the row")
    label = _numeric_column(df, str(label_col), path)
    bad = np.flatnonzero(~np.isin(label, (0.0, 1.0)))
    if bad.size:
        raise InputError(f"{label_col} must be 0 or 1, got {df[label_col].iloc[bad[0]]!r}",
                         file=path, row=int(bad[0]) + 2, column=str(label_col),
                         fix="use 1 = censored/alive, 0 = death" if mapping.censorship
                         else "use 1 = event observed, 0 = censored")
    event = (label == 1.0) if mapping.event else (label == 0.0)
    values = df[feature_cols].to_numpy(dtype=np.float32) if feature_cols else np.zeros(
        (len(df), 0), dtype=np.float32)
    first_rows = _first_row_per_patient(ids, time, event, values, path, mapping)
    endpoint_columns = find_endpoint_columns(df, path)
    outcomes = [row for columns in endpoint_columns
                for row in _endpoint_rows(df, ids, first_rows, columns, path)]
    skip = (set(feature_cols) | set(required) | LEGACY_COLUMNS | {mapping.slide}
            | {c for columns in endpoint_columns for c in (columns.time, columns.event)})
    attr_cols = [c for c in df.columns if c not in skip]
    attributes = _attributes(df.iloc[first_rows], attr_cols)
    slides: list[tuple[str, str]] = []
    if mapping.slide and mapping.slide in df.columns:
        slides = table_slides(df[mapping.slide], list(ids), path, mapping.slide)
    split = [Modality.from_suffix(str(c)) for c in feature_cols]
    return CohortTable(
        source=path, cohort=cohort,
        patient_ids=list(ids.iloc[first_rows]),
        time=time[first_rows], event=event[first_rows], attributes=attributes, slides=slides,
        feature_names=[str(c) for c in feature_cols],
        feature_genes=[s[0] for s in split if s], feature_modalities=[s[1].value for s in split if s],
        genomics=np.ascontiguousarray(values[first_rows]), outcomes=outcomes,
    )


def _numeric_column(df: pd.DataFrame, column: str, path: Path) -> npt.NDArray[np.float64]:
    """The column as float64; a non-number or an empty cell is a one-line error."""
    values = _optional_numeric(df, column, path, fix=None)
    missing = np.isnan(values)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise InputError("missing value", file=path, row=row + 2, column=column,
                         fix="fill in the value or remove the row")
    return values


def _check_numeric(df: pd.DataFrame, columns: list[str], path: Path,
                   allow_nan: bool = False) -> None:
    if not columns:
        return
    kinds = df.dtypes
    non_numeric = [c for c in columns if kinds[c].kind not in "fiub"]
    for col in non_numeric:
        converted = pd.to_numeric(df[col], errors="coerce")
        bad = converted.isna() & df[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(f"not a number: {df[col].iloc[row]!r}", file=path, row=row + 2,
                             column=str(col), fix="genomic features must be numeric")
        df[col] = converted
    values = df[columns].to_numpy(dtype=np.float64)
    bad_mask = np.isinf(values) if allow_nan else ~np.isfinite(values)
    if bad_mask.any():
        bad_row, bad_col = (int(x[0]) for x in np.nonzero(bad_mask))
        raise InputError(f"feature value is {values[bad_row, bad_col]!r}", file=path,
                         row=bad_row + 2, column=str(columns[bad_col]),
                         fix="impute or drop the feature; NaN/inf are not accepted")
    _check_float32_range(values, columns, path)


def _check_float32_range(values: npt.NDArray[np.float64], columns: list[str], path: Path) -> None:
    """Genomics are stored as float32: a value beyond its range would become inf, then missing."""
    with np.errstate(invalid="ignore"):
        too_big = np.abs(values) > FLOAT32_MAX
    if too_big.any():
        bad_row, bad_col = (int(x[0]) for x in np.nonzero(too_big))
        raise InputError(f"feature value {values[bad_row, bad_col]!r} is beyond the stored "
                         f"32-bit float range (+-{FLOAT32_MAX:.3g})", file=path,
                         row=bad_row + 2, column=str(columns[bad_col]),
                         fix="rescale the feature (e.g. log) or correct the value")


def _first_row_per_patient(ids: pd.Series, time: np.ndarray, event: np.ndarray,
                           values: FloatMatrix, path: Path, mapping: ColumnMapping) -> np.ndarray:
    """Index of each patient's first row; every repeated row must agree with it."""
    codes, uniques = pd.factorize(ids)
    first = np.full(len(uniques), -1, dtype=np.int64)
    order = np.arange(len(codes))[::-1]
    first[codes[order]] = order  # the last write wins: the smallest row index
    ref = first[codes]
    for name, column, arr in (("survival time", mapping.time, time), ("event label",
                              mapping.event or mapping.censorship, event)):
        bad = np.flatnonzero(arr != arr[ref])
        if bad.size:
            r = int(bad[0])
            raise InputError(
                f"patient {ids.iloc[r]!r} has conflicting {name}s (rows {int(ref[r]) + 2} and "
                f"{r + 2})", file=path, row=r + 2, column=str(column),
                fix="make every row of a patient carry the same label")
    if values.shape[1]:
        same = (values == values[ref]) | (np.isnan(values) & np.isnan(values[ref]))
        bad_rows = np.flatnonzero(~same.all(axis=1))
        if bad_rows.size:
            r = int(bad_rows[0])
            raise InputError(
                f"patient {ids.iloc[r]!r} has different genomic values on rows "
                f"{int(ref[r]) + 2} and {r + 2}", file=path, row=r + 2,
                fix="a patient's genomics must be identical on all its slide rows")
    return first


def _attributes(df: pd.DataFrame, columns: list[str]) -> list[dict[str, object]]:
    if not columns:
        return [{} for _ in range(len(df))]
    records = df[columns].to_dict(orient="records")
    return [json.loads(json.dumps({k: None if _is_missing(v) else v for k, v in r.items()},
                                  default=str)) for r in records]


def _is_missing(value: object) -> bool:
    return isinstance(value, float) and np.isnan(value)


@dataclass(frozen=True)
class EndpointColumns:
    """The two columns of one endpoint besides OS. SurvPath style (``survival_months_dss``,
    ``censorship_dss``: months, 1 = censored) or TCGA-CDR style (``DSS.time``, ``DSS``:
    days, 1 = event observed); ``days`` says CDR times are converted to months."""

    endpoint: str
    time: str
    event: str
    censorship: bool
    days: bool


DAYS_PER_MONTH = 30.0  # SurvPath's survival_months is days / 30 (shared data README)
SURVPATH_ENDPOINT = re.compile(r"^(survival_months|censorship)_(dss|pfi|dfi)$")
CDR_ENDPOINT = re.compile(r"^(DSS|PFI|DFI)(\.time)?$")


def find_endpoint_columns(df: pd.DataFrame, path: Path) -> list[EndpointColumns]:
    """The DSS / PFI / DFI column pairs of a table; a time column without its event column
    (or the reverse) is an InputError naming the column and the one missing."""
    found: list[EndpointColumns] = []
    names = {str(c) for c in df.columns}
    for name in sorted(names):
        survpath, cdr = SURVPATH_ENDPOINT.match(name), CDR_ENDPOINT.match(name)
        if survpath:
            suffix = survpath.group(2)
            time, event = f"survival_months_{suffix}", f"censorship_{suffix}"
            columns = EndpointColumns(suffix.upper(), time, event, censorship=True, days=False)
        elif cdr:
            endpoint = cdr.group(1)
            columns = EndpointColumns(endpoint, f"{endpoint}.time", endpoint, censorship=False,
                                      days=True)
        else:
            continue
        other = columns.event if name == columns.time else columns.time
        if other not in names:
            what = "time" if name == columns.time else "event"
            raise InputError(f"{columns.endpoint} {what} column {name!r} has no "
                             f"{'event' if what == 'time' else 'time'} column {other!r}",
                             file=path, row=1, column=name,
                             fix=f"add {other!r}, or drop {name!r}")
        if name == columns.time:
            found.append(columns)
    endpoints = [c.endpoint for c in found]
    twice = sorted({e for e in endpoints if endpoints.count(e) > 1})
    if twice:
        both = [c for c in found if c.endpoint == twice[0]]
        raise InputError(f"endpoint {twice[0]} is given twice ({both[0].time!r} and "
                         f"{both[1].time!r})", file=path, row=1, column=both[1].time,
                         fix="keep one pair of columns per endpoint")
    return found


def _endpoint_rows(df: pd.DataFrame, ids: pd.Series, first_rows: np.ndarray,
                   columns: EndpointColumns, path: Path) -> list[OutcomeRow]:
    """One row per patient with a value; both cells empty = no value for that patient (a
    TCGA-CDR DFI is defined for some patients only). Repeated rows of a patient agree."""
    time = _optional_numeric(df, columns.time, path)
    label = _optional_numeric(df, columns.event, path)
    has_time, has_label = ~np.isnan(time), ~np.isnan(label)
    lone = np.flatnonzero(has_time != has_label)
    if lone.size:
        r = int(lone[0])
        given, empty = ((columns.time, columns.event) if has_time[r]
                        else (columns.event, columns.time))
        raise InputError(f"{columns.endpoint}: {given!r} has a value but {empty!r} is empty",
                         file=path, row=r + 2, column=empty,
                         fix="give both the time and the event, or leave both empty")
    bad = np.flatnonzero(has_time & ((time < 0) | (time > FLOAT32_MAX) | ~np.isfinite(time)))
    if bad.size:
        raise InputError(f"{columns.endpoint} time must be finite, >= 0 and within the 32-bit "
                         f"float range, got {time[bad[0]]!r}", file=path, row=int(bad[0]) + 2,
                         column=columns.time, fix="correct or remove the value")
    bad = np.flatnonzero(has_label & ~np.isin(label, (0.0, 1.0)))
    if bad.size:
        raise InputError(f"{columns.event} must be 0 or 1, got {df[columns.event].iloc[bad[0]]!r}",
                         file=path, row=int(bad[0]) + 2, column=columns.event,
                         fix="use 1 = censored, 0 = event" if columns.censorship
                         else "use 1 = event observed, 0 = censored")
    _check_endpoint_repeats(ids, time, label, first_rows, columns, path)
    months = time / DAYS_PER_MONTH if columns.days else time
    event = label == (0.0 if columns.censorship else 1.0)
    return [OutcomeRow(str(ids.iloc[r]), columns.endpoint, float(months[r]), bool(event[r]))
            for r in first_rows if has_time[r]]


def _optional_numeric(df: pd.DataFrame, column: str, path: Path,
                      fix: str | None = "leave the cell empty when there is no value",
                      ) -> npt.NDArray[np.float64]:
    """The column as float64 with NaN for empty cells; a non-number is a one-line error."""
    converted = pd.to_numeric(df[column], errors="coerce")
    bad = converted.isna() & df[column].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"not a number: {df[column].iloc[row]!r}", file=path, row=row + 2,
                         column=column, fix=fix)
    return converted.to_numpy(dtype=np.float64)


def _check_endpoint_repeats(ids: pd.Series, time: np.ndarray, label: np.ndarray,
                            first_rows: np.ndarray, columns: EndpointColumns, path: Path) -> None:
    codes, _ = pd.factorize(ids)
    ref = first_rows[codes]
    for column, values in ((columns.time, time), (columns.event, label)):
        same = (values == values[ref]) | (np.isnan(values) & np.isnan(values[ref]))
        bad = np.flatnonzero(~same)
        if bad.size:
            r = int(bad[0])
            raise InputError(f"patient {ids.iloc[r]!r} has conflicting {columns.endpoint} "
                             f"values (rows {int(ref[r]) + 2} and {r + 2})", file=path,
                             row=r + 2, column=column,
                             fix="make every row of a patient carry the same label")
