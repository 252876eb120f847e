"""The model registry: ``build_model("snn", epochs=5)`` -> a SurvivalModel.

Model modules register a factory (usually the class) with ``@MODELS.register("name")``.
They are imported lazily on the first lookup; a module that does not exist (yet) is
skipped, so the registry works while the model families are still being written.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

from casegraph.models.base import SurvivalModel
from casegraph.registry import Registry

MODELS: Registry[Callable[..., SurvivalModel]] = Registry("model")

MODEL_MODULES = (
    "casegraph.models.baselines",
    "casegraph.models.murrenet",
    "casegraph.models.ccl",
    "casegraph.models.msrl",
    "casegraph.models.retrieval_impute",
    "casegraph.models.neighbour_outcome",
)

_loaded = False


def load_model_modules() -> None:
    """Import every model module that exists (each registers itself); idempotent."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in MODEL_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


def model_names() -> list[str]:
    load_model_modules()
    return MODELS.names()


def build_model(name: str, **options: Any) -> SurvivalModel:
    """Construct model ``name`` with ``options``; unknown names list the known ones."""
    load_model_modules()
    return MODELS.get(name)(**options)
