"""The REST service over real HTTP (uvicorn on 127.0.0.1 in a thread)."""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import httpx
import numpy as np
import pytest

from casegraph.errors import CasegraphError
from casegraph.retrieval.service import create_app
from tests.retrieval.conftest import MAX_BODY, LiveServer, write_bag


def _h5_bytes(group: int, seed: int, dim: int = 16) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    with h5py.File(buffer, "w") as handle:
        from tests.retrieval.conftest import prototypes

        base = prototypes()[group] if dim == 16 else np.zeros(dim)
        handle["features"] = (base + rng.normal(size=(24, dim))).astype(np.float32)
    return buffer.getvalue()


def test_health_needs_no_key_and_everything_else_does(live_server: LiveServer) -> None:
    health = httpx.get(f"{live_server.url}/health")
    assert health.status_code == 200
    assert health.json()["patients"] == 40 and health.json()["method"] == "embedding-knn"
    for path in ("/cohorts", "/patients/A01", "/patients/A01/similar", "/openapi.json"):
        assert httpx.get(live_server.url + path).status_code == 401
        assert httpx.get(live_server.url + path, headers={"X-API-Key": "wrong"}).status_code == 401
    assert httpx.post(f"{live_server.url}/query", data={"patient_id": "A01"}).status_code == 401


def test_openapi_schema_lists_the_routes(live_server: LiveServer) -> None:
    schema = httpx.get(f"{live_server.url}/openapi.json", headers=live_server.headers).json()
    assert {"/query", "/patients/{patient_id}", "/patients/{patient_id}/similar", "/cohorts",
            "/health", "/versions", "/versions/{version_id}",
            "/versions/{version_id}/predictions/{patient_id}",
            "/versions/{version_id}/predict"} <= set(schema["paths"])
    assert "APIKeyHeader" in schema["components"]["securitySchemes"]


def test_cohorts_and_patients(live_server: LiveServer) -> None:
    cohorts = httpx.get(f"{live_server.url}/cohorts", headers=live_server.headers).json()
    assert [(c["name"], c["n_patients"], c["n_with_genomics"]) for c in cohorts] == [
        ("alpha", 20, 20), ("beta", 20, 0)]
    patient = httpx.get(f"{live_server.url}/patients/A00", headers=live_server.headers).json()
    assert patient["n_slides"] == 2 and patient["genomics"] == "authentic"
    assert patient["histology"] == "simulated" and patient["oncotree_code"] == "LOW"
    missing = httpx.get(f"{live_server.url}/patients/nobody", headers=live_server.headers)
    assert missing.status_code == 404 and "nobody" in missing.json()["detail"]


def test_similar_excludes_the_patient_and_applies_filters(live_server: LiveServer) -> None:
    r = httpx.get(f"{live_server.url}/patients/A01/similar", headers=live_server.headers,
                  params={"k": 5, "cohort": "alpha", "require": "genomics"})
    assert r.status_code == 200, r.text
    body = r.json()
    ids = [n["patient_id"] for n in body["neighbours"]]
    assert len(ids) == 5 and "A01" not in ids and all(i.startswith("A") for i in ids)
    assert body["query_patient_id"] == "A01" and body["fallback_reason"]
    bad = httpx.get(f"{live_server.url}/patients/A01/similar", headers=live_server.headers,
                    params={"k": 0})
    assert bad.status_code == 422
    bad = httpx.get(f"{live_server.url}/patients/A01/similar", headers=live_server.headers,
                    params={"require": "proteomics"})
    assert bad.status_code == 400 and "genomics" in bad.json()["detail"]


def test_query_with_an_uploaded_bag(live_server: LiveServer) -> None:
    files = [("files", ("new-slide.h5", _h5_bytes(1, seed=7), "application/octet-stream"))]
    r = httpx.post(f"{live_server.url}/query", headers=live_server.headers, files=files,
                   data={"k": "6"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["neighbours"]) == 6 and body["n_patches"] == 24
    # the bag sits at prototype 1, so its neighbours are the short-survival group
    assert sum(n["oncotree_code"] == "HIGH" for n in body["neighbours"]) >= 5
    assert abs(sum(n["weight"] for n in body["neighbours"]) - 1) < 1e-6
    assert body["inputs"][0]["status"] == "unknown"
    assert len(body["survival"]["times"]) == len(body["survival"]["survival"]) == 4


def test_query_with_a_stored_patient_and_errors(live_server: LiveServer) -> None:
    url, headers = f"{live_server.url}/query", live_server.headers
    r = httpx.post(url, headers=headers, data={"patient_id": "B04", "k": "3"})
    assert r.status_code == 200 and "B04" not in {n["patient_id"] for n in r.json()["neighbours"]}
    assert httpx.post(url, headers=headers, data={"patient_id": "zz"}).status_code == 404
    none = httpx.post(url, headers=headers, data={"k": "3"})
    assert none.status_code == 400 and "nothing to query" in none.json()["detail"]
    wrong_type = httpx.post(url, headers=headers, files=[("files", ("x.txt", b"abc"))])
    assert wrong_type.status_code == 400 and ".h5" in wrong_type.json()["detail"]
    garbage = httpx.post(url, headers=headers, files=[("files", ("x.h5", b"\x89HDF garbage"))])
    assert garbage.status_code == 400 and "x.h5" in garbage.json()["detail"]
    other_dim = httpx.post(url, headers=headers, files=[("files", ("d.h5", _h5_bytes(0, 1, 8)))])
    assert other_dim.status_code == 400 and "8-d" in other_dim.json()["detail"]


def test_request_size_limits(live_server: LiveServer) -> None:
    url, headers = f"{live_server.url}/query", live_server.headers
    big = b"\0" * (MAX_BODY + 10)
    r = httpx.post(url, headers=headers, files=[("files", ("big.h5", big))])
    assert r.status_code == 413

    def chunks():  # no Content-Length: the limit is enforced while streaming
        yield (b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="b.h5"\r\n'
               b"Content-Type: application/octet-stream\r\n\r\n")
        for _ in range(3):
            yield b"\0" * (MAX_BODY // 2)

    streamed = httpx.post(url, headers={**headers, "Content-Type": "multipart/form-data; "
                                        "boundary=xyz"}, content=chunks())
    assert streamed.status_code == 413 and "larger than" in streamed.json()["detail"]


def test_service_refuses_to_start_without_keys(tiny_store_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASEGRAPH_API_KEYS", raising=False)
    monkeypatch.delenv("CASEGRAPH_API_KEYS_FILE", raising=False)
    with pytest.raises(CasegraphError, match="no API keys"):
        create_app(tiny_store_dir)


def test_keys_from_a_file(tiny_store_dir: Path, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    keys = tmp_path / "keys"
    keys.write_text("# comment\nk-one\nk-two\n")
    monkeypatch.delenv("CASEGRAPH_API_KEYS", raising=False)
    monkeypatch.setenv("CASEGRAPH_API_KEYS_FILE", str(keys))
    write_bag(tmp_path / "q.h5", 0, seed=3)
    app = create_app(tiny_store_dir)
    try:
        client = TestClient(app)
        assert client.get("/cohorts", headers={"X-API-Key": "k-two"}).status_code == 200
        assert client.get("/cohorts", headers={"X-API-Key": "# comment"}).status_code == 401
    finally:
        app.state.live.close()


def _bag_bytes(n: int, seed: int, compression: str | None = None) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    with h5py.File(buffer, "w") as handle:
        handle.create_dataset("features", data=rng.normal(size=(n, 16)).astype(np.float32),
                              compression=compression)
    return buffer.getvalue()


def test_uploads_sharing_a_name_are_each_their_own_file(live_server: LiveServer,
                                                        tiny_store_dir: Path,
                                                        tmp_path: Path) -> None:
    from casegraph.ingest.store import Store
    from casegraph.retrieval.query import QueryEngine, QueryOptions

    contents = [_bag_bytes(24, 1), _bag_bytes(10, 2), _bag_bytes(7, 3)]
    for names in (["a.h5", "a.h5", "a-1.h5"], ["a.h5", "a-2.h5", "a.h5"], ["a.h5", "b.h5", "a.h5"],
                  ["x/a.h5", "../a.h5", "a.h5"]):
        files = [("files", (n, c)) for n, c in zip(names, contents, strict=True)]
        r = httpx.post(f"{live_server.url}/query", headers=live_server.headers, files=files,
                       data={"k": "5"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["n_patches"] == 41, names  # 24 + 10 + 7: none overwritten or reused
        assert body["query_files"] == [Path(n).name for n in names]
    local = []
    for i, c in enumerate(contents):
        (tmp_path / f"{i}.h5").write_bytes(c)
        local.append(tmp_path / f"{i}.h5")
    with Store.open(tiny_store_dir, read_only=True) as store:
        direct = QueryEngine(store).query(local, options=QueryOptions(k=5))
    assert [n["patient_id"] for n in body["neighbours"]] == [
        n.patient_id for n in direct.neighbours]


def test_errors_and_results_never_show_server_temp_paths(live_server: LiveServer) -> None:
    url, headers = f"{live_server.url}/query", live_server.headers
    for name, content in [("mine.h5", b"\x89HDF garbage"), ("mine.pt", b"not a zip"),
                          ("mine.h5", _h5_bytes(0, 1, 8))]:
        r = httpx.post(url, headers=headers, files=[("files", (name, content))])
        assert r.status_code == 400 and r.json()["detail"].startswith(name), r.text
        assert "casegraph-query-" not in r.text and "/tmp" not in r.text
    health = httpx.get(f"{live_server.url}/health").json()
    assert "store" not in health and all("/" not in str(v) for v in health.values())


def test_bags_over_the_limits_get_413_naming_the_limit(gappy_server: LiveServer) -> None:
    from tests.retrieval.conftest import GAPPY_MAX_PATCHES

    url, headers = f"{gappy_server.url}/query", gappy_server.headers
    one = httpx.post(url, headers=headers, files=[
        ("files", ("big.h5", _bag_bytes(GAPPY_MAX_PATCHES + 1, 4, "gzip")))])
    assert one.status_code == 413, one.text
    assert f"limit of {GAPPY_MAX_PATCHES}" in one.json()["detail"]
    assert one.json()["detail"].startswith("big.h5")
    half = _bag_bytes(GAPPY_MAX_PATCHES // 2 + 1, 5, "gzip")
    together = httpx.post(url, headers=headers, files=[("files", ("p.h5", half)),
                                                       ("files", ("q.h5", half))])
    assert together.status_code == 413 and "together" in together.json()["detail"]
    assert httpx.post(url, headers=headers, files=[("files", ("p.h5", half))]).status_code == 200
