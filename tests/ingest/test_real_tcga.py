"""Integration: the real shared TCGA BLCA and GBMLGG tables with simulated bags."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from casegraph.ingest.info import store_summary
from casegraph.ingest.pipeline import IngestRequest, ingest
from casegraph.ingest.signatures import read_gene_groups
from casegraph.ingest.simulate import simulate_bags
from casegraph.ingest.splits import read_split_dir
from casegraph.ingest.store import Store
from casegraph.ingest.tables import read_mcat_table

EXPECTED = {"blca": 373, "gbmlgg": 569}


@pytest.mark.slow
@pytest.mark.parametrize("cohort", sorted(EXPECTED))
def test_real_cohort_ingest(shared_data: Path, tmp_path: Path, cohort: str) -> None:
    path = shared_data / "tcga" / "porpoise" / f"tcga_{cohort}_all_clean.csv.zip"
    raw = pd.read_csv(path, low_memory=False)
    table = read_mcat_table(path)
    simulate_bags(table.genomics, table.patient_ids, table.slide_lists(), tmp_path / "bags",
                  n_patches=16, dim=8, seed=0)
    request = IngestRequest(
        tables=[table],
        gene_groups=[read_gene_groups(shared_data / "tcga" / "signatures" / "mcat_signatures.csv")],
        split_sets=[read_split_dir(shared_data / "tcga" / "splits" / f"tcga_{cohort}")],
        bag_dirs=[tmp_path / "bags"], k=2)
    with Store.open(tmp_path / "store") as store:
        report = ingest(store, request)
        assert report.new_patients == EXPECTED[cohort]
        assert report.new_slides == raw["slide_id"].nunique()
        patients = store.patients()
        per_patient = raw.drop_duplicates("case_id").set_index("case_id")
        assert len(patients) == EXPECTED[cohort] == len(per_patient)
        expected_censoring = per_patient["censorship"].mean()
        summary = store_summary(store).cohorts[0]
        assert summary.censoring_rate == pytest.approx(expected_censoring)
        multi = raw.groupby("case_id")["slide_id"].nunique()
        slides = store.slides().groupby("patient_id")["slide_id"].nunique()
        assert slides.reindex(multi.index).tolist() == multi.tolist()
        assert len(store.splits("mcat")) == 5
        assert not ingest(store, request).changed
