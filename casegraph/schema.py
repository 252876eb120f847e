"""Shared data types: the survival target (validated once, at the boundary) and modalities."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from casegraph.errors import InputError


class Modality(StrEnum):
    """Genomic modalities and the column suffix the MCAT/PORPOISE tables use for each."""

    RNA = "rna"
    CNV = "cnv"
    MUT = "mut"

    @property
    def suffix(self) -> str:
        return {"rna": "_rnaseq", "cnv": "_cnv", "mut": "_mut"}[self.value]

    @classmethod
    def from_suffix(cls, column: str) -> tuple[str, Modality] | None:
        """Split ``"TP53_rnaseq"`` into ``("TP53", Modality.RNA)``; None if no known suffix."""
        stem, sep, tail = column.rpartition("_")
        if not sep or not stem:
            return None
        modality = _MODALITY_OF_SUFFIX.get(tail)
        return None if modality is None else (stem, modality)


_MODALITY_OF_SUFFIX = {"rnaseq": Modality.RNA, "cnv": Modality.CNV, "mut": Modality.MUT}


@dataclass(frozen=True)
class SurvivalTarget:
    """Right-censored survival outcomes for n patients.

    ``time``: float64 array (n,), finite and >= 0 (months by convention).
    ``event``: bool array (n,), True = the event (death) was observed, False = censored.
    Construct with :meth:`from_arrays`, which validates; the raw constructor trusts its input.
    """

    time: npt.NDArray[np.float64]
    event: npt.NDArray[np.bool_]

    @classmethod
    def from_arrays(
        cls,
        time: npt.ArrayLike,
        event: npt.ArrayLike,
        *,
        source: str = "survival target",
    ) -> SurvivalTarget:
        t = np.asarray(time, dtype=np.float64)
        e_raw = np.asarray(event)
        if t.ndim != 1 or e_raw.shape != t.shape:
            raise InputError(
                f"time and event must be 1-d of equal length, got {t.shape} and {e_raw.shape}",
                file=source,
            )
        bad = np.flatnonzero(~np.isfinite(t) | (t < 0))
        if bad.size:
            raise InputError(
                f"survival time must be finite and >= 0, got {t[bad[0]]!r}",
                file=source,
                row=int(bad[0]),
                column="time",
                fix="remove or correct the row",
            )
        if e_raw.dtype != np.bool_:
            e_num = e_raw.astype(np.float64)
            bad = np.flatnonzero(~np.isin(e_num, (0.0, 1.0)))
            if bad.size:
                raise InputError(
                    f"event must be 0/1 or boolean, got {e_raw[bad[0]]!r}",
                    file=source,
                    row=int(bad[0]),
                    column="event",
                )
            e = e_num.astype(bool)
        else:
            e = e_raw
        return cls(time=t, event=e)

    def __len__(self) -> int:
        return int(self.time.shape[0])

    def __getitem__(self, index: npt.ArrayLike) -> SurvivalTarget:
        idx = np.asarray(index)
        return SurvivalTarget(time=self.time[idx], event=self.event[idx])

    @property
    def censoring_rate(self) -> float:
        return float(1.0 - self.event.mean()) if len(self) else float("nan")

    def to_structured(self) -> npt.NDArray[np.void]:
        """The scikit-survival structured array (``event``, ``time``)."""
        out = np.empty(len(self), dtype=[("event", bool), ("time", np.float64)])
        out["event"], out["time"] = self.event, self.time
        return out
