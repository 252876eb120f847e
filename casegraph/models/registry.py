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

# Named option sets of a registered model (name -> (model, options, summary)). Issue 16:
# the WSI-only baselines trained on MSRL's Stage-2 budget (20 epochs, lr 1e-3, batches of
# 16) with the epoch chosen on an inner validation fifth of the training fold, as MSRL's
# default does (docs/models.md, "WSI-only baselines").
TUNED_BUDGET: dict[str, Any] = {"epochs": 20, "lr": 1e-3, "batch_size": 16,
                                "select": "inner", "inner_fraction": 0.2}
PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "abmil_tuned": ("abmil", TUNED_BUDGET,
                    "ABMIL (attention) on MSRL's budget, epoch chosen on inner validation."),
    "abmil_mean_tuned": ("abmil", {**TUNED_BUDGET, "pooling": "mean"},
                         "ABMIL on the bag mean, MSRL's budget, inner-validation epoch."),
}

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
    for name, (base, preset, summary) in PRESETS.items():
        if base in MODELS.names():
            MODELS.add(name, _preset(MODELS.get(base), preset, summary))


def _preset(base: Any, preset: dict[str, Any], summary: str) -> Any:
    """A subclass of ``base`` whose defaults are ``preset`` (options still override them);
    it keeps the base's name, so its saved versions load as the base model."""

    def __init__(self: Any, **options: Any) -> None:
        base.__init__(self, **{**preset, **options})

    return type(f"{base.__name__}Preset", (base,), {"__init__": __init__, "__doc__": summary})


def model_names() -> list[str]:
    load_model_modules()
    return MODELS.names()


def build_model(name: str, **options: Any) -> SurvivalModel:
    """Construct model ``name`` with ``options``; unknown names list the known ones."""
    load_model_modules()
    return MODELS.get(name)(**options)
