"""Table readers: good input parses; each kind of bad input is a clear InputError."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from casegraph.errors import InputError
from casegraph.ingest.signatures import read_gene_groups
from casegraph.ingest.splits import read_split_dir
from casegraph.ingest.tables import ColumnMapping, read_mcat_table, read_survpath
from tests.ingest.helpers import HEADER, ROWS, write_signatures, write_table

SURVPATH_LABELS = "case_id,slide_id,survival_months,censorship"


def _survpath_files(tmp_path: Path, rna_text: str, label_row: str = "P1,P1-A.svs,10.5,0",
                    header: str = SURVPATH_LABELS) -> tuple[Path, Path]:
    """A one-patient SurvPath labels file and an RNA matrix with ``rna_text``."""
    labels = write_table(tmp_path, [label_row], header=header, name="labels.csv")
    rna = tmp_path / "rna_clean.csv"
    rna.write_text(rna_text, encoding="utf-8")
    return labels, rna


def test_mcat_table_one_row_per_patient(tmp_path: Path) -> None:
    table = read_mcat_table(write_table(tmp_path), cohort="tiny")
    assert table.patient_ids == ["P1", "P2", "P3"]
    assert table.event.tolist() == [True, False, True]  # censorship 1 = censored
    assert table.slides == [("P1-A", "P1"), ("P1-B", "P1"), ("P2-A", "P2"), ("P3-A", "P3")]
    assert table.feature_modalities == ["rna", "rna", "cnv", "mut"]
    assert table.attributes[0] == {"age": 60, "oncotree_code": "BLCA"}
    np.testing.assert_allclose(table.genomics[2], [2.0, -1.0, -1, 0])


def test_zipped_table_and_cohort_name(tmp_path: Path) -> None:
    csv = write_table(tmp_path)
    zipped = tmp_path / "tcga_blca_all_clean.csv.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.write(csv, arcname="tcga_blca_all_clean.csv")
    assert read_mcat_table(zipped).cohort == "blca"


def test_generic_mapping_with_event_column(tmp_path: Path) -> None:
    path = write_table(tmp_path, ["a,a1,3,1", "b,b1,4,0"], header="pid,slide,os,death")
    table = read_mcat_table(path, "g", ColumnMapping(patient="pid", time="os", event="death",
                                                     censorship=None, slide="slide"))
    assert table.event.tolist() == [True, False]


def test_mapping_must_state_one_convention() -> None:
    with pytest.raises(InputError, match="exactly one"):
        ColumnMapping(event="e", censorship="c")


BAD_CASES = {
    "missing column": (HEADER.replace("censorship", "status"), ROWS, "missing required column"),
    "negative time": (HEADER, [ROWS[0], "P2,P2-A.svs,-3,1,55,BLCA,0,0,0,0"], "row 3"),
    "NaN time": (HEADER, [ROWS[0], "P2,P2-A.svs,,1,55,BLCA,0,0,0,0"], "missing value"),
    "inf time": (HEADER, [ROWS[0], "P2,P2-A.svs,inf,1,55,BLCA,0,0,0,0"], "finite"),
    "censorship not 0/1": (HEADER, ["P2,P2-A.svs,3,2,55,BLCA,0,0,0,0"], "must be 0 or 1"),
    "conflicting labels": (HEADER, [ROWS[0], "P1,P1-B.svs,11,0,60,BLCA,0.1,1.2,0,1"],
                           "conflicting survival time"),
    "conflicting genomics": (HEADER, [ROWS[0], "P1,P1-B.svs,10.5,0,60,BLCA,9,1.2,0,1"],
                             "different genomic values"),
    "NaN feature": (HEADER, ["P2,P2-A.svs,3,1,55,BLCA,nan,0,0,0"], "column 'TP53_rnaseq'"),
    "inf feature": (HEADER, ["P2,P2-A.svs,3,1,55,BLCA,0,inf,0,0"], "column 'EGFR_rnaseq'"),
    "text feature": (HEADER, ["P2,P2-A.svs,3,1,55,BLCA,0,high,0,0"], "not a number"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_tables_name_file_row_column(tmp_path: Path, case: str) -> None:
    header, rows, message = BAD_CASES[case]
    path = write_table(tmp_path, rows, header=header)
    with pytest.raises(InputError, match=message) as info:
        read_mcat_table(path, "tiny")
    assert str(path) in str(info.value)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_mcat_table(path)


def test_header_only(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no rows"):
        read_mcat_table(write_table(tmp_path, []))


def test_wrong_encoding(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes((HEADER + "\nP\xe9,s,1,0,1,X,0,0,0,0\n").encode("latin-1"))
    with pytest.raises(InputError, match="UTF-8"):
        read_mcat_table(path)


def test_corrupt_zip(tmp_path: Path) -> None:
    path = tmp_path / "tcga_x_all_clean.csv.zip"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match="cannot read"):
        read_mcat_table(path)


def test_survpath_labels_plus_rna(tmp_path: Path) -> None:
    labels = write_table(tmp_path, [r.split(",TP53")[0] for r in ROWS],
                         header="case_id,slide_id,survival_months,censorship,age,oncotree_code",
                         name="labels.csv")
    labels.write_text("\n".join([
        "case_id,slide_id,survival_months,censorship", "P1,P1-A.svs,10.5,0", "P2,P2-A.svs,30,1"]),
        encoding="utf-8")
    rna = tmp_path / "rna_clean.csv"
    rna.write_text(",TP53,EGFR\nP1,1.5,2.5\n", encoding="utf-8")
    table = read_survpath(labels, rna, "sp")
    assert table.feature_names == ["TP53_rnaseq", "EGFR_rnaseq"]
    assert np.isnan(table.genomics[1]).all()  # P2 has no RNA row: missing, not an error


def test_signatures_columns_and_matrix_agree(tmp_path: Path) -> None:
    columns = read_gene_groups(write_signatures(tmp_path))
    matrix_path = tmp_path / "tiny_comps.csv"
    matrix_path.write_text(",Tumor Suppressor Genes,Oncogenes\nTP53,1,0\nEGFR,0,1\nKRAS,0,1\n",
                           encoding="utf-8")
    matrix = read_gene_groups(matrix_path, group_set="tiny")
    assert columns.group_set == matrix.group_set == "tiny"
    assert {k: sorted(v) for k, v in columns.groups.items()} == \
        {k: sorted(v) for k, v in matrix.groups.items()}
    assert columns.coverage({"TP53"}) == {"Tumor Suppressor Genes": (1, 1), "Oncogenes": (0, 2)}


def test_split_dir_rejects_overlap(tmp_path: Path) -> None:
    (tmp_path / "splits_0.csv").write_text(",train,val\n0,P1,P1\n", encoding="utf-8")
    with pytest.raises(InputError, match="both train and val"):
        read_split_dir(tmp_path)


def test_split_dir_reads_folds(tmp_path: Path) -> None:
    (tmp_path / "splits_0.csv").write_text(",train,val\n0,P1,P3\n1,P2,\n", encoding="utf-8")
    (tmp_path / "splits_1.csv").write_text(",train,val\n0,P3,P1\n1,P2,\n", encoding="utf-8")
    split = read_split_dir(tmp_path)
    assert split.folds == {0: (["P1", "P2"], ["P3"]), 1: (["P2", "P3"], ["P1"])}


# Ids are kept exactly as given; one that cannot be is an error naming file, row and column.
SLIDE_ROW = "P1,{},10.5,0,60,BLCA,0.1,1.2,0,1"
BAD_SLIDE_IDS = {
    "folder": "dir/TCGA-X.svs",
    "nested folders": "a/b/c/TCGA-X.svs",
    "trailing slash": "TCGA-X/",
    "only a folder": "dir/.svs",
    "backslash": "dir\\TCGA-X.svs",
    "dot": ".",
    "dot-dot": "..",
    "only an extension": ".svs",
    "leading space": " TCGA-X.svs",
    "trailing space": "TCGA-X.svs ",
    "blank": "   ",
    "tab": "TCGA\tX.svs",
    "control char": "TCGA-\x01X",
    "5000 characters": "S" * 5000,
    "248 bytes": "S" * 248,
    "multi-byte over 247 bytes": "é" * 124,
}


@pytest.mark.parametrize("case", sorted(BAD_SLIDE_IDS))
def test_slide_id_that_cannot_be_kept_is_an_error(tmp_path: Path, case: str) -> None:
    path = write_table(tmp_path, [ROWS[2], SLIDE_ROW.format(BAD_SLIDE_IDS[case])])
    with pytest.raises(InputError) as info:
        read_mcat_table(path, "tiny")
    message = str(info.value)
    assert str(path) in message and "row 3" in message and "column 'slide_id'" in message
    assert "fix:" in message and len(message) < 400 and "\n" not in message.replace("\\n", "")


def test_longest_slide_id_that_fits_a_file_name_is_kept(tmp_path: Path) -> None:
    sid = "S" * 247  # the simulator's ".<id>.h5.tmp" is then 255 bytes
    table = read_mcat_table(write_table(tmp_path, [SLIDE_ROW.format(sid + ".svs")]), "tiny")
    assert table.slides == [(sid, "P1")]


def test_ten_slash_ids_are_never_collapsed(tmp_path: Path) -> None:
    """The audit's case: ten distinct ids, several sharing a basename or with none."""
    ids = [f"site{i % 2}/TCGA-{i // 2}.svs" for i in range(6)] + [f"batch{i}/" for i in range(4)]
    rows = [f"P{i},{sid},10,0,60,BLCA,0,0,0,0" for i, sid in enumerate(ids)]
    with pytest.raises(InputError, match=r"row 2, column 'slide_id': slide id 'site0/TCGA-0\.svs'"):
        read_mcat_table(write_table(tmp_path, rows), "tiny")


@pytest.mark.parametrize(("second", "message"), [
    ("P2,P1-A.svs,30.0,1,55,BLCA,-0.3,0.4,1,0", "listed for patient 'P1' .row 2. and for patient 'P2'"),
    ("P1,P1-A.tif,10.5,0,60,BLCA,0.1,1.2,0,1", "'P1-A.svs' .row 2. and 'P1-A.tif' name the same bag"),
    ("P1,P1-A,10.5,0,60,BLCA,0.1,1.2,0,1", "'P1-A.svs' .row 2. and 'P1-A' name the same bag"),
])
def test_two_slide_ids_for_one_bag_file_are_an_error(tmp_path: Path, second: str,
                                                     message: str) -> None:
    path = write_table(tmp_path, [ROWS[0], second])
    with pytest.raises(InputError, match=message) as info:
        read_mcat_table(path, "tiny")
    assert f"{path}, row 3, column 'slide_id'" in str(info.value)


def test_repeated_row_of_one_slide_is_one_slide(tmp_path: Path) -> None:
    table = read_mcat_table(write_table(tmp_path, [ROWS[0], ROWS[0], ROWS[2]]), "tiny")
    assert table.slides == [("P1-A", "P1"), ("P2-A", "P2")]


BAD_PATIENT_IDS = {"leading space": " P1", "trailing space": "P1 ", "blank": "  ",
                   "tab": "P\t1", "newline (quoted)": '"P\n1"', "control char": "P\x7f1",
                   "empty": ""}


@pytest.mark.parametrize("case", sorted(BAD_PATIENT_IDS))
def test_patient_id_that_cannot_be_kept_is_an_error(tmp_path: Path, case: str) -> None:
    row = f"{BAD_PATIENT_IDS[case]},P9-A.svs,10.5,0,60,BLCA,0.1,1.2,0,1"
    path = write_table(tmp_path, [ROWS[2], row])
    with pytest.raises(InputError, match=r"row 3, column 'case_id': patient id") as info:
        read_mcat_table(path, "tiny")
    assert str(path) in str(info.value) and "fix:" in str(info.value)


def test_ids_are_kept_exactly_as_given(tmp_path: Path) -> None:
    rows = ["001,007.svs,1,0,60,X,0,0,0,0",
            "1e5,TCGA-1.0,2,0,60,X,0,0,0,0", "P/3,p-3,3,0,60,X,0,0,0,0"]
    table = read_mcat_table(write_table(tmp_path, rows), "tiny")
    assert table.patient_ids == ["001", "1e5", "P/3"]  # a patient id is no file name
    assert table.slides == [("007", "001"), ("TCGA-1.0", "1e5"), ("p-3", "P/3")]


def test_split_and_rna_ids_are_checked_too(tmp_path: Path) -> None:
    (tmp_path / "splits_0.csv").write_text(",train,val\n0,001,P3 \n", encoding="utf-8")
    with pytest.raises(InputError, match=r"splits_0\.csv, row 2, column 'val': patient id 'P3 '"):
        read_split_dir(tmp_path)
    (tmp_path / "splits_0.csv").write_text(",train,val\n0,001,P3\n1,002,\n", encoding="utf-8")
    assert read_split_dir(tmp_path).folds == {0: (["001", "002"], ["P3"])}
    labels, rna = _survpath_files(tmp_path, ",TP53\nP1 ,1.5\n")
    with pytest.raises(InputError, match=r"rna_clean\.csv, row 2, column 'Unnamed: 0'.*spaces"):
        read_survpath(labels, rna, "sp")


# No value is changed on the way in: a numeric that is not finite or overflows the stored
# 32-bit float, and a repeated header (pandas would rename it x.1), are errors.
GENE_ROW = "P2,P2-A.svs,3,1,55,BLCA,0,{},0,0"
BAD_NUMBERS = ["1e308", "-1e308", "3.5e38", "1e39", "1e309", "-1e999", "inf", "-inf",
               "Infinity", "nan", "NaN", "NA", ""]


@pytest.mark.parametrize("value", BAD_NUMBERS)
def test_non_finite_or_overflowing_gene_value_is_an_error(tmp_path: Path, value: str) -> None:
    path = write_table(tmp_path, [ROWS[0], GENE_ROW.format(value)])
    with pytest.raises(InputError) as info:
        read_mcat_table(path, "tiny")
    assert f"{path}, row 3, column 'EGFR_rnaseq'" in str(info.value) and "fix:" in str(info.value)


@pytest.mark.parametrize("value", ["3.4e38", "-3.4e38", "1e-30", "0"])
def test_largest_float32_values_are_kept(tmp_path: Path, value: str) -> None:
    table = read_mcat_table(write_table(tmp_path, [GENE_ROW.format(value)]), "tiny")
    assert table.genomics[0, 1] == np.float32(float(value))
    assert np.isfinite(table.genomics).all()


@pytest.mark.parametrize("value", ["1e308", "1e309", "inf", "-1e999"])
def test_overflowing_rna_matrix_value_is_an_error(tmp_path: Path, value: str) -> None:
    labels, rna = _survpath_files(tmp_path, f",TP53,EGFR\nP1,1.5,{value}\n")
    with pytest.raises(InputError, match=r"rna_clean\.csv, row 2, column 'EGFR'"):
        read_survpath(labels, rna, "sp")


@pytest.mark.parametrize("value", ["1e309", "1e300", "inf", "nan"])
def test_non_finite_or_overflowing_time_is_an_error(tmp_path: Path, value: str) -> None:
    path = write_table(tmp_path, [f"P2,P2-A.svs,{value},1,55,BLCA,0,0,0,0"])
    with pytest.raises(InputError, match=r"row 2, column 'survival_months'"):
        read_mcat_table(path, "tiny")


@pytest.mark.parametrize("column", ["survival_months", "TP53_rnaseq", "KRAS_mut", "case_id",
                                    "slide_id", "age"])
def test_repeated_column_is_an_error(tmp_path: Path, column: str) -> None:
    header = HEADER + "," + column
    rows = [r + "," + r.split(",")[HEADER.split(",").index(column)] for r in ROWS]
    path = write_table(tmp_path, rows, header=header)
    position = HEADER.split(",").index(column) + 1
    with pytest.raises(InputError, match=rf"column {column!r} appears twice \(columns "
                                         rf"{position} and 11\)") as info:
        read_mcat_table(path, "tiny")
    assert f"{path}, row 1, column {column!r}" in str(info.value)


def test_repeated_column_in_zip_rna_signatures_and_splits(tmp_path: Path) -> None:
    csv = write_table(tmp_path, header=HEADER + ",TP53_cnv", rows=[r + ",0" for r in ROWS])
    zipped = tmp_path / "tcga_blca_all_clean.csv.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.write(csv, arcname="tcga_blca_all_clean.csv")
    with pytest.raises(InputError, match="'TP53_cnv' appears twice"):
        read_mcat_table(zipped)
    labels, rna = _survpath_files(tmp_path, ",TP53,TP53\nP1,1.5,2.5\n")
    with pytest.raises(InputError, match=r"rna_clean\.csv, row 1, column 'TP53': .*twice"):
        read_survpath(labels, rna, "sp")
    sig = tmp_path / "x_signatures.csv"
    sig.write_text("Oncogenes,Oncogenes\nEGFR,KRAS\n", encoding="utf-8")
    with pytest.raises(InputError, match="'Oncogenes' appears twice"):
        read_gene_groups(sig)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "splits_0.csv").write_text(",train,val,val\n0,P1,P2,P3\n",
                                                      encoding="utf-8")
    with pytest.raises(InputError, match="'val' appears twice"):
        read_split_dir(tmp_path / "splits")


def test_label_column_that_is_also_an_rna_gene_is_an_error(tmp_path: Path) -> None:
    labels, rna = _survpath_files(tmp_path, ",TP53\nP1,1.5\n", "P1,P1-A.svs,10.5,0,3",
                                  header=SURVPATH_LABELS + ",TP53_rnaseq")
    with pytest.raises(InputError, match=r"labels\.csv, row 1, column 'TP53_rnaseq'"):
        read_survpath(labels, rna, "sp")


def test_attribute_text_is_kept_as_given(tmp_path: Path) -> None:
    rows = ["P1,P1-A.svs,10.5,0,60,NaNa,0,0,0,0", "P2,P2-A.svs,10.5,0,,NaN-ish,0,0,0,0"]
    table = read_mcat_table(write_table(tmp_path, rows), "tiny")
    assert table.attributes == [{"age": 60.0, "oncotree_code": "NaNa"},
                                {"age": None, "oncotree_code": "NaN-ish"}]


def _not_regular(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "tcga_tiny_all_clean.csv"
    if kind == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "broken link":
        path.symlink_to(tmp_path / "gone.csv")
    elif kind == "FIFO":
        os.mkfifo(path)
    else:
        path.mkdir()
    return path


@pytest.mark.parametrize(("kind", "message"), [
    ("link to /dev/zero", "not a regular file but a character device .a link to /dev/zero."),
    ("broken link", "is a broken symbolic link"),
    ("FIFO", "not a regular file but a FIFO"),
    ("folder", "not a regular file but a folder")])
def test_table_that_is_not_a_regular_file_is_named(tmp_path: Path, kind: str,
                                                   message: str) -> None:
    path = _not_regular(tmp_path, kind)
    with pytest.raises(InputError, match=message) as info:
        read_mcat_table(path, "tiny")
    assert str(info.value).startswith(f"{path}: table file") and "fix:" in str(info.value)


def test_split_file_linked_to_dev_zero_is_named(tmp_path: Path) -> None:
    (tmp_path / "splits_0.csv").symlink_to("/dev/zero")
    with pytest.raises(InputError, match=r"splits_0\.csv: table file is not a regular file"):
        read_split_dir(tmp_path)


def test_missing_table_still_says_not_found(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="table file not found"):
        read_mcat_table(tmp_path / "nope.csv")


@pytest.mark.parametrize(("members", "message"), [
    (["a.csv", "b.csv"], r"the zip holds 2 files \(a\.csv, b\.csv\)"),
    (["t.csv", "__MACOSX/._t.csv"], r"holds 2 files \(t\.csv, __MACOSX/\._t\.csv\)"),
    (["dir/", "dir/t.csv"], r"holds 2 files \(dir/, dir/t\.csv\)"),
    ([f"{i}.csv" for i in range(5)], r"0\.csv, 1\.csv, 2\.csv, \.\.\. \(5 in all\)"),
    ([], r"holds 0 files \(none\)")])
def test_zip_not_holding_one_csv_is_named(tmp_path: Path, members: list[str],
                                          message: str) -> None:
    zipped = tmp_path / "tcga_x_all_clean.csv.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for name in members:
            z.writestr(name, "" if name.endswith("/") else "\n".join([HEADER, *ROWS]))
    with pytest.raises(InputError, match=message) as info:
        read_mcat_table(zipped)
    assert str(info.value).startswith(f"{zipped}: ") and "fix:" in str(info.value)
