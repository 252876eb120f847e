"""The web app: its JSON routes over real HTTP, then the app itself in the system Chromium
(Playwright) against a real uvicorn server: a wrong key, the login, every page drawn
(screenshots checked for content), a query upload and a refused one."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from casegraph.config import Neo4jSettings
from casegraph.ingest.store import Store
from tests.graph.conftest import neo4j_config  # noqa: F401 - the Neo4j test server fixture
from tests.retrieval.conftest import API_KEY, LiveServer, copy_store, serve

CHROMIUM = Path("/usr/bin/chromium")


def test_the_app_is_served_without_a_key_and_holds_no_data(live_server: LiveServer) -> None:
    page = httpx.get(f"{live_server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "/app/app.js" in page.text and "alpha" not in page.text
    script = httpx.get(f"{live_server.url}/app/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    for name in ("index.html", "api.js", "app.js", "charts.js", "cohorts.js", "cypher.js",
                 "dom.js", "evidence.js", "patient.js", "query.js", "style.css"):
        body = httpx.get(f"{live_server.url}/app/{name}").text
        assert "http://" not in body.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in body  # nothing fetched from elsewhere
    assert httpx.get(f"{live_server.url}/app/nothing.js").status_code == 404


def test_web_json_routes_need_the_key(live_server: LiveServer) -> None:
    for path in ("/cohorts/alpha/km", "/cohorts/alpha/patients", "/patients/A01/km"):
        assert httpx.get(live_server.url + path).status_code == 401
        assert httpx.get(live_server.url + path, headers={"X-API-Key": "no"}).status_code == 401


def test_cohort_km_is_the_cohorts_curve_with_its_band(live_server: LiveServer,
                                                      tiny_store_dir: Path) -> None:
    from casegraph.models.neighbourhood import kaplan_meier

    r = httpx.get(f"{live_server.url}/cohorts/alpha/km", headers=live_server.headers)
    assert r.status_code == 200, r.text
    km = r.json()
    with Store.open(tiny_store_dir, read_only=True) as store:
        rows = store.patients()
    rows = rows[rows["cohort"] == "alpha"]
    times, surv, at_risk, _ = kaplan_meier(rows["time"], rows["event"])
    assert km["n"] == 20 and km["times"] == pytest.approx(times.tolist())
    assert km["survival"] == pytest.approx(surv.tolist())
    assert km["at_risk"] == at_risk.astype(int).tolist()
    assert sum(km["events"]) + sum(km["censored"]) == 20
    assert sum(km["censored"]) == int((~rows["event"].astype(bool)).sum())
    assert all(lo <= s <= hi for lo, s, hi in zip(km["lower"], km["survival"], km["upper"],
                                                  strict=True))
    missing = httpx.get(f"{live_server.url}/cohorts/nope/km", headers=live_server.headers)
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def test_cohort_patients_and_patient_km(live_server: LiveServer) -> None:
    patients = httpx.get(f"{live_server.url}/cohorts/beta/patients",
                         headers=live_server.headers).json()
    assert [p["patient_id"] for p in patients] == [f"B{i:02d}" for i in range(20)]
    assert {p["genomics"] for p in patients} == {"absent"}
    r = httpx.get(f"{live_server.url}/patients/A01/km", headers=live_server.headers,
                  params={"k": 6})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["cohort"] == "alpha" and body["neighbourhood"]["n"] == 6
    assert body["cohort_curve"]["n"] == 20
    similar = httpx.get(f"{live_server.url}/patients/A01/similar", headers=live_server.headers,
                        params={"k": 6}).json()
    assert sorted(body["neighbourhood"]["times"]) == sorted(
        {n["time"] for n in similar["neighbours"]})
    assert httpx.get(f"{live_server.url}/patients/zz/km",
                     headers=live_server.headers).status_code == 404
    bad = httpx.get(f"{live_server.url}/patients/A01/km", headers=live_server.headers,
                    params={"method": "msrl"})
    assert bad.status_code == 400 and "MSRL" in bad.json()["detail"]


def test_cypher_without_neo4j_says_so_in_one_line(live_server: LiveServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASEGRAPH_NEO4J_URI", raising=False)
    url, headers = f"{live_server.url}/cypher", live_server.headers
    assert httpx.get(url).status_code == 401
    assert httpx.post(url, json={"query": "RETURN 1"}).status_code == 401
    status = httpx.get(url, headers=headers).json()
    assert status["available"] is False and "no Neo4j configured" in status["message"]
    assert {"neighbours", "lineage"} <= {c["name"] for c in status["cookbook"]}
    neighbours = next(c for c in status["cookbook"] if c["name"] == "neighbours")
    assert neighbours["params"] and all(f"${p}" in neighbours["query"]
                                        for p in neighbours["params"])
    r = httpx.post(url, headers=headers, json={"query": "RETURN 1"})
    assert r.status_code == 400 and "no Neo4j configured" in r.json()["detail"]
    assert httpx.post(url, headers=headers, json={"query": ""}).status_code == 422


@pytest.fixture
def with_neo4j(neo4j_config: Neo4jSettings,  # noqa: F811
               monkeypatch: pytest.MonkeyPatch) -> Neo4jSettings:
    """The served app (same process) reaches the Neo4j test server."""
    monkeypatch.setenv("CASEGRAPH_NEO4J_URI", neo4j_config.uri)
    monkeypatch.setenv("CASEGRAPH_NEO4J_USER", neo4j_config.user)
    monkeypatch.delenv("CASEGRAPH_NEO4J_PASSWORD_FILE", raising=False)
    if neo4j_config.password:
        monkeypatch.setenv("CASEGRAPH_NEO4J_PASSWORD", neo4j_config.password)
    return neo4j_config


@pytest.mark.neo4j
def test_cypher_runs_read_only_with_parameters(live_server: LiveServer,
                                               with_neo4j: Neo4jSettings) -> None:
    url, headers = f"{live_server.url}/cypher", live_server.headers
    assert httpx.get(url, headers=headers).json()["available"] is True
    r = httpx.post(url, headers=headers, json={"query": "RETURN $x + 1 AS y, $name AS name",
                                               "params": {"x": 41, "name": "a'); DROP"}})
    assert r.status_code == 200, r.text
    assert r.json() == {"columns": ["y", "name"], "rows": [[42, "a'); DROP"]],
                        "truncated": False}
    write = httpx.post(url, headers=headers, json={"query": "CREATE (n:Sneaky) RETURN n"})
    assert write.status_code == 400 and "read-only" in write.json()["detail"]
    # a write the clause check does not see: the read transaction refuses it in the server
    sneaky = httpx.post(url, headers=headers, json={"query": "CALL db.createLabel('Sneaky')"})
    assert sneaky.status_code == 400, sneaky.text
    bad = httpx.post(url, headers=headers, json={"query": "MATCH (n RETURN n"})
    assert bad.status_code == 400 and "Cypher error" in bad.json()["detail"]
    assert with_neo4j.password is None or with_neo4j.password not in bad.text


# --- the app in a real browser ------------------------------------------------------------


def _add_cv_run(store: Store) -> None:
    """A two-fold CV run's rows, literal (the pages show them; the runner has its tests)."""
    import pandas as pd

    from casegraph.ingest.cv_results import FoldRow, RunRow

    store.cv_results.add_run(RunRow("run-web-1", "snn", "alpha", "mcat", "last", "q4", 0, {}))
    for fold, c_index in ((0, 0.6), (1, 0.8)):
        predictions = pd.DataFrame({"patient_id": ["A01"], "risk": [0.1], "time": [5.0],
                                    "event": [True], "survival": [None]})
        store.cv_results.save_fold(FoldRow("run-web-1", fold, 10, 5,
                                           {"c_index": c_index, "ibs": None}, 1.0),
                                   predictions)


def test_cv_runs_summarise_their_folds(tiny_store_dir: Path, tmp_path: Path) -> None:
    root = copy_store(tiny_store_dir, tmp_path / "store")
    with serve(root) as server:
        assert httpx.get(f"{server.url}/cv-runs").status_code == 401
        assert httpx.get(f"{server.url}/cv-runs", headers=server.headers).json() == []
    with Store.open(root) as store:
        _add_cv_run(store)
    with serve(root) as server:
        runs = httpx.get(f"{server.url}/cv-runs", headers=server.headers).json()
    assert [(r["run_id"], r["model"], r["n_folds"]) for r in runs] == [("run-web-1", "snn", 2)]
    c_index = runs[0]["metrics"]["c_index"]
    assert c_index["mean"] == pytest.approx(0.7) and c_index["n"] == 2
    assert c_index["std"] == pytest.approx(float(np.std([0.6, 0.8], ddof=1)))
    assert runs[0]["metrics"]["ibs"] == {"mean": None, "std": None, "n": 0}


@pytest.fixture(scope="module")
def versioned_server(tiny_store_dir: Path, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[LiveServer]:
    """The service over the tiny store with one snn version of cohort alpha (so the pages
    show a version and its predictions)."""
    import torch

    from casegraph.graph.embedded import EmbeddedGraphStore
    from casegraph.graph.static_knn import ensure_static_knn
    from casegraph.graph.sync import sync_graph
    from casegraph.models.versioning import train_version

    torch.set_num_threads(1)
    root = copy_store(tiny_store_dir, tmp_path_factory.mktemp("served-web") / "store")
    with Store.open(root) as store:
        train_version(store, "alpha", "snn", fold=None, epochs=2, hidden=8)
        _add_cv_run(store)
        ensure_static_knn(store, k=12)  # snn has no edges: the case graph's are static k-NN
        sync_graph(store, EmbeddedGraphStore(store))
    with serve(root) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.skip("no system Chromium (/usr/bin/chromium): scripts/setup.sh installs it "
                    "from Debian's packages where it runs as root with apt-get")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e .[dev])")
    executable = str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium"))
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable,
                                             args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def _not_blank(png: Path, min_colours: int = 8) -> None:
    """The screenshot shows something: more than a few distinct colours (a blank or
    single-message page has one or two)."""
    pil = pytest.importorskip("PIL.Image")
    with pil.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > min_colours, png


def _h5_bytes(group: int, seed: int) -> bytes:
    import h5py

    from tests.retrieval.conftest import prototypes

    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    with h5py.File(buffer, "w") as handle:
        handle["features"] = (prototypes()[group] + rng.normal(size=(24, 16))).astype(np.float32)
        rows, cols = np.divmod(np.arange(24), 6)  # a 4 x 6 patch grid, 256 px a patch
        handle["coords"] = np.stack([cols * 256, rows * 256], axis=1).astype(np.int64)
    return buffer.getvalue()


@pytest.mark.browser
def test_the_app_in_chromium(browser: Any, versioned_server: LiveServer, tmp_path: Path) -> None:
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # the browser logs each refused request (the wrong key's 401, the bad upload's 400) as
    # a console error; any other console error, or an uncaught exception, is a bug
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
            and not msg.text.startswith("Failed to load resource") else None)
    page.set_default_timeout(60_000)
    url = versioned_server.url

    # no key: the login, and no data on the page
    page.goto(f"{url}/")
    page.wait_for_selector("#login:not([hidden])")
    assert "alpha" not in page.content()
    # a wrong key: a clear message, still no data
    page.fill("#key", "not-the-key")
    page.click("#login-form button")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "not accepted" in page.inner_text("#login-error")
    assert page.evaluate("sessionStorage.getItem('casegraph.apiKey')") is None
    page.screenshot(path=str(tmp_path / "login.png"))

    # the right key: cohorts with a KM curve each and the version
    page.fill("#key", API_KEY)
    page.click("#login-form button")
    page.wait_for_selector(".cohort-row")
    page.wait_for_selector(".km svg path.km-line")
    assert page.locator(".cohort-row").count() == 2
    assert page.locator(".km svg path.km-band").count() == 2
    versions = page.locator(".version-row").all_inner_texts()  # snn and the static k-NN
    assert len(versions) == 2 and any("snn" in v for v in versions)
    assert "0.700 ± 0.141" in page.inner_text(".cv-row")
    page.wait_for_selector(".patient-link", state="attached")
    page.screenshot(path=str(tmp_path / "cohorts.png"), full_page=True)

    # a patient: full ids of its neighbours, the graph, both KM curves, the prediction
    page.goto(f"{url}/#/patient/A01")
    page.wait_for_selector(".neighbour-row")
    page.wait_for_selector("#similar svg.graph circle")
    ids = page.locator(".neighbour-row td.id").all_inner_texts()
    assert len(ids) == 10 and all(i in {f"A{n:02d}" for n in range(20)} | {f"B{n:02d}" for n
                                                                            in range(20)}
                                  for i in ids)
    assert page.locator("#similar svg.graph line.edge").count() == 10
    assert page.locator("#similar svg.graph circle.node").count() >= 11
    assert page.locator("#similar path.km-line").count() == 2
    # its case-graph neighbourhood from the graph backend: 1 hop, then 2
    page.wait_for_selector("#case-graph svg.case-graph circle.patient")
    assert page.locator("#case-graph line.edge").count() == 10
    assert page.locator("#case-graph circle.patient").count() == 11
    assert page.locator("#case-graph text.edge-weight").count() == 10
    assert page.locator("#case-graph circle.patient.dead").count() + page.locator(
        "#case-graph circle.patient.alive").count() == 11
    assert "static-knn" in page.inner_text("#case-graph")
    page.select_option("#graph-hops", "2")
    page.wait_for_selector("#case-graph circle.hop2")
    assert page.locator("#case-graph circle.patient").count() > 11
    assert page.locator("#case-graph line.edge").count() > 10
    page.locator("#case-graph svg").screenshot(path=str(tmp_path / "patient-graph.png"))
    # which of its patches drive the answer: a heatmap of its slide and its top patches
    page.wait_for_selector("#patient-evidence canvas.heatmap")
    assert page.locator("#patient-evidence .top-patch").count() == 10
    page.locator("#patient-evidence canvas.heatmap").first.screenshot(
        path=str(tmp_path / "patient-heatmap.png"))
    page.wait_for_selector(".prediction-row")
    assert "stored" in page.inner_text(".prediction-row")
    page.screenshot(path=str(tmp_path / "patient.png"), full_page=True)

    # a query upload: the answer with its neighbours
    bag = tmp_path / "new-slide.h5"
    bag.write_bytes(_h5_bytes(1, seed=7))
    page.goto(f"{url}/#/query")
    page.set_input_files("#bags", str(bag))
    with page.expect_response(lambda r: r.url.endswith("/query")) as answered:
        page.click("#query-form button")
    page.wait_for_selector("#answer .neighbour-row")
    assert page.locator("#answer .neighbour-row").count() == 10
    assert "new-slide.h5" in page.inner_text("#query-summary")
    assert page.locator("#answer svg.graph circle").count() >= 11
    # the upload's patch heatmap (4 x 6 grid), its colour bar and its top patches
    page.wait_for_selector("#answer canvas.heatmap")
    assert page.locator("#answer canvas.heatmap").count() == 1
    assert page.locator("#answer canvas.colour-bar").count() == 1
    assert page.locator("#answer .top-patch").count() == 10
    page.locator("#answer canvas.heatmap").screenshot(path=str(tmp_path / "query-heatmap.png"))
    if answered.value.json().get("track_record"):  # the method's record, when it has one
        assert "Track record" in page.inner_text("#track-record")
    page.screenshot(path=str(tmp_path / "query.png"), full_page=True)

    # with a genomics row: the chosen version predicts from the bag and that row
    snn = next(v["version_id"] for v in httpx.get(f"{url}/versions",
                                                   headers=versioned_server.headers).json()
               if v["model"] == "snn")
    row = tmp_path / "genomics.csv"
    row.write_text("TP53_rnaseq,EGFR_rnaseq,TP53_cnv,KRAS_mut\n1.0,0.2,0,1\n")
    page.set_input_files("#bags", str(bag))
    page.set_input_files("#genomics", str(row))
    page.select_option("#genomics-version", snn)
    page.click("#query-form button")
    page.wait_for_selector("#genomics-summary, #genomics-error")
    assert "authentic genomics" in page.inner_text("#genomics-answer")
    assert "Oncogenes 2/2" in page.inner_text("#genomics-coverage")  # every feature given
    page.wait_for_selector("#answer .neighbour-row")  # the WSI-only answer beside it
    page.screenshot(path=str(tmp_path / "query-genomics.png"), full_page=True)
    # a malformed row: the service's one-line message, the query still answered
    broken = tmp_path / "row.json"
    broken.write_text('{"TP53_rnaseq": "high"}')
    page.set_input_files("#genomics", str(broken))
    page.click("#query-form button")
    page.wait_for_selector("#genomics-error")
    message = page.inner_text("#genomics-error")
    assert "row.json" in message and "not a number" in message and "\n" not in message.strip()
    page.wait_for_selector("#answer .neighbour-row")
    page.set_input_files("#genomics", [])

    # a refused upload: the service's one-line error
    text = tmp_path / "notes.txt"
    text.write_text("not a bag")
    page.set_input_files("#bags", str(text))
    page.click("#query-form button")
    page.wait_for_selector("#query-error")
    message = page.inner_text("#query-error")
    assert "notes.txt" in message and ".h5" in message and "\n" not in message.strip()
    page.screenshot(path=str(tmp_path / "query-error.png"))

    # the Cypher page says in one line that this service has no Neo4j
    if not os.environ.get("CASEGRAPH_NEO4J_URI"):
        page.goto(f"{url}/#/cypher")
        assert "no Neo4j" in page.inner_text("#cypher-unavailable")

    for name in ("cohorts", "patient", "query"):
        _not_blank(tmp_path / f"{name}.png")
    for name in ("query-heatmap", "patient-heatmap", "patient-graph"):  # drawn, not empty, not an empty canvas
        _not_blank(tmp_path / f"{name}.png", min_colours=6)
    _not_blank(tmp_path / "login.png", min_colours=3)
    assert not errors, errors
    shots = os.environ.get("CASEGRAPH_WEBAPP_SCREENSHOTS")  # for docs/: keep the pictures
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        for png in tmp_path.glob("*.png"):
            shutil.copy(png, Path(shots) / png.name)
    page.close()



@pytest.mark.browser
@pytest.mark.neo4j
def test_the_cypher_console_in_chromium(browser: Any, live_server: LiveServer,
                                        with_neo4j: Neo4jSettings, tmp_path: Path) -> None:
    from neo4j import GraphDatabase

    from tests.graph.conftest import TEST_MARKER

    auth = (with_neo4j.user, with_neo4j.password) if with_neo4j.password else None
    with GraphDatabase.driver(with_neo4j.uri, auth=auth) as driver:  # two linked test nodes
        driver.execute_query(
            f"MERGE (a:{TEST_MARKER}:WebTest {{patient_id: 'W1', event: true}}) "
            f"MERGE (b:{TEST_MARKER}:WebTest {{patient_id: 'W2', event: false}}) "
            "MERGE (a)-[:SIMILAR {weight: 0.7}]->(b)")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(f"{live_server.url}/")
    page.fill("#key", API_KEY)
    page.click("#login-form button")
    page.wait_for_selector(".cohort-row")
    page.goto(f"{live_server.url}/#/cypher")
    page.wait_for_selector("#cypher-form")
    assert page.locator("button.cookbook").count() >= 5
    page.click("button.cookbook >> text=neighbours")
    assert "$" in page.input_value("#cypher-query")
    page.fill("#cypher-query", "MATCH (a:WebTest)-[r:SIMILAR]->(b:WebTest) "
                               "WHERE a.patient_id = $from RETURN a, r, b, $tag AS tag")
    page.fill("#cypher-params", '{"from": "W1", "tag": "web"}')
    page.click("#cypher-form button[type=submit]")
    page.wait_for_selector(".cypher-row")
    assert page.locator(".cypher-row").count() == 1 and "web" in page.inner_text(".cypher-row")
    page.wait_for_selector("svg.cypher-graph circle")
    assert page.locator("svg.cypher-graph circle.node").count() == 2
    assert page.locator("svg.cypher-graph line.edge").count() == 1
    assert "SIMILAR 0.700" in page.locator("svg.cypher-graph").text_content()
    page.screenshot(path=str(tmp_path / "cypher.png"), full_page=True)
    page.fill("#cypher-query", "CREATE (n:Sneaky) RETURN n")
    page.fill("#cypher-params", "{}")
    page.click("#cypher-form button[type=submit]")
    page.wait_for_selector("#cypher-error")
    assert "read-only" in page.inner_text("#cypher-error")
    _not_blank(tmp_path / "cypher.png", min_colours=6)
    shots = os.environ.get("CASEGRAPH_WEBAPP_SCREENSHOTS")
    if shots:
        shutil.copy(tmp_path / "cypher.png", Path(shots) / "cypher.png")
    page.close()
    with GraphDatabase.driver(with_neo4j.uri, auth=auth) as driver:
        driver.execute_query("MATCH (n:WebTest) DETACH DELETE n")
