from __future__ import annotations

import numpy as np
import pytest

from casegraph.errors import InputError, UnknownNameError
from casegraph.registry import Registry
from casegraph.schema import Modality, SurvivalTarget


def test_target_validates_and_converts() -> None:
    t = SurvivalTarget.from_arrays([1.0, 2.5], [1, 0])
    assert t.event.dtype == np.bool_ and t.event.tolist() == [True, False]
    assert t.censoring_rate == 0.5
    assert t.to_structured()["time"].tolist() == [1.0, 2.5]


@pytest.mark.parametrize("time", [[-1.0, 2.0], [np.nan, 1.0], [np.inf, 1.0]])
def test_target_rejects_bad_times(time: list[float]) -> None:
    with pytest.raises(InputError, match="row 0"):
        SurvivalTarget.from_arrays(time, [1, 0], source="labels.csv")


def test_target_rejects_non_binary_event() -> None:
    with pytest.raises(InputError, match="event"):
        SurvivalTarget.from_arrays([1.0, 2.0], [1, 2])


def test_modality_suffix_split() -> None:
    assert Modality.from_suffix("TP53_rnaseq") == ("TP53", Modality.RNA)
    assert Modality.from_suffix("NKX2-1_cnv") == ("NKX2-1", Modality.CNV)
    assert Modality.from_suffix("age") is None


def test_registry_unknown_name_lists_choices() -> None:
    reg: Registry[int] = Registry("model")
    reg.add("snn", 1)
    reg.add("abmil", 2)
    with pytest.raises(UnknownNameError, match="choose among: abmil, snn"):
        reg.get("mlp")
