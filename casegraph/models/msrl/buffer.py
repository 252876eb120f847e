"""The authentic-case buffer: a FIFO of fused features of training cases, keyed by patient.

Re-enqueuing a patient already in the buffer removes its old entry and appends the fresh
one at the tail, so the buffer never holds two copies of a case and its order is recency
(position 0 = oldest). Evaluation patients are refused outright.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor


class EvaluationLeakError(RuntimeError):
    """An evaluation patient was about to enter the buffer."""


class CaseBuffer:
    """FIFO of at most ``capacity`` (patient_id, feature (d,)) pairs."""

    def __init__(self, capacity: int, dim: int, forbidden: Iterable[str] = (),
                 device: torch.device | str = "cpu") -> None:
        self.capacity, self.dim = int(capacity), int(dim)
        self.forbidden = frozenset(forbidden)
        self._ids: list[str] = []
        self._feats = torch.zeros(0, self.dim, device=device)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    @property
    def features(self) -> Tensor:
        """(len, d), detached, FIFO order."""
        return self._feats

    def enqueue(self, patient_ids: Sequence[str], features: Tensor) -> None:
        """Append (ids, features (b, d)) at the tail, evicting from the head beyond capacity."""
        if features.shape != (len(patient_ids), self.dim):
            raise ValueError(f"expected features ({len(patient_ids)}, {self.dim}), got "
                             f"{tuple(features.shape)}")
        leaked = sorted(set(patient_ids) & self.forbidden)
        if leaked:
            raise EvaluationLeakError(f"evaluation patients must never enter the buffer: {leaked[:5]}")
        if self.capacity == 0:
            return
        fresh = set(patient_ids)
        keep = [i for i, p in enumerate(self._ids) if p not in fresh]
        ids = [self._ids[i] for i in keep] + list(patient_ids)
        feats = torch.cat([self._feats[keep], features.detach().to(self._feats.dtype)])
        # duplicates inside one batch: keep the last
        last = {p: i for i, p in enumerate(ids)}
        order = sorted(last.values())
        ids, feats = [ids[i] for i in order], feats[order]
        overflow = max(0, len(ids) - self.capacity)
        self._ids, self._feats = ids[overflow:], feats[overflow:].clone()

    def without(self, patient_ids: Iterable[str]) -> tuple[list[str], Tensor]:
        """The buffer minus the given patients (the current batch during fine-tuning)."""
        drop = set(patient_ids)
        keep = [i for i, p in enumerate(self._ids) if p not in drop]
        return [self._ids[i] for i in keep], self._feats[keep]

    def grow(self, capacity: int) -> None:
        """Raise the capacity (never evicts)."""
        self.capacity = max(self.capacity, int(capacity))

    def to(self, device: torch.device | str) -> CaseBuffer:
        """Move the features to ``device`` (in place); returns self."""
        self._feats = self._feats.to(device)
        return self

    def state(self) -> tuple[list[str], Tensor]:
        return list(self._ids), self._feats.clone()

    @classmethod
    def from_state(
        cls, ids: Sequence[str], features: Tensor, capacity: int | None = None,
        forbidden: Iterable[str] = (),
    ) -> CaseBuffer:
        buf = cls(len(ids) if capacity is None else capacity, int(features.shape[1]),
                  forbidden=forbidden)
        buf._ids, buf._feats = list(ids), features.detach().clone()
        return buf
