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

    build.uses_slides = True  # type: ignore[attr-defined]  # the CLI loads slide-bearing patients
    build.uses_stage1_cache = True  # type: ignore[attr-defined]  # the CLI offers --stage
    return build


for _name in ("msrl", "msrl_h", "msrl_multi"):
    MODELS.add(_name, _factory(_name, _name, {}))
for _name, _preset in ABLATIONS.items():
    MODELS.add(_name, _factory(_name, "msrl", _preset))
