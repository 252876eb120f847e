"""Cold CLI benchmark (issue 13 target 1): the wall time of each command in a fresh process.

For ``--help``, ``info``, ``doctor``, ``versions`` and ``query --patient P`` on a demo store
(built with ``casegraph demo --patches 32 --dim 16 --epochs 2`` unless ``--store`` is given),
each command runs ``--repeat`` times in a new Python process (rounds interleave the
commands, so a burst of load from other jobs spreads over all of them); the median wall
time is reported. One more run per command under ``python -X importtime`` gives the import
breakdown: the total, the top-level modules with the largest cumulative import time, and
whether torch / torch-geometric were imported. Floors in the same run: ``python -c pass``,
``python -c "import torch"``, the libraries a query needs imported together, and
``import torch_geometric`` (what the query path no longer pays for).

Run: ``python -m benchmarks.cli_cold [--store DIR] [--patient ID] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import print_table, write_json

CLI = "from casegraph.cli import main; main()"
FLOORS = {"python -c pass": "pass", "import torch": "import torch",
          # every library a query --patient needs, nothing of casegraph
          "import torch+pandas+duckdb+faiss+h5py": "import torch, pandas, duckdb, faiss, h5py",
          "import torch_geometric": "import torch_geometric"}
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


@dataclass(frozen=True)
class Command:
    name: str
    code: str  # python -c code
    args: tuple[str, ...] = ()


def commands(store: Path, patient: str) -> list[Command]:
    s = ("--store", str(store))
    return [Command("--help", CLI, ("--help",)), Command("info", CLI, ("info", *s)),
            Command("doctor", CLI, ("doctor", *s)), Command("versions", CLI, ("versions", *s)),
            Command(f"query --patient {patient}", CLI, ("query", *s, "--patient", patient))]


def wall(command: Command, importtime: bool = False) -> tuple[float, str]:
    """(seconds, stderr) of one fresh process; fails loudly when the command fails."""
    argv = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", command.code,
            *command.args]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command.name} failed ({done.returncode}): "
                         f"{done.stderr.strip().splitlines()[-1:]}")
    return seconds, done.stderr


def import_breakdown(stderr: str, top: int = 10) -> dict[str, Any]:
    """Parse ``-X importtime`` output: total seconds, top-level modules by cumulative time,
    and which of the heavy libraries were imported at all."""
    rows = []  # (cumulative us, depth, module)
    for line in stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match:
            rows.append((int(match.group(2)), len(match.group(3)) // 2, match.group(4)))
    top_level = sorted((r for r in rows if r[1] == 0), reverse=True)
    names = {r[2] for r in rows}
    return {"total_s": round(sum(r[0] for r in top_level) / 1e6, 3),
            "top": [(module, round(us / 1e6, 3)) for us, _, module in top_level[:top]],
            "torch": "torch" in names, "torch_geometric": "torch_geometric" in names}


def build_demo(root: Path) -> Path:
    store = root / "demo"
    subprocess.run([sys.executable, "-c", CLI, "demo", "--patches", "32", "--dim", "16",
                    "--epochs", "2", "--store", str(store)], check=True, capture_output=True)
    return store


def first_patient(store: Path) -> str:
    from casegraph.ingest.store import Store

    with Store.open(store, create=False, read_only=True) as s:
        return str(sorted(s.patients()["patient_id"])[0])


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else "?"


def measure(cmds: list[Command], repeat: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {c.name: [] for c in cmds}
    for _ in range(repeat):
        for command in cmds:
            times[command.name].append(wall(command)[0])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--patient", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or build_demo(Path(tmp))
        patient = args.patient or first_patient(store)
        cli = commands(store, patient)
        floors = [Command(name, code) for name, code in FLOORS.items()]
        load_before = loadavg()
        times = measure(cli + floors, args.repeat)
        breakdown = {c.name: import_breakdown(wall(c, importtime=True)[1]) for c in cli}
        load_after = loadavg()
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    rows = [[name, f"{medians[name]:.2f}", " ".join(f"{t:.2f}" for t in times[name]),
             f"{breakdown[name]['total_s']:.2f}" if name in breakdown else "",
             ("torch" if breakdown[name]["torch"] else "no torch")
             + (" + torch_geometric" if breakdown[name]["torch_geometric"] else "")
             if name in breakdown else "floor"]
            for name in times]
    print(f"nproc {os.cpu_count()}; load average before {load_before}, after {load_after}")
    print_table(f"cold CLI, median of {args.repeat} fresh processes (s)",
                ["command", "median", "runs", "imports", "torch?"], rows)
    for name, info in breakdown.items():
        print_table(f"{name}: top-level imports by cumulative time (s), total "
                    f"{info['total_s']:.2f}", ["module", "s"], [list(t) for t in info["top"]])
    path = write_json("cli_cold", {
        "store": str(args.store) if args.store else "demo (--patches 32 --dim 16 --epochs 2)",
        "patient": patient, "repeat": args.repeat, "nproc": os.cpu_count(),
        "loadavg_before": load_before, "loadavg_after": load_after,
        "wall_s": times, "median_s": medians, "imports": breakdown})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
