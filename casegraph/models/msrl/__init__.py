"""MSRL: graph structure learning over cases, the authentic-case buffer, WSI-only inference.

Registered models: ``msrl`` (WSI-only inference), ``msrl_h`` (no genomics), ``msrl_multi``
(authentic genomics at inference) and the paper's Table 3 ablations as named presets
(each is ``msrl`` with one option changed).
"""

from __future__ import annotations

from typing import Any

from casegraph.errors import InputError
from casegraph.models.msrl.config import MSRLConfig
from casegraph.models.msrl.model import MSRLModel, WSIOnlyAnswer
from casegraph.models.registry import MODELS

__all__ = ["ABLATIONS", "MSRLConfig", "MSRLModel", "WSIOnlyAnswer"]

ABLATIONS: dict[str, dict[str, Any]] = {
    "msrl_knn_cosine": {"graph": "cosine_knn"},
    "msrl_knn_euclidean": {"graph": "euclidean_knn"},
    "msrl_random_gsl": {"pretrain_steps": 0},
    "msrl_online_buffer": {"buffer_source": "online"},
    "msrl_shuffled_buffer": {"buffer_genomics": "shuffled"},
}


SUMMARIES = {
    "msrl": "MSRL: GSL over a buffer of authentic cases; WSI-only at inference (Inductor prompt).",
    "msrl_h": "MSRL without genomics (histology only, in training and inference).",
    "msrl_multi": "MSRL with the patient's authentic genomics at inference (multimodal).",
    "msrl_knn_cosine": "MSRL ablation: a static cosine k-NN graph instead of the learned one.",
    "msrl_knn_euclidean": "MSRL ablation: a static Euclidean k-NN graph instead of the learned one.",
    "msrl_random_gsl": "MSRL ablation: no Stage-1 pre-training (graph learner from random init).",
    "msrl_online_buffer": "MSRL ablation: the buffer filled online (FIFO) instead of from training.",
    "msrl_shuffled_buffer": "MSRL ablation: the buffer's genomics permuted across its cases "
                            "(right slides, someone else's genomics).",
}


def _factory(name: str, variant: str, preset: dict[str, Any]) -> Any:
    def build(**options: Any) -> MSRLModel:
        clash = sorted(k for k in preset if k in options and options[k] != preset[k])
        if clash:
            fixed = ", ".join(f"{k}={preset[k]!r}" for k in clash)
            raise InputError(f"{name} fixes {fixed}; it cannot be overridden",
                             column="--option", fix=f"drop --option {clash[0]}=..., or use "
                             f"msrl with the options you want")
        model = MSRLModel(variant, **{**preset, **options})
        model.name = name
        return model

    build.__doc__ = SUMMARIES[name]
    build.uses_slides = True  # type: ignore[attr-defined]  # the CLI loads slide-bearing patients
    build.uses_stage1_cache = True  # type: ignore[attr-defined]  # the CLI offers --stage
    return build


for _name in ("msrl", "msrl_h", "msrl_multi"):
    MODELS.add(_name, _factory(_name, _name, {}))
for _name, _preset in ABLATIONS.items():
    MODELS.add(_name, _factory(_name, "msrl", _preset))
