"""A markdown table from ``fusion_synthetic.py`` JSON files: C-index mean ± sd per
configuration and cohort, with the paired fold difference to the better unimodal model.

    .venv/bin/python -m benchmarks.fusion_tables W=0:benchmarks/results/fusion_synthetic_s05.json \\
        W=0.5:benchmarks/results/fusion_synthetic_w05.json --configs snn,abmil-mean,ccl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.common import mean_sd, paired_delta

UNIMODAL = ("snn", "abmil-mean", "abmil")


def folds_by_config(path: Path) -> dict[str, list[float]]:
    rows = json.loads(path.read_text())["rows"]
    return {r["name"]: [float(c) for c in r["c_index_folds"]] for r in rows}


def column(results: dict[str, list[float]], configs: list[str]) -> list[str]:
    unimodal = {n: results[n] for n in UNIMODAL if n in results}
    best = max(unimodal, key=lambda n: np.mean(unimodal[n])) if unimodal else None
    cells = []
    for name in configs:
        values = results.get(name)
        if not values:
            cells.append("—")
            continue
        text = mean_sd(values)
        if best is not None and name not in UNIMODAL and len(values) == len(results[best]):
            text += "; " + paired_delta(np.array(values) - np.array(results[best]))
        elif name == best:
            text = f"**{text}** (best unimodal)"
        cells.append(text)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohorts", nargs="+", help="LABEL:FILE[,FILE...] (files are merged)")
    parser.add_argument("--configs", default="snn,abmil-mean,late_fusion-mean,ccl,murrenet")
    args = parser.parse_args()
    configs = args.configs.split(",")
    labels, columns = [], []
    for spec in args.cohorts:
        label, _, files = spec.partition(":")
        merged: dict[str, list[float]] = {}
        for file in files.split(","):
            merged.update(folds_by_config(Path(file)))
        labels.append(label)
        columns.append(column(merged, configs))
    print("| configuration | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for i, name in enumerate(configs):
        print(f"| {name} | " + " | ".join(col[i] for col in columns) + " |")


if __name__ == "__main__":
    main()
