"""Stage-1 checkpoints: pre-train once per (training data, Stage-1 options), then reuse.

MSRL's self-supervised Stage 1 is the slow part of training and does not depend on any
Stage-2 option (epochs, buffer size or source, loss weights, ...). A checkpoint is keyed
by the hash of the Stage-1-relevant options and of the exact training inputs (patient ids
in order, WSI inputs, genomics), so a fine-tuning variant or a re-run (``casegraph train
--stage finetune``, the buffer-size sweep, a resumed CV) loads it instead of pre-training
again, and a changed store or option can never pick up a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from casegraph.models.msrl.config import MSRLConfig
from casegraph.models.msrl.nets import MSRLNetwork, WSIInput

STAGES = ("all", "pretrain", "finetune")
# Options that only Stage 2 reads: they do not change a Stage-1 checkpoint.
STAGE2_ONLY = frozenset({
    "epochs", "batch_size", "lr", "ema_momentum", "buffer_fraction", "buffer_source",
    "mixup_alpha", "w_f_align", "w_g_align", "w_s_align", "w_task", "batch_edges",
})


def stage1_key(config: MSRLConfig, patient_ids: list[str], wsi: WSIInput,
               groups: list[Tensor] | None) -> str:
    """A digest of everything Stage 1 depends on."""
    digest = hashlib.sha256()
    options = {k: v for k, v in config.to_dict().items() if k not in STAGE2_ONLY}
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    digest.update("\0".join(patient_ids).encode())
    for tensor in (wsi if isinstance(wsi, list) else [wsi]) + (groups or []):
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


@dataclass
class Stage1Cache:
    """A folder of ``stage1-<key>.pt`` files (network state + the loss per step)."""

    folder: Path

    def path(self, key: str) -> Path:
        return self.folder / f"stage1-{key}.pt"

    def load(self, key: str, net: MSRLNetwork) -> list[float] | None:
        """Load the checkpoint into ``net``; returns its loss history, None when absent."""
        path = self.path(key)
        if not path.exists():
            return None
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(saved["state"])
        return [float(x) for x in saved["history"]]

    def save(self, key: str, net: MSRLNetwork, history: list[float]) -> Path:
        """Write atomically (a killed run never leaves a half-written checkpoint)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save({"state": net.state_dict(), "history": history}, tmp)
        os.replace(tmp, path)
        return path
