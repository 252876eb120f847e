"""The cohort bank: per risk group, a FIFO queue of the last ``b`` patients' knowledge
components, stored detached (no graph kept alive across steps) and saved with the model.
"""

from __future__ import annotations

import torch
from torch import nn


class CohortBank(nn.Module):
    """FIFO memory (n_groups r, length b, components c, width d), all buffers.

    ``push(group, feats)`` writes one patient's (c, d) components into its group's queue,
    overwriting the oldest entry once full. ``entries(group)`` returns the (n_g, c, d)
    stored entries of a group, oldest first.
    """

    memory: torch.Tensor
    count: torch.Tensor
    head: torch.Tensor

    def __init__(self, n_groups: int = 4, length: int = 10, n_components: int = 4,
                 dim: int = 256) -> None:
        super().__init__()
        self.n_groups, self.length = n_groups, length
        self.register_buffer("memory", torch.zeros(n_groups, length, n_components, dim))
        self.register_buffer("count", torch.zeros(n_groups, dtype=torch.long))
        self.register_buffer("head", torch.zeros(n_groups, dtype=torch.long))

    def _check(self, group: int) -> None:
        if not 0 <= group < self.n_groups:
            raise IndexError(f"risk group {group} outside 0..{self.n_groups - 1}")

    @torch.no_grad()
    def push(self, group: int, feats: torch.Tensor) -> None:
        self._check(group)
        slot = int(self.head[group])
        self.memory[group, slot] = feats.detach().to(self.memory)
        self.head[group] = (slot + 1) % self.length
        self.count[group] = min(int(self.count[group]) + 1, self.length)

    def entries(self, group: int) -> torch.Tensor:
        self._check(group)
        n = int(self.count[group])
        if n < self.length:
            return self.memory[group, :n]
        start = int(self.head[group])
        order = torch.arange(start, start + self.length) % self.length
        return self.memory[group, order]

    def size(self, group: int) -> int:
        return int(self.count[group])
