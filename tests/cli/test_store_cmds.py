"""The CLI end to end in a subprocess: ingest, info, doctor, errors as one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.ingest.helpers import write_bags, write_signatures, write_table


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from casegraph.cli import main; main()", *args],
                          capture_output=True, text=True)


def test_ingest_info_doctor(tmp_path: Path) -> None:
    table = write_table(tmp_path / "in")
    write_bags(tmp_path / "bags", ["P1-A", "P2-A"])
    store = str(tmp_path / "store")
    result = run_cli("ingest", "--store", store, "--table", str(table), "--cohort", "tiny",
                     "--signatures", str(write_signatures(tmp_path)), "--bags",
                     str(tmp_path / "bags"), "--k", "2")
    assert result.returncode == 0, result.stderr
    assert "3 new patients" in result.stdout
    again = run_cli("ingest", "--store", store, "--table", str(table), "--cohort", "tiny")
    assert "nothing to do" in again.stdout
    info = run_cli("info", "--store", store)
    assert info.returncode == 0 and "tiny" in info.stdout
    assert run_cli("doctor", "--store", store).returncode == 0
    (tmp_path / "bags" / "P2-A.h5").unlink()
    write_bags(tmp_path / "bags", ["P1-A"], seed=3)
    doctor = run_cli("doctor", "--store", store)
    assert doctor.returncode == 1
    assert "P2-A: feature file vanished" in doctor.stdout
    assert "P1-A: feature file changed" in doctor.stdout


def test_bad_input_is_one_readable_line(tmp_path: Path) -> None:
    table = write_table(tmp_path, ["P2,P2-A.svs,-3,1,55,BLCA,0,0,0,0"])
    result = run_cli("ingest", "--store", str(tmp_path / "s"), "--table", str(table))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "row 2" in lines[0] and "survival_months" in lines[0]
    assert "Traceback" not in result.stderr


def test_info_on_missing_store_says_what_to_do(tmp_path: Path) -> None:
    result = run_cli("info", "--store", str(tmp_path / "nope"))
    assert result.returncode == 1 and "casegraph ingest" in result.stderr


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("casegraph ")


def _splits(folder: Path, train: list[str], val: list[str]) -> Path:
    folder.mkdir(parents=True)
    rows = [f"{i},{t},{v}" for i, (t, v) in enumerate(zip(train, val, strict=True))]
    (folder / "splits_0.csv").write_text("\n".join([",train,val", *rows]) + "\n", encoding="utf-8")
    return folder


def test_split_folder_matching_no_patient_is_one_line_error(tmp_path: Path) -> None:
    table = write_table(tmp_path / "in")
    other = _splits(tmp_path / "splits" / "tcga_other[2]", ["TCGA-AA-0001", "TCGA-AA-0002"],
                    ["TCGA-AA-0003", "TCGA-AA-0004"])
    store = str(tmp_path / "store")
    result = run_cli("ingest", "--store", store, "--table", str(table), "--splits", str(other))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert str(other) in lines[0] and "none of the 4 patients" in lines[0]
    partial = _splits(tmp_path / "splits" / "tcga_tiny[1]", ["P1", "TCGA-AA-0001"], ["P2", "P3"])
    ok = run_cli("ingest", "--store", store, "--table", str(table), "--splits", str(partial))
    assert ok.returncode == 0, ok.stderr
    warning = [line for line in ok.stdout.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and str(partial) in warning[0]
    assert "1 of 4 patients are not in this batch's tables or the store" in warning[0]


def test_ingest_lines_say_this_batch_or_store_total(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    sig = str(write_signatures(tmp_path))
    first = write_table(tmp_path / "a", ["P1,P1-A.svs,10.5,0,60,BLCA,0.1,1.2,0,1"])
    assert run_cli("ingest", "--store", store, "--table", str(first), "--cohort", "tiny",
                   "--signatures", sig).returncode == 0
    write_bags(tmp_path / "bags", ["P2-A"])
    second = write_table(tmp_path / "b", ["P2,P2-A.svs,30.0,1,55,BLCA,-0.3,0.4,1,0"])
    result = run_cli("ingest", "--store", store, "--table", str(second), "--cohort", "tiny",
                     "--bags", str(tmp_path / "bags"), "--k", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "this batch: 1 new patients" in out and "0 of its tables' 1 slides without features" in out
    assert "store total: 2 patients, 2 slides, 1 slides without features" in out
    assert ("gene groups 'tiny': 3 unique genes with features: this batch's tables: 3, "
            "store total: 3 (100%)") in out
    info = run_cli("info", "--store", store)
    assert "3 of 3 unique genes with features in the store" in " ".join(info.stdout.split())


def test_doctor_fix_after_a_killed_ingest(tmp_path: Path) -> None:
    import os
    import signal

    from casegraph.faults import CRASH_ENV
    from casegraph.ingest.store import Store

    table = str(write_table(tmp_path / "in"))
    store = str(tmp_path / "store")
    write_bags(tmp_path / "bags", ["P1-A", "P2-A"])
    args = ("ingest", "--store", store, "--table", table, "--cohort", "tiny", "--bags",
            str(tmp_path / "bags"), "--k", "2")
    killed = subprocess.run([sys.executable, "-c", "from casegraph.cli import main; main()",
                             *args], capture_output=True, text=True,
                            env={**os.environ, CRASH_ENV: "ingest.in_transaction"})
    assert killed.returncode == -signal.SIGKILL
    doctor = run_cli("doctor", "--store", store)
    assert doctor.returncode == 1 and doctor.stdout.count("left by an interrupted ingest") == 2
    with Store.open(store, create=False):  # in use: --fix refuses and removes nothing
        busy = run_cli("doctor", "--store", store, "--fix")
    lines = busy.stderr.strip().splitlines()
    assert busy.returncode == 1 and len(lines) == 1 and "needs the store to itself" in lines[0]
    fixed = run_cli("doctor", "--store", store, "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert fixed.stdout.count("removed: ") == 2 and "removed 2 unreferenced file(s)" in fixed.stdout
    assert "no problems found" in fixed.stdout
    rerun = run_cli(*args)
    assert rerun.returncode == 0 and "removed" not in rerun.stdout
    assert run_cli("doctor", "--store", store).returncode == 0


def test_ingest_rerun_clears_its_leftovers(tmp_path: Path) -> None:
    import os

    from casegraph.faults import CRASH_ENV

    table = str(write_table(tmp_path / "in"))
    store = str(tmp_path / "store")
    args = ("ingest", "--store", store, "--table", table, "--cohort", "tiny")
    subprocess.run([sys.executable, "-c", "from casegraph.cli import main; main()", *args],
                   capture_output=True, env={**os.environ, CRASH_ENV: "ingest.in_transaction"})
    rerun = run_cli(*args)
    assert rerun.returncode == 0 and "3 new patients" in rerun.stdout
    assert rerun.stdout.count("(left by an interrupted ingest, referenced by nothing)") == 1
    assert run_cli("doctor", "--store", store).returncode == 0
