"""Model versions through the REST service over real HTTP: the version list, one version,
a stored patient's prediction, and a new patient's (patch features and/or genomics as a
CSV row or JSON, with coverage), refusals, 404s and the key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from casegraph.config import BagLimits
from casegraph.ingest.store import Store
from casegraph.models.versioning import train_version
from tests.retrieval.conftest import DIM, LiveServer, copy_store, serve, write_bag

FEATURES = ["TP53_rnaseq", "EGFR_rnaseq", "TP53_cnv", "KRAS_mut"]
MAX_PATCHES = 100


@pytest.fixture(scope="module")
def versioned(tiny_store_dir: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[LiveServer, dict[str, str], Path]]:
    """The service over the tiny store with an snn (genomics) and an abmil (slides) version
    of cohort alpha."""
    torch.set_num_threads(1)
    root = copy_store(tiny_store_dir, tmp_path_factory.mktemp("served-versions") / "store")
    with Store.open(root) as store:
        ids = {"snn": train_version(store, "alpha", "snn", fold=None, epochs=2, hidden=8),
               "abmil": train_version(store, "alpha", "abmil", fold=None, epochs=2, hidden=8,
                                      max_patches=16)}
    with serve(root, BagLimits(max_patches=MAX_PATCHES, max_bytes=MAX_PATCHES * DIM * 4)
               ) as server:
        yield server, ids, root


def _stored(root: Path, version: str, patient: str) -> float:
    with Store.open(root, read_only=True) as store:
        rows = store.versions.predictions(version)
    return float(rows.loc[rows["patient_id"] == patient, "risk"].iloc[0])


def _genomics_csv(root: Path, patient: str) -> str:
    with Store.open(root, read_only=True) as store:
        matrix, _, _ = store.genomic_matrix([patient], FEATURES)
    return ("case_id,slide_id,survival_months," + ",".join(FEATURES) + "\n"
            "X1,X1-S1.svs,12.5," + ",".join(f"{v:.9g}" for v in matrix[0]) + "\n")


def test_every_version_route_needs_the_key(
        versioned: tuple[LiveServer, dict[str, str], Path]) -> None:
    server, ids, _ = versioned
    snn = ids["snn"]
    for path in ("/versions", f"/versions/{snn}", f"/versions/{snn}/predictions/A01"):
        assert httpx.get(server.url + path).status_code == 401
        assert httpx.get(server.url + path, headers={"X-API-Key": "wrong"}).status_code == 401
    assert httpx.post(f"{server.url}/versions/{snn}/predict",
                      data={"patient_id": "A01"}).status_code == 401


def test_versions_newest_first_and_one_version(
        versioned: tuple[LiveServer, dict[str, str], Path]) -> None:
    server, ids, _ = versioned
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as client:
        listed = client.get("/versions").json()
        assert [v["version_id"] for v in listed] == [ids["abmil"], ids["snn"]]
        assert listed[1]["model"] == "snn" and listed[1]["cohort"] == "alpha"
        assert listed[1]["parent_id"] is None and listed[1]["counts"]["predictions"] == 20
        assert listed[1]["created_at"] <= listed[0]["created_at"]
        one = client.get(f"/versions/{ids['snn']}").json()
        assert one["lineage"] == [ids["snn"]] and one["children"] == []
        assert one["batches"] and one["counts"] == listed[1]["counts"]
        missing = client.get("/versions/nope")
        assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def test_a_stored_patients_prediction(
        versioned: tuple[LiveServer, dict[str, str], Path]) -> None:
    server, ids, root = versioned
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as client:
        r = client.get(f"/versions/{ids['snn']}/predictions/A01")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["stored"] and body["patient_id"] == "A01" and body["model"] == "snn"
        assert body["risk"] == pytest.approx(_stored(root, ids["snn"], "A01"))
        assert body["survival"] and body["survival"][-1]["time"] is None
        form = client.post(f"/versions/{ids['snn']}/predict", data={"patient_id": "A01"})
        assert form.status_code == 200 and form.json() == body
        # a patient outside the version's cohort is computed, or refused in one line
        beta = client.get(f"/versions/{ids['snn']}/predictions/B01")
        assert beta.status_code == 400 and "B01" in beta.json()["detail"]
        assert "\n" not in beta.json()["detail"] and "--" not in beta.json()["detail"]
        computed = client.get(f"/versions/{ids['abmil']}/predictions/B01")
        assert computed.status_code == 200, computed.text
        assert not computed.json()["stored"] and computed.json()["patient_id"] == "B01"
        for path in (f"/versions/{ids['snn']}/predictions/nobody",
                     "/versions/nope/predictions/A01"):
            assert client.get(path).status_code == 404
        assert client.post("/versions/nope/predict",
                           data={"patient_id": "A01"}).status_code == 404
        assert client.post(f"/versions/{ids['snn']}/predict",
                           data={"patient_id": "nobody"}).status_code == 404


def test_a_new_patients_genomics_as_csv_or_json(
        versioned: tuple[LiveServer, dict[str, str], Path]) -> None:
    server, ids, root = versioned
    url = f"/versions/{ids['snn']}/predict"
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as client:
        csv = client.post(url, files={"genomics": ("patient.csv", _genomics_csv(root, "A03"))})
        assert csv.status_code == 200, csv.text
        body = csv.json()
        assert body["patient_id"] is None and not body["stored"] and not body["inferred"]
        assert body["risk"] == pytest.approx(_stored(root, ids["snn"], "A03"), rel=1e-4)
        assert body["coverage"]["missing"] == [] and body["coverage"]["unknown"] == []
        assert {g["group"]: (g["given"], g["expected"]) for g in body["coverage"]["groups"]} \
            == {"Tumor Suppressor Genes": (2, 2), "Oncogenes": (2, 2)}
        partial = {"TP53_rnaseq": 1.0, "KRAS_mut": None, "FOO_mut": 1}
        js = client.post(url, files={"genomics": ("g.json", json.dumps(partial))})
        assert js.status_code == 200, js.text
        coverage = js.json()["coverage"]
        assert coverage["missing"] == ["TP53_cnv", "EGFR_rnaseq", "KRAS_mut"]
        assert coverage["unknown"] == ["FOO_mut"]
        unnamed = client.post(url, files={"genomics": ("genomics", json.dumps(partial))})
        assert unnamed.status_code == 200 and unnamed.json()["coverage"] == coverage


def test_refusals_are_one_line_400s(
        versioned: tuple[LiveServer, dict[str, str], Path]) -> None:
    server, ids, root = versioned
    data = _tiny_bag(root)
    genomics = ("g.json", json.dumps({"TP53_rnaseq": 1.0}))
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as client:
        wsi = client.post(f"/versions/{ids['abmil']}/predict",
                          files=[("files", ("new.h5", data))])
        assert wsi.status_code == 200, wsi.text
        assert wsi.json()["coverage"] is None and wsi.json()["survival"]
        cases: list[tuple[str, list[Any], dict[str, str], str]] = [
            (ids["abmil"], [("files", ("new.h5", data)), ("genomics", genomics)], {},
             "trained without genomics"),
            (ids["snn"], [("files", ("new.h5", data))], {}, "trained without slides"),
            (ids["abmil"], [], {}, "nothing to predict"),
            (ids["abmil"], [("files", ("new.h5", data))], {"patient_id": "A01"}, "not both"),
            (ids["snn"], [("genomics", ("two.csv", "TP53_rnaseq\n1\n2\n"))], {}, "2 data rows"),
            (ids["snn"], [("genomics", ("bin.csv", b"\xff\xfe\x00"))], {}, "UTF-8"),
            (ids["snn"], [("genomics", ("nan.json", '{"TP53_rnaseq": "x"}'))], {},
             "not a number"),
            (ids["abmil"], [("files", ("notes.txt", b"hello"))], {}, "not a patch-feature"),
        ]
        for version, files, form, expected in cases:
            r = client.post(f"/versions/{version}/predict", files=files or None,
                            data=form or None)
            assert r.status_code == 400, (expected, r.status_code, r.text)
            detail = r.json()["detail"]
            assert expected in detail and "\n" not in detail, detail
            assert "casegraph-predict-" not in detail and "/tmp" not in detail, detail


def test_a_bag_over_the_services_limit_is_413(
        versioned: tuple[LiveServer, dict[str, str], Path], tmp_path: Path) -> None:
    server, ids, _ = versioned
    big = write_bag(tmp_path / "big.h5", 0, seed=1, n=MAX_PATCHES + 1).read_bytes()
    r = httpx.post(f"{server.url}/versions/{ids['abmil']}/predict", headers=server.headers,
                   files=[("files", ("big.h5", big))], timeout=60)
    assert r.status_code == 413 and "big.h5" in r.json()["detail"], r.text
    assert str(tmp_path) not in r.json()["detail"] and "casegraph-predict-" not in r.text


def _tiny_bag(root: Path) -> bytes:
    with Store.open(root, read_only=True) as store:
        slides = store.slides("alpha")
    path = Path(str(slides.loc[slides["slide_id"] == "A02-S1", "feature_path"].iloc[0]))
    return (path if path.is_absolute() else root / path).read_bytes()
