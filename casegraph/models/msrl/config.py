"""MSRL options: every paper-silent choice is a named field with a documented default.

See docs/models.md ("MSRL") for the reasons behind each default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from casegraph.errors import InputError

GENOMICS_MODES = ("inductor", "authentic", "none")
GRAPH_KINDS = ("learned", "cosine_knn", "euclidean_knn")
BUFFER_SOURCES = ("target", "online")
WSI_ENCODERS = ("mean_mlp", "abmil")
READOUTS = ("z", "z_skip", "z_gated")
BUFFER_GENOMICS = ("authentic", "shuffled")
TASKS = ("survival", "classification")


@dataclass
class MSRLConfig:
    # --- variant -------------------------------------------------------------------
    genomics_mode: str = "inductor"  # MSRL: Inductor prompt; MSRL_multi: authentic; MSRL_H: none
    task: str = "survival"
    label: str | None = None  # classification: the patient attribute column
    n_bins: int = 4
    # --- representations ---------------------------------------------------------------
    group_set: str = "mcat"
    wsi_encoder: str = "mean_mlp"
    dim: int = 256  # d_h = d_g = GCN output
    dropout: float = 0.25
    # --- graph structure learner -------------------------------------------------------
    graph: str = "learned"
    gsl_layers: int = 2
    k: int = 12
    gcn_layers: int = 3
    readout: str = "z_skip"  # "z": Z alone; "z_skip": [Z, f]; "z_gated": Z + a per-case gate on f
    # z_skip / z_gated: drop a training case's f from the readout with this probability
    # (inverted scaling), so the head must also predict from the graph output Z
    skip_dropout: float = 0.0
    batch_edges: bool = False  # may current cases link to each other during fine-tuning?
    # --- stage 1 ----------------------------------------------------------------------
    pretrain_steps: int = 100
    pretrain_lr: float = 1e-3
    edge_drop: float = 0.2
    edge_add: float = 0.2
    tau: float = 0.2
    proj_dim: int = 128
    # --- stage 2 ----------------------------------------------------------------------
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-5
    ema_momentum: float = 0.99
    buffer_fraction: float = 1.0
    buffer_source: str = "target"
    # "shuffled" (ablation): the buffer's genomic halves permuted across its cases after
    # training, so the graph sees the right slides with someone else's genomics
    buffer_genomics: str = "authentic"
    mixup_alpha: float = 0.4
    w_f_align: float = 1.0
    w_g_align: float = 1.0
    w_s_align: float = 1.0
    w_task: float = 1.0
    # epoch selection: 0 = the last epoch; f > 0 = keep the Stage-2 epoch with the best
    # C-index on an inner validation split (fraction f of the training fold, stratified by
    # event); stop after ``patience`` epochs without improvement (0 = never stop early)
    inner_valid: float = 0.0
    patience: int = 0
    seed: int = 0
    # training runs here ("auto": CUDA when present); the fitted model answers on the CPU
    device: str = "auto"

    def __post_init__(self) -> None:
        choices = {
            "genomics_mode": GENOMICS_MODES,
            "graph": GRAPH_KINDS,
            "buffer_source": BUFFER_SOURCES,
            "wsi_encoder": WSI_ENCODERS,
            "readout": READOUTS,
            "buffer_genomics": BUFFER_GENOMICS,
            "task": TASKS,
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise InputError(
                    f"MSRL option {name}={value!r} is not one of {', '.join(allowed)}",
                    column=name,
                )
        if not 0.0 <= self.buffer_fraction <= 1.0:
            raise InputError(
                f"buffer_fraction must be in [0, 1], got {self.buffer_fraction}",
                column="buffer_fraction",
            )
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise InputError(f"device must be auto, cpu or cuda[:N], got {self.device!r}",
                             column="device")
        for name in ("skip_dropout", "inner_valid"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise InputError(f"{name} must be in [0, 1), got {getattr(self, name)}",
                                 column=name)
        if self.patience < 0:
            raise InputError(f"patience must be >= 0, got {self.patience}", column="patience")
        if self.k < 1:
            raise InputError(f"k must be >= 1, got {self.k}", column="k")
        if self.buffer_genomics == "shuffled" and self.genomics_mode == "none":
            raise InputError("buffer_genomics='shuffled' needs a variant with genomics in its "
                             "buffer (msrl, msrl_multi)", column="buffer_genomics")
        if self.task == "classification" and not self.label:
            raise InputError(
                "task 'classification' needs a label column",
                column="label",
                fix="pass label=COLUMN (a patient attribute such as oncotree_code)",
            )

    @property
    def uses_genomics(self) -> bool:
        return self.genomics_mode != "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_options(cls, **options: Any) -> MSRLConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(
                f"unknown MSRL option(s) {', '.join(unknown)}; choose among: "
                + ", ".join(sorted(known))
            )
        return cls(**options)
