"""Errors a user can act on.

Every problem with user input becomes a :class:`InputError` that names the file, the
row or slide, the column, what is wrong and what to do. The CLI prints it as one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class CasegraphError(Exception):
    """Base class of errors that the CLI prints as one readable line."""


@dataclass
class InputError(CasegraphError):
    """Bad user input. ``str()`` gives one line: where, what, and the fix."""

    problem: str
    file: str | Path | None = None
    row: int | str | None = None
    column: str | None = None
    fix: str | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(f"{self.file}")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        text = (", ".join(where) + ": " if where else "") + self.problem
        if self.fix:
            text += f" (fix: {self.fix})"
        return text


class StoreError(CasegraphError):
    """The store is missing, corrupt, or in a state that refuses the request."""


class UnknownNameError(CasegraphError, KeyError):
    """A registry lookup with a name it does not know."""

    def __init__(self, kind: str, name: str, choices: list[str]) -> None:
        self.kind, self.name, self.choices = kind, name, sorted(choices)
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"unknown {self.kind} {self.name!r}; choose among: {', '.join(self.choices)}"
