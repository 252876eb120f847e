"""The model registry: known names build, unknown names list the choices."""

from __future__ import annotations

import pytest

from casegraph.errors import UnknownNameError
from casegraph.models.registry import build_model


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(UnknownNameError, match="unknown model 'nope'; choose among"):
        build_model("nope")
