"""Ingest batches: incremental, idempotent, all-or-nothing (including a real kill)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from casegraph.errors import InputError, StoreError
from casegraph.faults import CRASH_ENV
from casegraph.ingest.doctor import find_leftovers, remove_leftovers, run_checks
from casegraph.ingest.info import store_summary
from casegraph.ingest.pipeline import IngestRequest, ingest
from casegraph.ingest.signatures import read_gene_groups
from casegraph.ingest.splits import read_split_dir
from casegraph.ingest.store import Store
from casegraph.ingest.tables import read_mcat_table
from casegraph.models.data import CohortData
from tests.ingest.helpers import HEADER, ROWS, write_bags, write_signatures, write_table


def _request(tmp_path: Path, rows: list[str] | None = None, bags: bool = True,
             update: bool = False) -> IngestRequest:
    table = read_mcat_table(write_table(tmp_path / "in", rows), "tiny")
    request = IngestRequest(tables=[table], gene_groups=[read_gene_groups(write_signatures(tmp_path))],
                            update=update, k=2)
    if bags:
        write_bags(tmp_path / "bags", ["P1-A", "P1-B", "P2-A"])
        request.bag_dirs = [tmp_path / "bags"]
    return request


def _snapshot(store: Store) -> dict[str, object]:
    return {t: store.query_df(f"SELECT * FROM {t} ORDER BY ALL").to_json()
            for t in ("patients", "slides", "features", "genomic_rows", "gene_groups",
                      "slide_summaries", "ingest_batches")}


def test_first_ingest_then_repeat_changes_nothing(store: Store, tmp_path: Path) -> None:
    report = ingest(store, _request(tmp_path))
    assert report.changed and report.new_patients == 3 and report.bags_registered == 3
    assert report.slides_without_bags == 1
    before = _snapshot(store)
    again = ingest(store, _request(tmp_path))
    assert not again.changed and again.unchanged_patients == 3
    assert _snapshot(store) == before


def test_incremental_append(store: Store, tmp_path: Path) -> None:
    ingest(store, _request(tmp_path, ROWS[:2], bags=False))
    report = ingest(store, _request(tmp_path, bags=False))
    assert report.new_patients == 2 and report.unchanged_patients == 1
    assert store.counts()["patients"] == 3 and store.counts()["ingest_batches"] == 2


def test_changed_label_needs_update(store: Store, tmp_path: Path) -> None:
    ingest(store, _request(tmp_path, bags=False))
    changed = [ROWS[0].replace("10.5", "12"), ROWS[1].replace("10.5", "12"), *ROWS[2:]]
    before = _snapshot(store)
    with pytest.raises(InputError, match="--update"):
        ingest(store, _request(tmp_path, changed, bags=False))
    assert _snapshot(store) == before
    report = ingest(store, _request(tmp_path, changed, bags=False, update=True))
    assert report.updated_patients == ["P1"]
    assert store.patients().set_index("patient_id").loc["P1", "time"] == 12


def test_changed_genomics_needs_update(store: Store, tmp_path: Path) -> None:
    ingest(store, _request(tmp_path, bags=False))
    changed = [*ROWS[:2], ROWS[2].replace("-0.3", "-0.5"), ROWS[3]]
    with pytest.raises(InputError, match="genomic value TP53_rnaseq"):
        ingest(store, _request(tmp_path, changed, bags=False))
    ingest(store, _request(tmp_path, changed, bags=False, update=True))
    matrix, _names, _ = store.genomic_matrix(["P2"], ["TP53_rnaseq"])
    assert matrix[0, 0] == pytest.approx(-0.5)


def test_bad_bag_leaves_store_unchanged(store: Store, tmp_path: Path) -> None:
    ingest(store, _request(tmp_path, bags=False))
    before = _snapshot(store)
    write_bags(tmp_path / "bags", ["P1-A"])
    (tmp_path / "bags" / "P2-A.h5").write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    request = _request(tmp_path, bags=False)
    request.bag_dirs = [tmp_path / "bags"]
    with pytest.raises(InputError, match=r"P2-A\.h5"):
        ingest(store, request)
    assert _snapshot(store) == before


def test_feature_dim_must_match_cohort(store: Store, tmp_path: Path) -> None:
    write_bags(tmp_path / "bags", ["P1-A"], dim=8)
    write_bags(tmp_path / "bags", ["P2-A"], dim=16)
    request = _request(tmp_path, bags=False)
    request.bag_dirs = [tmp_path / "bags"]
    with pytest.raises(InputError, match="feature dim"):
        ingest(store, request)


def test_unmatched_bag_files_are_listed(store: Store, tmp_path: Path) -> None:
    write_bags(tmp_path / "bags", ["P1-A", "STRAY-1"])
    request = _request(tmp_path, bags=False)
    request.bag_dirs = [tmp_path / "bags"]
    report = ingest(store, request)
    assert [Path(p).name for p in report.unmatched_bag_files] == ["STRAY-1.h5"]
    assert any("match no slide" in w for w in report.warnings)


def test_changed_bag_file_is_reregistered(store: Store, tmp_path: Path) -> None:
    ingest(store, _request(tmp_path))
    old = store.slides().set_index("slide_id").loc["P1-A", "sha256"]
    time.sleep(0.01)
    write_bags(tmp_path / "bags", ["P1-A"], seed=7)
    report = ingest(store, IngestRequest(bag_dirs=[tmp_path / "bags"], k=2))
    assert report.bags_registered >= 1
    assert store.slides().set_index("slide_id").loc["P1-A", "sha256"] != old


def test_cohort_data_from_store(store: Store, tmp_path: Path) -> None:
    ingest(store, _request(tmp_path))
    data = CohortData.from_store(store, "tiny", group_set="tiny")
    assert data.patient_ids == ["P1", "P2", "P3"]
    assert data.groups == ["Tumor Suppressor Genes", "Oncogenes"]
    assert data.group_sizes == [2, 2]  # TP53 rna + cnv; EGFR rna + KRAS mut
    assert [len(b) for b in data.bags] == [2, 1, 0]
    assert data.load_bag(0).shape == (40, 8)
    summaries = store.slide_summaries(["P1-A", "P2-A"], k=2, seed=0)
    assert summaries["P1-A"][1].shape == (2, 8)


KILL_SCRIPT = """
import sys
from pathlib import Path
from casegraph.ingest.pipeline import IngestRequest, ingest
from casegraph.ingest.store import Store
from casegraph.ingest.tables import read_mcat_table
store = Store.open(sys.argv[1])
ingest(store, IngestRequest(tables=[read_mcat_table(Path(sys.argv[2]), "tiny")],
                            bag_dirs=[Path(sys.argv[3])], k=2))
"""


def test_kill_during_ingest_leaves_store_as_before(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root) as store:
        ingest(store, _request(tmp_path, ROWS[:2], bags=False))
        before = _snapshot(store)
    table = write_table(tmp_path / "in2")
    write_bags(tmp_path / "bags", ["P1-A", "P1-B", "P2-A"])
    env = {**os.environ, CRASH_ENV: "ingest.in_transaction"}
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(root), str(table),
                           str(tmp_path / "bags")], env=env, check=False)
    assert proc.returncode == -signal.SIGKILL, "the ingest did not die at its crash point"
    with Store.open(root) as store:
        assert _snapshot(store) == before
        left = find_leftovers(store)
        assert {x.table for x in left} == {"genomic_rows", "slide_summaries"}
        assert all(x.removable and not x.committed for x in left)
        assert any("left by an interrupted ingest" in p for p in run_checks(store))
        report = ingest(store, _request(tmp_path))  # a re-run completes the batch
        assert report.new_patients == 2 and store.counts()["patients"] == 3
        assert sorted(report.removed_leftovers) == sorted(str(x.path) for x in left)
        assert run_checks(store) == []  # doctor is clean after the re-run


def _write_splits(folder: Path, folds: list[tuple[list[str], list[str]]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, (train, val) in enumerate(folds):
        n = max(len(train), len(val))
        rows = [f"{i},{train[i] if i < len(train) else ''},{val[i] if i < len(val) else ''}"
                for i in range(n)]
        (folder / f"splits_{k}.csv").write_text("\n".join([",train,val", *rows]) + "\n",
                                                encoding="utf-8")
    return folder


def test_split_folder_of_another_cohort_is_an_error(store: Store, tmp_path: Path) -> None:
    ingest(store, _request(tmp_path, bags=False))
    before = _snapshot(store)
    folder = _write_splits(tmp_path / "other", [(["X1", "X2"], ["X3"]), (["X3"], ["X1"])])
    request = _request(tmp_path, bags=False)
    request.split_sets = [read_split_dir(folder)]
    with pytest.raises(InputError, match="none of the 3 patients of the split files") as info:
        ingest(store, request)
    assert str(folder) in str(info.value) and "fix:" in str(info.value)
    assert _snapshot(store) == before and store.splits("mcat") == {}


def test_split_patients_partly_unknown_are_left_out_with_a_count(store: Store,
                                                                 tmp_path: Path) -> None:
    folder = _write_splits(tmp_path / "sp", [(["P1", "X9"], ["P2", "P3"]), (["P2", "P3"], ["P1"])])
    request = _request(tmp_path, bags=False)
    request.split_sets = [read_split_dir(folder)]
    report = ingest(store, request)
    assert store.splits("mcat") == {0: (["P1"], ["P2", "P3"]), 1: (["P2", "P3"], ["P1"])}
    assert any("1 of 4 patients are not in this batch's tables or the store (e.g. 'X9')" in w
               for w in report.warnings)


def test_fold_left_without_a_side_is_an_error(store: Store, tmp_path: Path) -> None:
    folder = _write_splits(tmp_path / "sp", [(["P1", "P2"], ["X1", "X2"])])
    request = _request(tmp_path, bags=False)
    request.split_sets = [read_split_dir(folder)]
    with pytest.raises(InputError, match="fold 0 keeps no val patient"):
        ingest(store, request)
    assert store.counts()["patients"] == 0


@pytest.mark.parametrize(("kind", "message"), [
    ("link to /dev/zero", r"P2-A\.h5: feature file is not a regular file but a character device"),
    ("FIFO", r"P2-A\.h5: feature file is not a regular file but a FIFO"),
    ("folder", r"P2-A\.h5: feature file is not a regular file but a folder"),
    ("broken link", r"P2-A\.h5: feature file is a broken symbolic link")])
def test_bag_entry_that_is_not_a_regular_file_is_an_error(store: Store, tmp_path: Path,
                                                          kind: str, message: str) -> None:
    write_bags(tmp_path / "bags", ["P1-A"])
    entry = tmp_path / "bags" / "sub" / "P2-A.h5"
    entry.parent.mkdir()
    if kind == "link to /dev/zero":
        entry.symlink_to("/dev/zero")
    elif kind == "FIFO":
        os.mkfifo(entry)
    elif kind == "folder":
        entry.mkdir()
    else:
        entry.symlink_to(tmp_path / "gone.h5")
    request = _request(tmp_path, bags=False)
    request.bag_dirs = [tmp_path / "bags"]
    with pytest.raises(InputError, match=message) as info:
        ingest(store, request)
    assert "fix:" in str(info.value)
    assert store.counts()["patients"] == 0


def test_dim_mismatch_blames_the_odd_file_and_names_the_reference(store: Store,
                                                                  tmp_path: Path) -> None:
    write_bags(tmp_path / "bags", ["P1-A"], dim=16)  # sorts first: it set the dim before
    write_bags(tmp_path / "bags", ["P1-B", "P2-A", "P3-A"], dim=8)
    request = _request(tmp_path, bags=False)
    request.bag_dirs = [tmp_path / "bags"]
    with pytest.raises(InputError) as info:
        ingest(store, request)
    message = str(info.value)
    assert message.startswith(f"{(tmp_path / 'bags' / 'P1-A.h5').resolve()}, column 'features': "
                              "feature dim 16 differs from dim 8 of 3 other file(s)")
    assert "in this batch (e.g. " in message and "P1-B.h5" in message


def test_dim_mismatch_with_stored_slides_blames_the_new_file(store: Store, tmp_path: Path) -> None:
    write_bags(tmp_path / "bags", ["P3-A"], dim=8)
    request = _request(tmp_path, bags=False)
    request.bag_dirs = [tmp_path / "bags"]
    ingest(store, request)
    write_bags(tmp_path / "new", ["P1-A", "P1-B"], dim=16)
    with pytest.raises(InputError) as info:
        ingest(store, IngestRequest(bag_dirs=[tmp_path / "new"], k=2))
    message = str(info.value)
    assert message.startswith(f"{(tmp_path / 'new' / 'P1-A.h5').resolve()}, column 'features'")
    assert "differs from dim 8 of 1 other file(s) of cohort 'tiny' already stored" in message
    assert "P3-A.h5" in message


def test_counts_say_their_scope(store: Store, tmp_path: Path) -> None:
    """Slides without features and genes found: this batch's vs the store's, never mixed."""
    first = _request(tmp_path / "a", ROWS[:2], bags=False)  # P1 (2 slides), no bags
    ingest(store, first)
    write_bags(tmp_path / "bags", ["P3-A"])
    table = read_mcat_table(write_table(tmp_path / "b", [ROWS[3]],
                                        header=HEADER.replace(",KRAS_mut", ",NRAS_mut")
                                        .replace("EGFR", "MYC")), "tiny")
    report = ingest(store, IngestRequest(tables=[table], bag_dirs=[tmp_path / "bags"], k=2))
    assert (report.batch_slides, report.slides_without_bags) == (1, 0)
    assert (report.store_slides, report.store_slides_without_bags) == (3, 2)
    assert report.store_patients == 2
    cov = report.coverage["tiny"]  # groups TP53,EGFR | KRAS: 3 unique genes
    assert (cov.genes, cov.in_batch, cov.in_store) == (3, 1, 3)


def test_gene_in_two_groups_counts_once_in_ingest_and_info(store: Store, tmp_path: Path) -> None:
    sig = tmp_path / "dup_signatures.csv"
    sig.write_text("A,B,C\nTP53,TP53,GONE\nEGFR,KRAS,\n", encoding="utf-8")
    request = _request(tmp_path, bags=False)
    request.gene_groups = [read_gene_groups(sig)]
    report = ingest(store, request)
    cov = report.coverage["dup"]
    assert (cov.genes, cov.in_batch, cov.in_store) == (4, 3, 3)  # TP53 EGFR KRAS GONE
    assert store_summary(store).gene_group_sets["dup"] == (3, 3, 4)


def test_leftovers_removed_only_when_proven(store: Store, tmp_path: Path) -> None:
    """Ingest removes only files of batches that never committed; doctor --fix also removes
    files a committed --update superseded; a name casegraph never writes stays."""
    ingest(store, _request(tmp_path, bags=False))
    first_file = next(store.genomics_dir.glob("genomics-*.parquet"))
    changed = [r.replace("10.5", "12").replace("30.0", "31").replace("5.25", "6") for r in ROWS]
    ingest(store, _request(tmp_path, changed, bags=False, update=True))  # supersedes first_file
    killed = store.genomics_dir / "genomics-20000101T000000-deadbeef-0123456789ab.parquet"
    killed_tmp = store.summaries_dir / ".20000101T000000-deadbeef-01234567.parquet.tmp"
    foreign = [store.genomics_dir / "mine.parquet",
               store.genomics_dir / "genomics-notabatch.parquet", store.summaries_dir / ".x.tmp"]
    store.summaries_dir.mkdir(exist_ok=True)
    for path in (killed, killed_tmp, *foreign):
        path.write_bytes(b"x")
    problems = run_checks(store)
    assert any(f"unreferenced file {first_file} (superseded by a later --update" in p
               for p in problems)
    assert sum("not a name casegraph writes" in p for p in problems) == 3
    before = _snapshot(store)
    report = ingest(store, _request(tmp_path, changed, bags=False, update=True))
    assert not report.changed and sorted(report.removed_leftovers) == sorted(
        [str(killed), str(killed_tmp)])
    assert first_file.exists() and all(p.exists() for p in foreign)
    assert sorted(remove_leftovers(store, uncommitted_only=False)) == [first_file]
    assert all(p.exists() for p in foreign) and _snapshot(store) == before
    assert store.genomic_matrix(["P1"], ["TP53_rnaseq"])[0][0, 0] == pytest.approx(0.1)
    assert [p for p in run_checks(store) if "not a name casegraph writes" not in p] == []


def test_leftovers_are_never_removed_through_a_read_only_store(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as store:
        ingest(store, _request(tmp_path, bags=False))
    with Store.open(tmp_path / "s", create=False, read_only=True) as store, \
            pytest.raises(StoreError, match="read-only"):
        remove_leftovers(store, uncommitted_only=False)
