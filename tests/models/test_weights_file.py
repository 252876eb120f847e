"""Model weight files load without unpickling: foreign or malicious files are clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from casegraph.errors import InputError
from casegraph.models.weights_file import array, load_weights, save_weights


class _RunsCode:
    """Unpickling this object would create a file: the proof that code ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.target,))


def test_round_trip_keeps_arrays_tuples_and_numbers(tmp_path: Path) -> None:
    edges = np.array([0.0, 1.5, 3.0])
    payload = {"edges": edges, "means": [np.ones(3, np.float32)], "enc": ("a", "b"),
               "n": np.int64(4), "state_dict": {"w": torch.ones(2)}}
    save_weights(tmp_path / "w.pt", "snn", payload)
    blob = load_weights(tmp_path / "w.pt", "snn")
    assert np.array_equal(array(blob["edges"]), edges)
    assert array(blob["means"][0], np.float32).dtype == np.float32
    assert blob["enc"] == ("a", "b") and blob["n"] == 4 and isinstance(blob["n"], int)
    assert torch.equal(blob["state_dict"]["w"], torch.ones(2))


def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    proof = tmp_path / "code-ran"
    torch.save({"format": "casegraph-weights/1", "model": "snn", "x": _RunsCode(proof)},
               tmp_path / "evil.pt")
    with pytest.raises(InputError, match="not a casegraph weights file"):
        load_weights(tmp_path / "evil.pt", "snn")
    assert not proof.exists()


@pytest.mark.parametrize("content", [b"", b"not a torch file", pickle.dumps({"a": 1})])
def test_files_that_are_not_ours_name_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "foreign.pt"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        load_weights(path, "snn")
    assert str(path) in str(err.value) and "fix:" in str(err.value)


def test_a_plain_state_dict_or_another_model_is_refused(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2)}, tmp_path / "plain.pt")
    with pytest.raises(InputError, match="no casegraph format mark"):
        load_weights(tmp_path / "plain.pt", "snn")
    save_weights(tmp_path / "ccl.pt", "ccl", {})
    with pytest.raises(InputError, match="expected 'snn'"):
        load_weights(tmp_path / "ccl.pt", "snn")
    with pytest.raises(InputError, match="not found"):
        load_weights(tmp_path / "missing.pt", "snn")


def test_a_legacy_file_without_the_mark_loads_only_with_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save({"net": {"w": torch.ones(2)}, "target": {"w": torch.zeros(2)}}, path)
    blob = load_weights(path, "msrl", legacy_keys=("net", "target"))
    assert torch.equal(blob["net"]["w"], torch.ones(2))
    with pytest.raises(InputError, match="format mark"):
        load_weights(path, "msrl")
    with pytest.raises(InputError, match="format mark"):
        load_weights(path, "msrl", legacy_keys=("net", "target", "other"))
