"""Patient and slide ids are kept exactly as a table gives them; one that cannot be is an error.

A slide id names its bag file ``<id>.h5``. The one mapping applied is dropping a known
slide-file extension (``TCGA-X.svs`` in a table matches ``TCGA-X.h5`` on disk), so a slide
id cannot hold a folder separator, be empty or ``.``/``..`` after that, or make a bag file
name (or the simulator's temporary ``.<id>.h5.tmp``) longer than a file system allows; two
ids of a table that map to one bag file are an error.
Every id is refused with leading or trailing spaces or a control character: they are
invisible in messages and other tools strip or mangle them, so two distinct ids could merge.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from casegraph.errors import InputError
from casegraph.ingest.bags import slide_key

MAX_FILE_NAME_BYTES = 255  # ext4, XFS, APFS and NTFS
# The longest name casegraph writes for a slide is the simulator's ".<id>.h5.tmp".
MAX_SLIDE_ID_BYTES = MAX_FILE_NAME_BYTES - len("..h5.tmp")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SHOWN_CHARS = 40


def shown(value: str) -> str:
    """``repr`` of an id for a one-line message (a 5,000-character id is cut for display)."""
    if len(value) <= _SHOWN_CHARS:
        return repr(value)
    return repr(value[:_SHOWN_CHARS]) + f"... ({len(value)} characters)"


def id_problem(value: str) -> tuple[str, str] | None:
    """(what is wrong, the fix) for any id, or None when it can be kept as given."""
    if not value.strip():
        return "is empty", "fill in the id or remove the row"
    if value != value.strip():
        return "has leading or trailing spaces", "remove the spaces from the id in the table"
    if _CONTROL.search(value):
        return ("contains a control character (tab, newline, ...)",
                "remove the control character from the id in the table")
    return None


def slide_id_problem(value: str) -> tuple[str, str] | None:
    """:func:`id_problem` plus what a slide id needs to name its bag file."""
    problem = id_problem(value)
    if problem:
        return problem
    if "/" in value or "\\" in value:
        return ("contains a folder separator; slide ids name bag files <id>.h5 and are never "
                "cut to their last part", "give the slide's own name without folders "
                "(e.g. TCGA-XX-XXXX-01Z-00-DX1.svs)")
    key = slide_key(value)
    if key in ("", ".", ".."):
        return f"names no bag file ({key!r} + .h5)", "give the slide a real name"
    size = len(key.encode("utf-8"))
    if size > MAX_SLIDE_ID_BYTES:
        return (f"is too long ({size} bytes in UTF-8; at most {MAX_SLIDE_ID_BYTES}, so that "
                f"its bag files' names fit the {MAX_FILE_NAME_BYTES}-byte limit of file "
                "systems)", "shorten the slide id in the table")
    return None


def check_patient_ids(ids: pd.Series, path: Path, column: str) -> list[str]:
    """The patient-id column as strings, each checked; row numbers are file lines."""
    out = []
    for i, value in enumerate(ids):
        text = value if isinstance(value, str) else ("" if pd.isna(value) else str(value))
        problem = id_problem(text)
        if problem:
            raise InputError(f"patient id {shown(text)} {problem[0]}", file=path, row=i + 2,
                             column=column, fix=problem[1])
        out.append(text)
    return out


def check_slide_id(value: str, path: Path, row: int, column: str) -> str:
    """The bag-file key of one slide id (see module doc), or an InputError naming the row."""
    problem = slide_id_problem(value)
    if problem:
        raise InputError(f"slide id {shown(value)} {problem[0]}", file=path, row=row,
                         column=column, fix=problem[1])
    return slide_key(value)


def table_slides(raw: pd.Series, patient_ids: list[str], path: Path,
                 column: str) -> list[tuple[str, str]]:
    """(bag key, patient id) of each distinct slide; an empty cell is a row without a slide.

    The same slide id repeated on rows of its one patient is one slide; one bag key reached
    by two different ids, or listed for two patients, is an error naming both rows.
    """
    first: dict[str, tuple[int, str, str]] = {}
    slides: list[tuple[str, str]] = []
    for i, (value, pid) in enumerate(zip(raw, patient_ids, strict=True)):
        if not isinstance(value, str):
            continue
        key = check_slide_id(value, path, i + 2, column)
        if key not in first:
            first[key] = (i + 2, value, pid)
            slides.append((key, pid))
            continue
        row, value0, pid0 = first[key]
        if pid0 != pid:
            raise InputError(f"slide {shown(key)} is listed for patient {shown(pid0)} (row {row}) "
                             f"and for patient {shown(pid)}", file=path, row=i + 2, column=column,
                             fix="a slide belongs to one patient; correct one of the rows")
        if value0 != value:
            raise InputError(f"slide ids {shown(value0)} (row {row}) and {shown(value)} name the "
                             f"same bag file {shown(key + '.h5')}", file=path, row=i + 2,
                             column=column, fix="give each slide a distinct id")
    return slides
